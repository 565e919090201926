"""PNG plots of an evaluation: metric means as bars with bootstrap confidence intervals."""

from __future__ import annotations

import math
from typing import Any

from evaluation.stats import Interval


def metric_bars(summary: dict[str, Interval], title: str, confidence: float = 0.95) -> Any:
    """One horizontal bar per metric (mean) with its CI as an error bar; returns a matplotlib Figure."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    items = [(name, iv) for name, iv in summary.items() if iv.n and math.isfinite(iv.estimate)]
    fig = Figure(figsize=(7, 0.45 * max(len(items), 1) + 1.4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    if not items:
        ax.text(0.5, 0.5, "no scored rows", ha="center", va="center")
        ax.set_axis_off()
        return fig
    names = [name for name, _ in items]
    means = [iv.estimate for _, iv in items]
    errors = [[max(iv.estimate - iv.low, 0) for _, iv in items], [max(iv.high - iv.estimate, 0) for _, iv in items]]
    positions = range(len(items))
    ax.barh(positions, means, xerr=errors, capsize=4, color="#4C72B0", ecolor="#222222")
    ax.set_yticks(list(positions), names)
    ax.invert_yaxis()
    for pos, (_, iv) in zip(positions, items, strict=True):
        ax.annotate(f"{iv.estimate:.3g} [{iv.low:.3g}, {iv.high:.3g}]", (iv.high, pos), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=8)
    ax.set_title(f"{title} (mean, {confidence:.0%} bootstrap CI, n rows)", fontsize=10)
    ax.margins(x=0.35)
    fig.tight_layout()
    return fig
