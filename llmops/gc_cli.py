"""`llmops gc`: mark runs of dead processes FAILED and remove orphan folders (see llmops/gc.py)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from llmops.cli_support import TrackingUri, echo, setting_option, start


DryRun = typer.Option(False, "--dry-run", help="Report what would be marked and removed; change nothing.")
OutputDir = setting_option("data.output_dir", "Dataset folder to clean.", "--output-dir")
ExtraPath = typer.Option(None, "--path", help="Another folder to clear of orphan .tmp folders (repeatable).")


def gc_command(
    dry_run: bool = DryRun,
    output_dir: Path = OutputDir,
    path: list[Path] = ExtraPath,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON (stdout holds nothing else)."),
    tracking_uri: str = TrackingUri,
) -> None:
    """Runs left RUNNING by a killed process become FAILED; orphan dataset and .tmp folders are removed."""
    from llmops.gc import collect_garbage

    # a store that does not exist has nothing to collect: a mistyped path is refused, not created
    settings = start("read", **{"mlflow.tracking_uri": tracking_uri,
                                "data.output_dir": output_dir and str(output_dir)})
    report = collect_garbage(settings, dry_run=dry_run, log=(lambda line: None) if as_json else echo,
                             extra_dirs=path or [])
    if as_json:
        echo(json.dumps({
            "dry_run": report.dry_run,
            "failed_runs": [{"run_id": r, "reason": why} for r, why in report.failed_runs],
            "kept_runs": [{"run_id": r, "reason": why} for r, why in report.kept_runs],
            "removed": [{"path": str(p), "bytes": n} for p, n in report.removed],
            "kept": [{"path": str(p), "reason": why} for p, why in report.kept]}, indent=2))
