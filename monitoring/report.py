"""What a person reads: the terminal table, the Markdown / HTML report, and the PNG plots (matplotlib, Agg)."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np

from monitoring.compare import Comparison
from monitoring.monitor import MonitorResult, VersionResult, WindowResult

HIST_FEATURES = ("question_chars", "question_tokens", "oov_rate", "non_letter_share", "script_share",
                 "common_word_share", "answer_chars", "citation_similarity")


def _pct(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.1%}"


def _ms(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.0f}"


def verdict(comparison: Comparison | None) -> str:
    if comparison is None:
        return "-"
    if comparison.status != "ok":
        return "not enough data"
    if not comparison.alarms:
        return "ok"
    names = ", ".join(f.name for f in comparison.alarms)
    return ("ALARM " if comparison.mode == "enforced" else "would alarm (dry-run) ") + names


def window_rows(version: VersionResult) -> list[list[str]]:
    rows = []
    for w in version.windows:
        m = w.metrics
        rows.append([str(w.window.index), w.window.start.strftime("%Y-%m-%d %H:%M"), str(int(m["requests"])),
                     f"{m['throughput_rps']:.2f}", _pct(m["error_rate"]), _ms(m["latency_p50_ms"]),
                     _ms(m["latency_p95_ms"]), _ms(m["latency_p99_ms"]), _pct(m["abstention_rate"]),
                     _pct(m["block_rate"]), _pct(m["hit_rate"]), verdict(w.skew), verdict(w.drift)])
    return rows


HEADER = ["window", "start (UTC)", "requests", "req/s", "errors", "p50 ms", "p95 ms", "p99 ms", "abstained", "blocked",
          "hit", "skew", "drift"]


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def version_heading(version: VersionResult) -> str:
    ref = version.skew_reference
    skew = f"skew vs {ref.kind} {ref.uri} (digest {ref.digest}, {len(ref.questions)} questions)" if ref else "no skew"
    return (f"{version.label}: {len(version.windows)} window(s); {skew}; drift vs {version.drift_reference}; "
            f"features fitted on {version.basis}; embedding {version.embedder}")


def terminal_report(result: MonitorResult) -> str:
    blocks = []
    for version in result.versions:
        lines = [version_heading(version), text_table(HEADER, window_rows(version))]
        for w, kind, comparison in version.alarms():
            for line in comparison.explanation():
                lines.append(f"  window {w.window.index} {kind}: {line}")
        lines += [f"  note: {n}" for n in version.notes]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _feature_table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    header = ["feature", "statistic", "p", "Holm p", "alarm", "change"]
    rows = []
    for f in comparison.features:
        rows.append([f.name + ("" if f.counted else " (not counted)"),
                     "-" if f.statistic is None else f"{f.statistic:.4g}",
                     "-" if f.p_value is None else f"{f.p_value:.3g}",
                     "-" if f.adjusted_p_value is None else f"{f.adjusted_p_value:.3g}",
                     "yes" if f.alarm else "", f.summary])
    return header, rows


def focus_window(version: VersionResult) -> WindowResult | None:
    """The window the histograms show: the latest alarming one, else the latest compared one."""
    alarming = [w for w, _, _ in version.alarms()]
    if alarming:
        return alarming[-1]
    compared = [w for w in version.windows if any(c.status == "ok" for _, c in w.comparisons())]
    return compared[-1] if compared else (version.windows[-1] if version.windows else None)


def markdown_report(result: MonitorResult, version: VersionResult, plots: list[str]) -> str:
    lines = [f"# Monitoring report: {version.label}", "", version_heading(version), "",
             f"Log `{result.log}`, windows of {result.window}, rule: mode {result.rules.mode}, alpha "
             f"{result.rules.alpha} (Holm across the counted features), at least {result.rules.min_rows} rows per side.",
             "", "## Windows", ""]
    lines += _md_table(HEADER, window_rows(version))
    alarms = version.alarms()
    lines += ["", "## Alarms", ""]
    if not alarms:
        lines.append("None.")
    for w, kind, comparison in alarms:
        lines.append(f"### Window {w.window.index} ({w.window.start:%Y-%m-%d %H:%M} UTC), {kind} vs "
                     f"{'the ' + version.skew_reference.kind + ' split' if kind == 'skew' and version.skew_reference else w.drift_against}")
        lines.append("")
        lines += [f"- {line}" for line in comparison.explanation(examples=result.rules.examples)]
        lines.append("")
    focus = focus_window(version)
    if focus is not None:
        for kind, comparison in focus.comparisons():
            if comparison.status != "ok":
                continue
            lines += ["", f"## Features, window {focus.window.index}, {kind}", ""]
            lines += _md_table(*_feature_table(comparison))
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    lines += [f"- note: {n}" for n in version.notes]
    return "\n".join(lines) + "\n"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def cell(value: str) -> str:
        return value.replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return out


def html_report(markdown: str) -> str:
    """The Markdown report as a self-contained HTML page (tables, headings, lists, images) for the MLflow UI."""
    body, table = [], []

    def flush_table() -> None:
        if not table:
            return
        rows = [r for r in table if not set(r.replace("|", "").strip()) <= {"-"}]
        cells = [[html.escape(c.strip().replace("\\|", "|")) for c in _split_row(r)] for r in rows]
        head = "".join(f"<th>{c}</th>" for c in cells[0])
        rest = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in cells[1:])
        body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rest}</tbody></table>")
        table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("![") and "](" in line:
            src = line[line.index("](") + 2:-1]
            body.append(f'<p><img src="{html.escape(src)}" style="max-width:100%"></p>')
        elif line.startswith("- "):
            body.append(f"<ul><li>{html.escape(line[2:])}</li></ul>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    flush_table()
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}")
    return f"<!doctype html><html><head><meta charset='utf-8'><style>{style}</style></head><body>{''.join(body)}" \
           "</body></html>\n"


def _split_row(row: str) -> list[str]:
    parts, current, escaped = [], "", False
    for ch in row.strip().strip("|"):
        if ch == "|" and not escaped:
            parts.append(current)
            current = ""
        else:
            current += ch
        escaped = ch == "\\"
    parts.append(current)
    return parts


def _figure(width: float, height: float) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def histograms(comparison: Comparison, title: str) -> Any:
    """Reference vs current distribution of each scalar feature (density histograms on shared bins)."""
    items = [f for f in comparison.features if f.samples is not None and f.name in HIST_FEATURES]
    cols = 3
    rows = max(1, math.ceil(len(items) / cols))
    fig = _figure(4.2 * cols, 3.0 * rows)
    for i, feature in enumerate(items):
        ax = fig.add_subplot(rows, cols, i + 1)
        ref, cur = feature.samples
        log_scale = feature.name in ("question_chars", "question_tokens", "answer_chars")
        pooled = np.concatenate([ref, cur])
        if log_scale:
            pooled = np.log10(1 + pooled)
            ref, cur = np.log10(1 + ref), np.log10(1 + cur)
        low, high = float(np.min(pooled)), float(np.max(pooled))
        bins = np.linspace(low, high if high > low else low + 1, 31)
        ax.hist(ref, bins=bins, density=True, alpha=0.55, label=f"reference (n={len(ref)})", color="#4C72B0")
        ax.hist(cur, bins=bins, density=True, alpha=0.55, label=f"current (n={len(cur)})", color="#DD8452")
        flag = " ALARM" if feature.alarm else ""
        ax.set_title(f"{feature.name}{flag}\np={feature.p_value:.2g}" if feature.p_value is not None else
                     feature.name, fontsize=9)
        ax.set_xlabel("log10(1 + value)" if log_scale else "value", fontsize=8)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def timeseries(version: VersionResult, alpha: float) -> Any:
    """Per window: requests and error rate, latency percentiles, answer rates, and the smallest Holm p-value."""
    windows = version.windows
    times = [w.window.start for w in windows]
    fig = _figure(10, 9)
    panels = fig.subplots(4, 1, sharex=True)
    metric = {k: [w.metrics.get(k, float("nan")) for w in windows] for k in windows[0].metrics} if windows else {}
    if windows:
        panels[0].plot(times, metric["requests"], marker="o", label="requests")
        twin = panels[0].twinx()
        twin.plot(times, metric["error_rate"], marker="x", color="#C44E52", label="error rate")
        panels[0].set_ylabel("requests")
        twin.set_ylabel("error rate")
        for q in (50, 95, 99):
            panels[1].plot(times, metric[f"latency_p{q}_ms"], marker="o", label=f"p{q}")
        panels[1].set_ylabel("latency ms")
        panels[1].legend(fontsize=7)
        for name in ("abstention_rate", "block_rate", "hit_rate"):
            panels[2].plot(times, metric[name], marker="o", label=name)
        panels[2].set_ylabel("share")
        panels[2].legend(fontsize=7)
        for kind in ("skew", "drift"):
            values = []
            for w in windows:
                comparison = w.skew if kind == "skew" else w.drift
                adjusted = [f.adjusted_p_value for f in comparison.features if f.adjusted_p_value is not None] \
                    if comparison and comparison.status == "ok" else []
                values.append(max(min(adjusted), 1e-12) if adjusted else float("nan"))
            panels[3].plot(times, values, marker="o", label=f"{kind}: smallest Holm p")
        panels[3].axhline(alpha, color="#C44E52", linestyle="--", label=f"alpha {alpha}")
        panels[3].set_yscale("log")
        panels[3].set_ylabel("p-value")
        panels[3].legend(fontsize=7)
    fig.suptitle(f"{version.label}: per window", fontsize=10)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def write_plots(version: VersionResult, alpha: float, folder: Path) -> list[str]:
    """PNG files under `folder/plots`; returns their paths relative to `folder`."""
    plots = folder / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    written = []
    if version.windows:
        timeseries(version, alpha).savefig(plots / "timeseries.png")
        written.append("plots/timeseries.png")
    focus = focus_window(version)
    if focus is not None:
        for kind, comparison in focus.comparisons():
            if comparison.status != "ok":
                continue
            name = f"plots/{kind}_histograms_window{focus.window.index}.png"
            histograms(comparison, f"{version.label}, window {focus.window.index}: {kind}, reference vs current") \
                .savefig(folder / name)
            written.append(name)
    return written
