"""`llmops config show`: the effective settings (defaults < llmops.yaml < LLMOPS_* < flags), secrets masked."""

from __future__ import annotations

import json

import typer

from llmops.cli_support import echo, settings_for
from llmops.errors import ConfigError

config_app = typer.Typer(no_args_is_help=True)


def effective_settings(section: str | None = None, **dotted_flags: object) -> dict:
    """The settings as plain data with every secret masked (keys such as `password`, credentials in URLs)."""
    from llmops.secrets import mask_secrets

    dump = settings_for(**dotted_flags).model_dump(mode="json")
    if section is not None:
        if section not in dump:
            raise ConfigError(f"unknown settings section {section!r} (known: {', '.join(dump)})")
        dump = {section: dump[section]}
    return mask_secrets(dump)


@config_app.command("show")
def show_command(
    section: str = typer.Argument(None, help="Only this section, e.g. data or mlflow."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of YAML."),
) -> None:
    """Print the settings every command would use here, with api keys, passwords and URL credentials masked."""
    import os

    import yaml

    data = effective_settings(section)
    if as_json:
        echo(json.dumps(data, indent=2))
        return
    source = os.environ.get("LLMOPS_CONFIG") or "llmops.yaml"
    exists = os.path.exists(source)
    echo(f"# defaults < {source}{'' if exists else ' (absent)'} < LLMOPS_* environment < flags; secrets masked")
    echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip())
