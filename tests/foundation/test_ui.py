"""The MLflow UI after the loop, in headless Chromium (tools/ui_check.py): runs named by what they are, the
compare view's Headline/ metrics first, the eval rows on the Datasets page. Skipped without a chromium binary
(CI installs Debian's; nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.ui_check import find_chromium, run_check

pytestmark = [pytest.mark.e2e, pytest.mark.ui, pytest.mark.timeout(1200)]


def test_the_mlflow_ui_shows_named_runs_headline_metrics_and_datasets(tmp_path: Path) -> None:
    pytest.importorskip("playwright")
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no chromium binary (apt-get install -y chromium)")
    report = run_check(tmp_path / "shots", chromium, tmp_path / "store")
    assert report.passed, "\n".join(report.lines())
    for name in ("runs", "compare", "datasets", "evaluation-runs"):
        assert Path(report.screenshots[name]).stat().st_size > 10_000, name
