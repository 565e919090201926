"""The `llmops` command: one group per component; domain errors become one line and an exit code here."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import click
import typer
from mlflow.exceptions import MlflowException

from llmops.errors import LlmopsError

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  help="LLMOps on MLflow: data, tuning, prompts, evaluation, registry, serving.")


@app.callback()
def _root(
    config: Annotated[Path | None, typer.Option("--config", help="YAML config file (default: ./llmops.yaml if present).")] = None,
) -> None:
    if config is not None:
        os.environ["LLMOPS_CONFIG"] = str(config)


def _register_groups() -> None:
    from evaluation.cli import app as eval_app
    from llmops.gc_cli import gc_command
    from projects.cli import pipeline_app
    from projects.data.cli import data_app
    from projects.tuning.cli import tune_command
    from prompts.cli import app as prompts_app
    from registry.cli import app as registry_app
    from registry.server_cli import server_app
    from serving.cli import app as serve_app

    app.add_typer(data_app, name="data", help="Data preparation from the warehouse.")
    app.command("tune", help="Tune a model backend on a prepared dataset.")(tune_command)
    app.add_typer(prompts_app, name="prompts", help="Prompt templates and the Prompt Registry.")
    app.add_typer(eval_app, name="eval", help="Evaluation and quality gates.")
    app.add_typer(registry_app, name="registry", help="Registered model versions and aliases.")
    app.add_typer(serve_app, name="serve", help="Answer questions with a model loaded by alias.")
    app.add_typer(pipeline_app, name="pipeline", help="The whole loop as MLflow Project steps.")
    app.add_typer(server_app, name="server", help="The team tracking server (PostgreSQL + llmops-auth).")
    app.command("gc", help="Mark runs of killed processes FAILED; remove orphan dataset and .tmp folders.")(gc_command)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING)
    _register_groups()
    try:
        result = app(args=argv, standalone_mode=False, prog_name="llmops")
    except LlmopsError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except MlflowException as exc:
        typer.echo(f"error: MLflow: {exc.message.splitlines()[0] if exc.message else exc}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
