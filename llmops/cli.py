"""The `llmops` command: one group per component; domain errors and usage errors become one line and an exit code
here, never a traceback.

typer >= 0.29 ships its own copy of click (`typer._click`): its usage errors are not `click.ClickException`s, so
they are caught here through the classes typer itself raises (found on `typer.BadParameter`'s bases, which are
click's own with older typers)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from llmops.errors import LlmopsError

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  help="LLMOps on MLflow: data, tuning, prompts, evaluation, registry, serving.")

USAGE_EXIT_CODE = 2


def _click_class(name: str) -> type[Exception]:
    """click's exception class `name` as typer raises it (its vendored click, or click itself)."""
    return next(cls for cls in typer.BadParameter.__mro__ if cls.__name__ == name)


ClickError = _click_class("ClickException")
UsageError = _click_class("UsageError")


def version_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    def of(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    return (f"llmops {of('llmops-mlflow')} (mlflow {of('mlflow')}, python "
            f"{'.'.join(map(str, sys.version_info[:3]))})")


def _show_version(value: bool) -> None:
    if value:
        typer.echo(version_text())
        raise typer.Exit()


@app.callback()
def _root(
    config: Annotated[Path | None, typer.Option("--config", help="YAML config file (default: ./llmops.yaml if present).")] = None,
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_show_version,
                                          help="Print the version and exit.")] = False,
) -> None:
    if config is not None:
        os.environ["LLMOPS_CONFIG"] = str(config)


def command_path(args: list[str]) -> str:
    """`llmops data prepare` for `data prepare --limit`: the deepest command the arguments name."""
    command = typer.main.get_command(app)
    words = ["llmops"]
    for arg in args:
        sub = getattr(command, "commands", {}).get(arg)
        if sub is None:
            break
        command, words = sub, [*words, arg]
    return " ".join(words)


def usage_line(exc: Exception, args: list[str]) -> str:
    """One line for a usage error: the problem, then where the help is (`llmops data prepare --help`)."""
    message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else command_path(args)
    return f"error: {message} (see '{command} --help')"


def _register_groups() -> None:
    from evaluation.cli import app as eval_app
    from feedback.cli import app as feedback_app
    from llmops.cli_config import config_app
    from monitoring.cli import app as monitor_app
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
    app.add_typer(config_app, name="config", help="The effective settings.")
    app.add_typer(monitor_app, name="monitor", help="Skew, drift and operational metrics over the inference log.")
    app.add_typer(server_app, name="server", help="The team tracking server (PostgreSQL + llmops-auth).")
    app.command("gc", help="Mark runs of killed processes FAILED; remove orphan dataset and .tmp folders.")(gc_command)
    app.add_typer(feedback_app, name="feedback", help="Human feedback on served answers: add, import, review, report.")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING)
    # llmops draws its own progress (rich, on a terminal only): libraries' tqdm bars (MLflow's evaluation harness)
    # would draw a second one, and fill logs with carriage returns. tqdm reads this once, when it is imported;
    # TQDM_DISABLE= (empty) brings them back.
    os.environ.setdefault("TQDM_DISABLE", "1")
    _register_groups()
    try:
        result = app(args=argv, standalone_mode=False, prog_name="llmops")
    except LlmopsError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except UsageError as exc:  # unknown command or flag, a missing or malformed value, extra arguments
        if type(exc).__name__ == "NoArgsIsHelpError":  # a group without its command: the help is the answer
            exc.show()  # type: ignore[attr-defined]
        else:
            typer.echo(usage_line(exc, list(sys.argv[1:] if argv is None else argv)), err=True)
        sys.exit(USAGE_EXIT_CODE)
    except ClickError as exc:  # e.g. a file argument that cannot be opened
        typer.echo(f"error: {' '.join(exc.format_message().split())}", err=True)  # type: ignore[attr-defined]
        sys.exit(exc.exit_code)  # type: ignore[attr-defined]
    except Exception as exc:
        mlflow_errors = sys.modules.get("mlflow.exceptions")  # imported only if a command used MLflow
        if mlflow_errors is None or not isinstance(exc, mlflow_errors.MlflowException):
            raise
        typer.echo(f"error: MLflow: {exc.message.splitlines()[0] if exc.message else exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
