"""`llmops gc`: mark runs of dead processes FAILED and remove orphan folders (see llmops/gc.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from llmops.cli_support import TrackingUri, echo, start


DryRun = typer.Option(False, "--dry-run", help="Report what would be marked and removed; change nothing.")
OutputDir = typer.Option(None, "--output-dir", help="Dataset folder to clean (default: settings data.output_dir).")
ExtraPath = typer.Option(None, "--path", help="Another folder to clear of orphan .tmp folders (repeatable).")


def gc_command(
    dry_run: bool = DryRun,
    output_dir: Path = OutputDir,
    path: list[Path] = ExtraPath,
    tracking_uri: str = TrackingUri,
) -> None:
    """Runs left RUNNING by a killed process become FAILED; orphan dataset and .tmp folders are removed."""
    from llmops.gc import collect_garbage

    settings = start(**{"mlflow.tracking_uri": tracking_uri, "data.output_dir": output_dir and str(output_dir)})
    collect_garbage(settings, dry_run=dry_run, log=echo, extra_dirs=path or [])
