"""Helpers shared by every component's CLI: flags -> settings, MLflow set-up, defaults shown in --help, warnings,
progress on stderr."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import typer

from llmops.errors import NotFoundError
from llmops.settings import Settings, load_settings, overrides_from_flags


def blank_to_none(value: Any) -> Any:
    """MLproject passes '' for a parameter left to the settings."""
    return None if value == "" else value


def settings_for(**dotted_flags: Any) -> Settings:
    """Load settings once, with CLI flags (dotted keys, None = unset) on top."""
    return load_settings(overrides_from_flags(**{k: blank_to_none(v) for k, v in dotted_flags.items()}))


def local_store_path(tracking_uri: str) -> Path | None:
    """The file or folder behind a local tracking URI (`sqlite:///x.db`, `file:///mlruns`, a bare path);
    None for servers and databases we cannot look at from here."""
    if tracking_uri.startswith("sqlite:///"):
        path = tracking_uri.removeprefix("sqlite:///").split("?", 1)[0]
        return None if path in ("", ":memory:") else Path(path)
    parts = urlsplit(tracking_uri)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if not parts.scheme or (len(parts.scheme) == 1 and os.name == "nt"):
        return Path(tracking_uri)
    return None


def check_store(settings: Settings, store: Literal["read", "write"]) -> None:
    """A mistyped local store path (`sqlite:///mlfow.db`) would silently become a new, empty store: commands that
    only read refuse it, commands that write say that they create it."""
    if os.environ.get("MLFLOW_RUN_ID"):  # inside `mlflow run`: the run (hence the store) exists
        return
    uri = settings.mlflow.tracking_uri
    path = local_store_path(uri)
    if path is None or path.exists():
        return
    if store == "read":
        raise NotFoundError(f"MLflow tracking store {uri} does not exist (check --tracking-uri / "
                            "MLFLOW_TRACKING_URI / mlflow.tracking_uri)")
    warn(f"creating a new MLflow tracking store at {path} (none there yet; check the path if you expected one)")


def start(store: Literal["read", "write"] = "write", **dotted_flags: Any) -> Settings:
    """Settings with the flags on top, the tracking store checked, MLflow pointed at it."""
    from llmops.tracking import configure_mlflow

    settings = settings_for(**dotted_flags)
    check_store(settings, store)
    configure_mlflow(settings)
    return settings


class SettingDefault(str):
    """`show_default` of a flag that overrides a setting: --help shows the setting's effective value (defaults <
    llmops.yaml < LLMOPS_* variables), read only when the help is rendered, never at import. Secrets in the value
    are masked."""

    key: str

    def __new__(cls, key: str) -> SettingDefault:
        obj = super().__new__(cls, key)
        obj.key = key
        return obj

    def resolve(self) -> str:
        """`data.limit = 1000000`; for a flag that sets one of several keys (by backend): each, comma-separated."""
        from llmops.secrets import mask_secrets

        try:
            settings = load_settings()
        except Exception:  # a broken config file must not break --help; the command itself names the problem
            return f"from {self.key}"
        shown_all = []
        for key in (k.strip() for k in self.key.split(",")):
            value: Any = settings
            for part in key.split("."):
                value = getattr(value, part)
            shown = mask_secrets(value.model_dump() if hasattr(value, "model_dump") else value, key.split(".")[-1])
            shown_all.append(f"{key} = {'none' if shown is None else shown}")
        return ", ".join(shown_all)

    def __str__(self) -> str:
        return self.resolve()

    def __format__(self, spec: str) -> str:
        return format(self.resolve(), spec)


def setting_option(key: str, help: str, *param_decls: str, **kwargs: Any) -> Any:
    """A flag that overrides setting `key` (or one of `a.b, c.d`, e.g. per backend); left unset (None) it takes
    the setting, shown in --help."""
    return typer.Option(None, *param_decls, help=help, show_default=SettingDefault(key), **kwargs)


TrackingUri = setting_option("mlflow.tracking_uri", "MLflow tracking URI.", "--tracking-uri")
Quiet = typer.Option(False, "--quiet", "-q", help="No progress display (it is off anyway when stderr is not a terminal).")


def echo(message: str) -> None:
    typer.echo(message)


def echo_err(message: str) -> None:
    """A progress or log line on stderr (with --json, stdout holds only the result)."""
    typer.echo(message, err=True)


def warn(message: str) -> None:
    """One `warning:` line on stderr: something the user should know that does not stop the command."""
    typer.echo(f"warning: {message}", err=True)


class RowProgress:
    """A `rich` progress bar on stderr for a step that streams rows; does nothing when disabled."""

    def __init__(self, description: str, enabled: bool) -> None:
        self._description = description
        self._enabled = enabled
        self._progress: Any = None
        self._task: Any = None

    def start(self, total: int | None) -> None:
        if not self._enabled or self._progress is not None:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TimeRemainingColumn(),
                                  console=Console(stderr=True), transient=True)
        self._progress.start()
        self._task = self._progress.add_task(self._description, total=total)

    def advance(self, rows: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, rows)

    def set(self, completed: float | None = None, description: str | None = None) -> None:
        """Absolute progress (e.g. epochs a remote job reports) and/or a new description (its state)."""
        if self._progress is not None:
            self._progress.update(self._task, **({"completed": completed} if completed is not None else {}),
                                  **({"description": description} if description else {}))

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def progress_enabled(quiet: bool) -> bool:
    """Progress goes to stderr, and only to a terminal: logs and pipes get the plain lines."""
    return not quiet and sys.stderr.isatty()


@contextlib.contextmanager
def row_progress(description: str, quiet: bool) -> Iterator[RowProgress]:
    progress = RowProgress(description, progress_enabled(quiet))
    try:
        yield progress
    finally:
        progress.stop()

