"""Who owns a RUNNING run: host, pid and the process's start time, recorded on every run in one place.

A step killed with SIGKILL never ends its run: MLflow shows it RUNNING forever. To tell a live run from a dead
one later (`llmops gc`), each run carries its owner as tags:

* `OwnerContextProvider` is an MLflow run-context provider (entry point `mlflow.run_context_provider` in
  pyproject.toml): every `mlflow.start_run()` that creates a run, in any process with this package installed,
  gets the tags. Steps need not call anything.
* A step that *attaches* to a run someone else created (`mlflow run` passes `MLFLOW_RUN_ID` to the step's
  process) claims it: `llmops.tracking.configure_mlflow`, which every step calls first, calls `claim`.

The start time (from /proc, in clock ticks since boot, plus the boot time) tells a recycled pid from the
original process. Off Linux only the pid is checked.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking.context.abstract_context import RunContextProvider

HOST_TAG = "llmops.owner.host"
PID_TAG = "llmops.owner.pid"
STARTED_TAG = "llmops.owner.started"


def process_started(pid: int) -> str | None:
    """A stable identifier of when `pid` started ("<boot time>+<ticks>"); None when unknown or gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = stat.rsplit(")", 1)[1].split()[19]  # field 22 (starttime), counted after the command name
        boot = next(line.split()[1] for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
    except (OSError, IndexError, StopIteration):
        return None
    return f"{boot}+{ticks}"


def owner_tags(pid: int | None = None) -> dict[str, str]:
    pid = pid or os.getpid()
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(pid)}
    started = process_started(pid)
    if started:
        tags[STARTED_TAG] = started
    return tags


@dataclass(frozen=True)
class Liveness:
    state: str  # alive | dead | unknown
    reason: str


def liveness(tags: dict[str, str]) -> Liveness:
    """Is the process that owns a run (per its tags) still running? Only decidable on the owner's host."""
    host, pid = tags.get(HOST_TAG), tags.get(PID_TAG)
    if not host or not pid or not pid.isdigit():
        return Liveness("unknown", "no owner recorded")
    if host != socket.gethostname():
        return Liveness("unknown", f"owned by pid {pid} on another host ({host})")
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return Liveness("dead", f"owner pid {pid} on {host} is gone")
    except PermissionError:
        pass  # exists, another user's
    started = tags.get(STARTED_TAG)
    now = process_started(int(pid))
    if started and now and started != now:
        return Liveness("dead", f"owner pid {pid} on {host} is gone (the pid now belongs to another process)")
    return Liveness("alive", f"owner pid {pid} on {host} is running")


def claim(run_id: str) -> None:
    """Record this process as the owner of an existing run (a step attached through MLFLOW_RUN_ID)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    for key, value in owner_tags().items():
        client.set_tag(run_id, key, value)


class OwnerContextProvider(RunContextProvider):
    """MLflow calls this for every new run: the owner tags."""

    def in_context(self) -> bool:
        return True

    def tags(self) -> dict[str, str]:
        return owner_tags()
