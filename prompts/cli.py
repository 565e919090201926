"""`llmops prompts`: sync template files to the Prompt Registry and show what is there."""

from __future__ import annotations

import json

import typer

from llmops.cli_support import TrackingUri, echo, setting_option, start
from llmops.errors import NotFoundError

app = typer.Typer(no_args_is_help=True)
Json = typer.Option(False, "--json", help="Print the result as JSON (stdout holds nothing else).")


def _json(payload: object) -> None:
    echo(json.dumps(payload, indent=2, default=str))


@app.command("sync")
def sync_command(
    name: str = typer.Option(None, help="Template name (default: every file in the templates directory)."),
    message: str = typer.Option(None, help="Commit message for new versions."),
    templates_dir: str = setting_option("prompt.templates_dir", "Folder of <name>.yaml prompt templates."),
    as_json: bool = Json,
    tracking_uri: str = TrackingUri,
) -> None:
    """Register each template whose content changed since the newest registry version."""
    from pathlib import Path

    from llmops.cli_support import settings_for
    from prompts.registry import sync_prompt
    from prompts.template import load_template, load_template_file

    flags = {"mlflow.tracking_uri": tracking_uri, "prompt.templates_dir": templates_dir}
    directory = Path(settings_for(**flags).prompt.templates_dir)
    if not directory.is_dir():  # checked before the store is touched: a typo must not create one
        raise NotFoundError(f"prompt templates folder not found: {directory} (prompt.templates_dir)")
    files = [directory / f"{name}.yaml"] if name else sorted(directory.glob("*.yaml"))
    if not files:
        raise NotFoundError(f"no prompt templates (*.yaml) in {directory}")
    if name and not files[0].is_file():
        known = ", ".join(sorted(p.stem for p in directory.glob("*.yaml"))) or "none"
        raise NotFoundError(f"prompt template {name!r} not found in {directory} (known: {known})")
    templates = [load_template(name, directory)] if name else [load_template_file(p) for p in files]
    start(**flags)
    synced = []
    for template in templates:  # all files parse before anything is registered
        pinned, created = sync_prompt(template, message)
        synced.append({"uri": pinned.uri, "created": created, "instruction_hash": pinned.instruction_hash})
        if not as_json:
            echo(f"{pinned.uri} {'created' if created else 'unchanged'} (instruction {pinned.instruction_hash})")
    if as_json:
        _json(synced)


@app.command("show")
def show_command(uri: str = typer.Argument(..., help="prompts:/NAME/VERSION or prompts:/NAME@ALIAS"),
                 as_json: bool = Json, tracking_uri: str = TrackingUri) -> None:
    """Print a registered prompt version's template."""
    from prompts.registry import load_pinned

    start("read", **{"mlflow.tracking_uri": tracking_uri})
    pinned = load_pinned(uri)
    if as_json:
        _json({"uri": pinned.uri, "name": pinned.name, "version": pinned.version,
               "instruction_hash": pinned.instruction_hash, "template": pinned.template})
        return
    echo(f"{pinned.uri} (instruction {pinned.instruction_hash})\n{pinned.template}")


@app.command("alias")
def alias_command(name: str = typer.Argument(..., help="Prompt name."),
                  version: int = typer.Argument(..., help="Version the alias should point to."),
                  alias: str = typer.Argument(..., help="Alias to set or move, e.g. production."),
                  as_json: bool = Json, tracking_uri: str = TrackingUri) -> None:
    """Point prompts:/NAME@ALIAS at VERSION (the chain picks it up via `chain.prompt_uri`)."""
    from prompts.registry import set_alias

    start("read", **{"mlflow.tracking_uri": tracking_uri})  # the prompt must exist: so must the store
    pinned = set_alias(name, version, alias)
    if as_json:
        _json({"alias": f"prompts:/{name}@{alias}", "uri": pinned.uri, "instruction_hash": pinned.instruction_hash})
        return
    echo(f"prompts:/{name}@{alias} -> {pinned.uri} (instruction {pinned.instruction_hash})")


@app.command("diff")
def diff_command(name: str = typer.Argument(..., help="Prompt name."),
                 v1: int = typer.Argument(..., help="Older version."),
                 v2: int = typer.Argument(..., help="Newer version."),
                 as_json: bool = Json, tracking_uri: str = TrackingUri) -> None:
    """Show a unified diff of two versions' templates and llmops tags."""
    from prompts.registry import diff_versions

    start("read", **{"mlflow.tracking_uri": tracking_uri})
    text = diff_versions(name, v1, v2)
    if as_json:
        _json({"name": name, "v1": v1, "v2": v2, "identical": not text, "diff": text})
        return
    echo(text or f"prompts:/{name}/{v1} and /{v2} are identical")
