"""Helpers shared by every component's CLI: flags -> settings, MLflow set-up, one-line errors."""

from __future__ import annotations

from typing import Any

import typer

from llmops.settings import Settings, load_settings, overrides_from_flags
from llmops.tracking import configure_mlflow


def blank_to_none(value: Any) -> Any:
    """MLproject passes '' for a parameter left to the settings."""
    return None if value == "" else value


def settings_for(**dotted_flags: Any) -> Settings:
    """Load settings once, with CLI flags (dotted keys, None = unset) on top."""
    return load_settings(overrides_from_flags(**{k: blank_to_none(v) for k, v in dotted_flags.items()}))


def start(**dotted_flags: Any) -> Settings:
    settings = settings_for(**dotted_flags)
    configure_mlflow(settings)
    return settings


TrackingUri = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default: settings).")


def echo(message: str) -> None:
    typer.echo(message)
