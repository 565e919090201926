"""Clean up after killed processes: runs left RUNNING by a dead owner, orphan dataset folders, `.tmp` folders.

`llmops gc` (and the start of `llmops pipeline run`) does three things and reports each:

* **runs**: every RUNNING run whose owner (`llmops.runowner` tags: host, pid, process start time) is a process
  on this host that no longer exists is marked FAILED, with `llmops.gc.reason` saying why. Runs owned on
  another host, or with no owner recorded, are left alone and counted.
* **dataset folders** in `data.output_dir` (`<created>-<digest>`, as the data step writes them) that no
  FINISHED run names in `llmops.dataset_dir` are removed when every run of this tracking store that logged
  their digest (param `dataset_digest`) failed or was just marked FAILED. A folder no run of this store
  wrote (another store sharing the folder, or a kill before the first param) and one whose writer is still
  running are kept and reported.
* **`.tmp` folders** left by `llmops.fsutil.atomic_path` (`.<name>.<host>-<pid>.<random>.tmp`) whose process is
  gone; an older one without an owner in its name only after `TMP_GRACE_S`.

`--dry-run` reports the same without changing anything.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from llmops.fsutil import host_tag
from llmops.runowner import liveness

DATASET_DIR = re.compile(r"^\d{8}T\d{6}Z-[0-9A-Za-z_.\-]+$")
TMP_DIR = re.compile(r"^\..+\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)\.[^.]+\.tmp$")
LEGACY_TMP = re.compile(r"^\..+\.tmp$")
TMP_GRACE_S = 24 * 3600


@dataclass
class GcReport:
    dry_run: bool
    failed_runs: list[tuple[str, str]] = field(default_factory=list)   # (run id, reason)
    kept_runs: list[tuple[str, str]] = field(default_factory=list)
    removed: list[tuple[Path, int]] = field(default_factory=list)      # (folder, bytes)
    kept: list[tuple[Path, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        verb = "would mark" if self.dry_run else "marked"
        gone = "would remove" if self.dry_run else "removed"
        out = [f"{verb} FAILED: run {run_id} ({why})" for run_id, why in self.failed_runs]
        out += [f"{gone} {path} ({_size(n)})" for path, n in self.removed]
        out += [f"kept {path}: {why}" for path, why in self.kept]
        if self.kept_runs:
            out.append(f"left {len(self.kept_runs)} RUNNING run(s) alone (owner alive or not decidable here)")
        total = sum(n for _, n in self.removed)
        out.append(f"gc: {len(self.failed_runs)} run(s) {verb.split()[-1] if self.dry_run else 'marked'} FAILED, "
                   f"{len(self.removed)} folder(s) {gone.split()[-1] if self.dry_run else 'removed'} "
                   f"({_size(total)})" + (" [dry run]" if self.dry_run else ""))
        return out


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _folder_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _running_runs(client) -> list:
    from mlflow.entities import ViewType

    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    runs = []
    for start in range(0, len(experiments), 100):
        runs += client.search_runs(experiments[start:start + 100], "attributes.status = 'RUNNING'",
                                   run_view_type=ViewType.ACTIVE_ONLY, max_results=10000)
    return runs


def _dataset_refs(client) -> set[str]:
    from mlflow.entities import ViewType

    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    names: set[str] = set()
    for start in range(0, len(experiments), 100):
        for run in client.search_runs(experiments[start:start + 100],
                                      "attributes.status = 'FINISHED' and tags.`llmops.dataset_dir` != ''",
                                      run_view_type=ViewType.ACTIVE_ONLY, max_results=50000):
            names.add(run.data.tags["llmops.dataset_dir"])
    return names


def collect(output_dir: Path, extra_dirs: Iterable[Path] = (), dry_run: bool = False,
            skip_run_ids: Iterable[str] = ()) -> GcReport:
    """Mark dead runs FAILED and remove orphans (see the module docstring); MLflow must be configured."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    report = GcReport(dry_run)
    skip = set(skip_run_ids)
    for run in _running_runs(client):
        if run.info.run_id in skip:
            continue
        state = liveness(run.data.tags)
        if state.state == "dead":
            report.failed_runs.append((run.info.run_id, state.reason))
            if not dry_run:
                client.set_tag(run.info.run_id, "llmops.gc.reason", state.reason)
                client.set_terminated(run.info.run_id, "FAILED")
            continue
        report.kept_runs.append((run.info.run_id, state.reason))
    output_dir = Path(output_dir)
    if output_dir.is_dir():
        referenced = _dataset_refs(client)
        failed_now = {run_id for run_id, _ in report.failed_runs}
        for entry in sorted(output_dir.iterdir()):
            if not (entry.is_dir() and DATASET_DIR.match(entry.name)) or entry.name in referenced:
                continue
            verdict = _writer_verdict(client, entry.name.split("-", 1)[1], failed_now)
            if verdict is None:
                _remove(entry, report)
            else:
                report.kept.append((entry, verdict))
    for folder in {output_dir, *map(Path, extra_dirs)}:
        _collect_tmp(folder, report)
    return report


def _writer_verdict(client, digest: str, failed_now: set[str]) -> str | None:
    """None when the folder's writers (runs of this store that logged its digest) all failed; else why not."""
    from mlflow.entities import ViewType

    safe = digest.replace("'", "")
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    writers = []
    for start in range(0, len(experiments), 100):
        writers += client.search_runs(experiments[start:start + 100], f"params.dataset_digest = '{safe}'",
                                      run_view_type=ViewType.ALL, max_results=1000)
    if not writers:
        return "no run of this tracking store wrote it (another store's, or killed before logging)"
    for run in writers:
        status = "FAILED" if run.info.run_id in failed_now else run.info.status
        if status == "RUNNING":
            return f"run {run.info.run_id} that writes it is still running ({liveness(run.data.tags).reason})"
        if status == "FINISHED":
            return f"run {run.info.run_id} finished with it"
    return None


def _collect_tmp(folder: Path, report: GcReport) -> None:
    if not folder.is_dir():
        return
    now = time.time()
    mine = host_tag()
    for entry in sorted(folder.iterdir()):
        match = TMP_DIR.match(entry.name)
        if match:
            if match["host"] != mine:
                report.kept.append((entry, "left by a process on another host"))
                continue
            pid = int(match["pid"])
            try:
                os.kill(pid, 0)
                continue  # its process is still writing
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
            _remove(entry, report)
        elif LEGACY_TMP.match(entry.name) and now - entry.stat().st_mtime > TMP_GRACE_S:
            _remove(entry, report)


def _remove(entry: Path, report: GcReport) -> None:
    size = _folder_bytes(entry)
    report.removed.append((entry, size))
    if not report.dry_run:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def collect_garbage(settings, dry_run: bool = False, log=print, extra_dirs: Iterable[Path] = ()) -> GcReport:
    """The cleanup with settings: `data.output_dir`; MLflow configured by the caller (`configure_mlflow`)."""
    import mlflow

    active = mlflow.active_run()
    report = collect(Path(settings.data.output_dir), extra_dirs, dry_run,
                     skip_run_ids=[active.info.run_id] if active else [])
    for line in report.lines():
        log(line)
    return report
