"""`llmops data`: the data preparation step and the Stack Exchange dump importer (thin over pure functions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from llmops.cli_support import (
    Quiet,
    SettingDefault,
    TrackingUri,
    echo,
    echo_err,
    row_progress,
    setting_option,
    start,
    warn,
)

data_app = typer.Typer(no_args_is_help=True)
Json = typer.Option(False, "--json", help="Print the result as JSON (stdout holds nothing else).")


def _json(payload: object) -> None:
    echo(json.dumps(payload, indent=2, default=str))


@data_app.command("prepare")
def prepare_command(
    tag_pattern: str = setting_option("data.tag_pattern", "Regex over the question's `a|b` tags ('.*' for all)."),
    answer_date_cutoff: str = setting_option(
        "data.answer_date_cutoff", "Keep accepted answers created on or after this date (YYYY-MM-DD); 'none' keeps "
        "every answer, undated ones included."),
    limit: str = setting_option("data.limit", "Maximum question/answer pairs."),
    eval_percent: str = setting_option("data.eval_percent", "Percent of questions in the eval split (1-99)."),
    test_percent: str = setting_option("dataprep.test_percent", "Percent of questions in an optional test split "
                                       "(0-50)."),
    question_date_from: str = setting_option("dataprep.question_date_from",
                                             "Keep questions created on or after (YYYY-MM-DD)."),
    question_date_to: str = setting_option("dataprep.question_date_to", "Keep questions created before (YYYY-MM-DD)."),
    output_dir: str = setting_option("data.output_dir", "Where dataset versions are written."),
    include_feedback: Annotated[bool | None, typer.Option(
        "--include-feedback/--no-include-feedback", show_default=SettingDefault("feedback.include_in_dataset"),
        help="Fold the feedback store into this version: corrections become training examples, confirmed answers "
             "eval cases, with provenance (docs/feedback.md).")] = None,
    include_feedback_param: Annotated[str | None, typer.Option(
        "--include-feedback-value", hidden=True, help="MLproject's spelling of --include-feedback: true, false "
                                                      "or '' (the setting).")] = None,
    feedback_store: str = setting_option("feedback.store_uri", "Feedback store (folder or fsspec URL).",
                                         "--feedback-store"),
    model_name: str = setting_option("model.registered_name", "Registered model whose feedback is folded in.",
                                     "--model-name"),
    as_json: bool = Json,
    tracking_uri: str = TrackingUri,
    quiet: bool = Quiet,
) -> None:
    """Query the warehouse, clean, apply the instruction template, split and log a versioned dataset."""
    import mlflow

    from llmops.tracking import name_run
    from projects.data.prepare import run_data_step
    from projects.data.warehouse import open_warehouse
    from prompts.registry import sync_prompt
    from prompts.template import load_template

    settings = start(**{
        "data.tag_pattern": tag_pattern, "data.answer_date_cutoff": answer_date_cutoff, "data.limit": limit,
        "data.eval_percent": eval_percent, "data.output_dir": output_dir,
        "dataprep.test_percent": test_percent, "dataprep.question_date_from": question_date_from,
        "dataprep.question_date_to": question_date_to, "mlflow.tracking_uri": tracking_uri,
        "feedback.include_in_dataset": include_feedback if include_feedback is not None else include_feedback_param,
        "feedback.store_uri": feedback_store, "model.registered_name": model_name,
    })
    template = load_template(settings.prompt.name, settings.prompt.templates_dir)
    warehouse = open_warehouse(settings)  # table/credential problems fail before any run exists
    with mlflow.start_run(run_name="prepare_data") as run, \
            row_progress("query + clean (rows)", quiet) as progress:
        prompt, _ = sync_prompt(template)
        outcome = run_data_step(settings, warehouse, prompt, log=echo_err if as_json else echo, warn=warn,
                                progress=progress)
        name_run(f"data {settings.data.tag_pattern} {'/'.join(str(n) for n in outcome.splits.values())} "
                 f"{outcome.digest[:8]}")
    if as_json:
        _json({"run_id": run.info.run_id, "digest": outcome.digest, "splits": outcome.splits, "uris": outcome.uris,
               "directory": str(outcome.directory) if outcome.directory else None,
               "reused_from": outcome.reused_from})
        return
    sizes = " / ".join(f"{n} {split}" for split, n in outcome.splits.items())
    where = f"reused run {outcome.reused_from}" if outcome.reused_from else str(outcome.directory)
    echo(f"dataset {outcome.digest}: {sizes} -> {where}")
    echo(f"train: {outcome.uris['train']}\neval: {outcome.uris['eval']}")


@data_app.command("manifest")
def manifest_command(
    train: Annotated[Path, typer.Option(help="Train split JSONL (the data step's example shape).")],
    eval: Annotated[Path, typer.Option("--eval", help="Eval split JSONL, in the same directory.")],
    test: Annotated[Path | None, typer.Option(help="Optional test split JSONL, in the same directory.")] = None,
    as_json: bool = Json,
) -> None:
    """Write manifest.json beside split files made elsewhere, so tuning, evaluation and registration record one
    dataset digest and lineage for them (the data step writes its own)."""
    from datetime import UTC, datetime

    from llmops.dataset import manifest_for_files, write_manifest

    files = {"train": train, "eval": eval, **({"test": test} if test else {})}
    manifest = manifest_for_files(files, datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"))
    path = write_manifest(manifest, train.resolve().parent)
    if as_json:
        _json({"digest": manifest.digest, "scope": manifest.scope, "lineage": manifest.lineage_key,
               "splits": {name: info.rows for name, info in manifest.splits.items()}, "path": str(path)})
        return
    sizes = " / ".join(f"{info.rows} {name}" for name, info in manifest.splits.items())
    echo(f"dataset {manifest.digest} ({manifest.scope}: {sizes}), lineage {manifest.lineage_key} -> {path}")


@data_app.command("import-dump")
def import_dump_command(
    posts_xml: Annotated[Path, typer.Argument(help="A Stack Exchange data-dump Posts.xml.")],
    site: Annotated[str, typer.Option(help="The site the dump is from, e.g. ai.stackexchange.com.")],
    out: Annotated[Path, typer.Option(help="Directory for posts_questions.parquet and posts_answers.parquet.")],
    as_json: bool = Json,
) -> None:
    """Stream Posts.xml into BigQuery-shaped Parquet tables (with a `site` column) for the DuckDB engine."""
    from projects.data.importer import import_posts

    result = import_posts(posts_xml, site, out)
    if as_json:
        _json({"questions": result.questions, "answers": result.answers, "skipped": result.skipped,
               "tables": {name: str(path) for name, path in result.tables.items()}})
        return
    echo(f"{result.questions:,} questions, {result.answers:,} answers ({result.skipped:,} other posts skipped)")
    echo("warehouse:\n  tables:")
    for name, path in result.tables.items():
        echo(f"    {name}: {path}")
