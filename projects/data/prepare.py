"""The data step: query -> clean -> dedup -> template -> split -> versioned files, logged to MLflow.

Memory stays bounded at any size: the warehouse streams record batches, cleaning runs batch by batch on a pool
of threads or processes (a few batches in flight), each batch's examples land in a staging Parquet part file,
and every later stage (dedup, split counts, digest, report, files) is DuckDB SQL over those files under a
memory limit.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import duckdb
import pyarrow as pa

from llmops.errors import DataError
from llmops.fsutil import atomic_path
from llmops.settings import Settings
from projects.data.clean import (
    CleanOptions,
    clean_ipc_to_parquet,
    clean_to_parquet,
    to_ipc,
)
from llmops.dataset import EXAMPLE_COLUMNS, MANIFEST_FILE, Lineage, Manifest, SplitInfo, dataset_digest
from projects.data.formats import streamed_split_digest, write_split
from projects.data.report import build_report
from projects.data.split import SPLITS
from projects.data.stage import Staging
from projects.data.transform import check_columns
from projects.data.warehouse import Warehouse, load_query, query_params
from prompts.registry import PinnedPrompt

TRAIN_FILE = "train.jsonl"
EVAL_FILE = "eval.jsonl"
STATS_FILE = "stats.json"
REPORT_FILE = "validation_report.json"
ARTIFACT_DIR = "datasets"
FUNNEL_QUERY = "qa_funnel"
DUPLICATES_QUERY = "table_duplicates"
_SENTINEL = "\x00QUESTION\x00"


@dataclass
class Prepared:
    """A dataset version, staged in DuckDB and not yet written."""

    digest: str
    splits: dict[str, int]
    split_digests: dict[str, str]
    lineage: Lineage
    report: dict[str, Any]
    stats: dict[str, Any]
    prompt: PinnedPrompt
    con: Any = field(repr=False)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per phase, for the `time:` line
    feedback: Any = None  # projects.data.feedback.Fold when a feedback set was folded in


def time_line(seconds: dict[str, float]) -> str:
    """`time: funnel 0.2 s, query + clean 8.1 s, ...`: where the step's wall time went."""
    return "time: " + ", ".join(f"{phase} {value:.1f} s" for phase, value in seconds.items())


@dataclass(frozen=True)
class Outcome:
    digest: str
    splits: dict[str, int]
    uris: dict[str, str]
    directory: Path | None
    reused_from: str | None = None


def clean_options(settings: Settings, prompt: PinnedPrompt) -> CleanOptions:
    prep = settings.dataprep
    return CleanOptions(
        prep.default_site, prep.min_answer_chars, prep.max_question_chars, prep.max_answer_chars,
        tuple(_template_parts(prompt)), prompt.name, prompt.version, prompt.instruction_hash,
        settings.data.eval_percent, prep.test_percent,
    )


def check_writable(output_dir: Path) -> None:
    """Fail before any work (and any MLflow artifact) when the dataset could not be written."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DataError(f"output directory {output_dir} is not writable: {exc.strerror or exc}") from exc


AUTO_PROCESSES_FROM_CPUS = 4


def uses_processes(clean_in: str, cpus: int | None = None) -> bool:
    """`auto`: processes where they pay. On 2 CPUs two worker processes beat two threads by ~1.4x but add ~200 MB
    each to the step's ~750 MB; from 4 CPUs threads stop gaining (the GIL-held third of a row) while processes
    keep scaling."""
    if clean_in != "auto":
        return clean_in == "processes"
    return (cpus or os.cpu_count() or 1) >= AUTO_PROCESSES_FROM_CPUS


def _workers(setting: int, processes: bool) -> int:
    """0 = one per CPU; threads stop at 4, past which the GIL-held half of a row leaves nothing to gain and each
    extra thread only holds another batch in memory."""
    cpus = os.cpu_count() or 1
    return setting or (cpus if processes else min(cpus, 4))


def cleaned_batches(batches: Iterator[pa.RecordBatch], options: CleanOptions, staging: Staging, workers: int,
                    processes: bool = False) -> Iterator[tuple[int, dict[str, int], dict[str, int]]]:
    """Clean batches into staging part files; yields (examples kept, dropped, nulls) per batch, in query order.

    Threads share the process (the HTML converter and hashlib release the GIL, the rest of a row - about a third
    of its CPU - does not: at most ~2x, measured ~1.2x on 2 cores); processes (forkserver) scale with cores at
    ~230 MB each. Either way at most one batch per worker is in flight, so memory stays a few batches whatever
    the result size."""
    first = next(batches, None)
    if first is None:
        return
    check_columns(first.schema.names)
    workers = max(1, workers)
    if processes:
        import multiprocessing

        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))
        payload = asdict(options)

        def submit(index: int, batch: pa.RecordBatch) -> Future:
            return pool.submit(clean_ipc_to_parquet, (to_ipc(batch), payload, staging.part_path(index)))
    else:
        pool = ThreadPoolExecutor(workers, thread_name_prefix="llmops-clean")

        def submit(index: int, batch: pa.RecordBatch) -> Future:
            return pool.submit(clean_to_parquet, batch, options, staging.part_path(index))

    with pool:
        pending: list[Future] = []
        for index, batch in enumerate(itertools.chain([first], batches)):
            pending.append(submit(index, batch))
            while len(pending) > workers:
                yield pending.pop(0).result()
        while pending:
            yield pending.pop(0).result()


class Progress(Protocol):
    """Where the step reports rows as they stream (the CLI draws a bar); `start` gets the expected total."""

    def start(self, total: int | None) -> None: ...

    def advance(self, rows: int) -> None: ...


class _NoProgress:
    def start(self, total: int | None) -> None:
        pass

    def advance(self, rows: int) -> None:
        pass


# The funnel's filters in query order (its other columns check the tables: duplicate ids, undated answers).
FUNNEL_LABELS = {
    "questions": "questions", "with_accepted_answer_id": "with an accepted answer id",
    "accepted_answer_present": "accepted answer present", "tag_match": "tag matches",
    "answer_date_match": "answer date passes the cutoff", "question_window_match": "question date in the window",
}


def _funnel(warehouse: Warehouse, params: dict[str, Any]) -> dict[str, int] | None:
    """Counts per query filter (and the table checks); None when the engine cannot run it (a report, not a gate)."""
    try:
        rows = warehouse.query(load_query(FUNNEL_QUERY), params).to_pylist()
    except DataError:
        return None
    return {key: int(value or 0) for key, value in rows[0].items()} if rows else None


def funnel_line(funnel: dict[str, int] | None, params: dict[str, Any]) -> str:
    """`questions 2,921 -> with an accepted answer id 1,134 -> ... (answers without a date: 5, ...)`: where the
    rows were lost, for the error when nothing survives."""
    if not funnel:
        return "funnel not available"
    steps = " -> ".join(f"{label} {funnel[key]:,}" for key, label in FUNNEL_LABELS.items() if key in funnel)
    undated = funnel.get("answer_date_null")
    if undated and params.get("answer_date_cutoff") is not None:
        steps += f" (answers without a date: {undated:,}, kept only with --answer-date-cutoff none)"
    return steps


def duplicates(con: Any, warehouse: Warehouse, params: dict[str, Any]) -> dict[str, int]:
    """Rows of the query result that repeat a question id, and - only then, it costs a scan per table - the
    duplicate (site, id) rows of each table that explain them. {} when nothing repeats."""
    repeated = con.execute("SELECT count(*) - count(DISTINCT id) FROM clean").fetchall()[0][0]
    if not repeated:
        return {}
    found = {"repeated_question_ids": int(repeated)}
    try:
        rows = warehouse.query(load_query(DUPLICATES_QUERY), params).to_pylist()
    except DataError:  # a report, not a gate
        return found
    return {**found, **{table: int(count or 0) for table, count in rows[0].items()}} if rows else found


def duplicate_warnings(found: dict[str, int]) -> list[str]:
    """One line per table with duplicate ids; what the step did about them."""
    kept = "kept one example per question id (exact duplicates: the lowest id; otherwise the lowest answer id)"
    lines = [f"warehouse table {table} has {found[table]:,} row(s) whose (site, id) occurs more than once; {kept}"
             for table in ("posts_questions", "posts_answers") if found.get(table)]
    if found and not lines:
        lines = [f"{found['repeated_question_ids']:,} row(s) of the query result repeat a question id; {kept}"]
    return lines


def _template_parts(prompt: PinnedPrompt) -> list[str]:
    """The rendered template split around the question, so SQL can build input_text = p0 || q || p1 ..."""
    return prompt.format(question=_SENTINEL).split(_SENTINEL)


def prepare(settings: Settings, warehouse: Warehouse, prompt: PinnedPrompt, workdir: Path,
            log: Callable[[str], None] = lambda _: None, warn: Callable[[str], None] | None = None,
            progress: Progress | None = None) -> Prepared:
    """Query, clean and stage; raises DataError when nothing (or only one side of the split) survives."""
    staging = Staging(workdir, settings.dataprep.staging_memory_limit, settings.dataprep.duckdb_threads)
    try:
        return _prepare(settings, warehouse, prompt, staging, log, warn or (lambda m: log(f"warning: {m}")),
                        progress or _NoProgress())
    except BaseException:
        staging.close()
        raise


def _prepare(settings: Settings, warehouse: Warehouse, prompt: PinnedPrompt, staging: Staging,
             log: Callable[[str], None], warn: Callable[[str], None], progress: Progress) -> Prepared:
    data, prep = settings.data, settings.dataprep
    params = query_params(settings)
    started = time.perf_counter()
    funnel = _funnel(warehouse, params)
    seconds = {"funnel": time.perf_counter() - started}
    expected = funnel.get("question_window_match") if funnel else None
    progress.start(min(expected, data.limit) if expected is not None else None)
    rows_from_query, cleaned = 0, 0
    dropped: Counter[str] = Counter()
    nulls: Counter[str] = Counter()
    batches = warehouse.batches(load_query(data.query), params, prep.batch_rows)
    processes = uses_processes(prep.clean_in)
    for kept, batch_dropped, batch_nulls in cleaned_batches(batches, clean_options(settings, prompt), staging,
                                                            _workers(prep.workers, processes), processes):
        rows_from_query += kept + sum(batch_dropped.values())
        progress.advance(kept + sum(batch_dropped.values()))
        cleaned += kept
        dropped.update(batch_dropped)
        nulls.update(batch_nulls)
    seconds["query + clean"] = time.perf_counter() - started - seconds["funnel"]
    log(f"query returned {rows_from_query:,} row(s); {cleaned:,} after cleaning")
    if cleaned == 0:
        lost = f"dropped by cleaning: {dict(dropped)}; " if dropped else ""
        raise DataError(
            f"zero examples: the query returned {rows_from_query:,} row(s); {lost}funnel: "
            f"{funnel_line(funnel, params)}; check data.tag_pattern, data.answer_date_cutoff and the question "
            "date window"
        )
    con = staging.finish()
    splits = {split: 0 for split in SPLITS}
    splits.update(dict(con.execute("SELECT split, count(*) FROM examples GROUP BY split").fetchall()))
    if not prep.test_percent:
        splits.pop("test")
    after_exact = con.execute("SELECT count(*) FROM keep1").fetchall()[0][0]
    dropped["exact_duplicate"] = cleaned - after_exact
    dropped["duplicate_id"] = after_exact - sum(splits.values())  # same question id, different text: one kept
    fold = _fold_feedback(con, settings, prompt, list(splits), warn) if settings.feedback.include_in_dataset else None
    if fold is not None:
        splits = {split: 0 for split in splits}
        splits.update(dict(con.execute("SELECT split, count(*) FROM examples GROUP BY split").fetchall()))
        log(f"feedback set {fold.feedback.digest}: {fold.feedback.count} record(s) -> "
            + ", ".join(f"{n} {split}" for split, n in fold.report["examples"].items())
            + f" example(s) ({fold.report['superseded']} superseded, {fold.lineage['conflicts']} conflicting "
              f"question(s)) on top of {fold.previous_digest}")
    repeated = duplicates(con, warehouse, params)
    for message in duplicate_warnings(repeated):
        warn(message)
    if not splits["train"] or not splits["eval"]:
        raise DataError(f"split left an empty side (train={splits['train']}, eval={splits['eval']}); add data")
    split_digests = {split: streamed_split_digest(con, "examples", split) for split in splits}
    digest = dataset_digest(split_digests)
    report = build_report(con, "examples", funnel=funnel, rows_from_query=rows_from_query, cleaned=cleaned,
                          dropped=dict(sorted(dropped.items())), nulls=dict(sorted(nulls.items())), splits=splits,
                          duplicates=repeated)
    if fold is not None:
        report["feedback"] = fold.report
    stats = {
        "rows_from_query": rows_from_query, "examples": sum(splits.values()), **splits,
        "dropped": report["dropped"], "query": data.query, "params": params,
        "eval_percent": data.eval_percent, "test_percent": prep.test_percent,
    }
    lineage = lineage_of(settings, prompt)
    if fold is not None:
        stats["feedback"] = fold.lineage
        lineage = lineage.model_copy(update={"feedback": fold.lineage})
    seconds["dedup + digest + report"] = time.perf_counter() - started - sum(seconds.values())
    return Prepared(digest, splits, split_digests, lineage, report, stats, prompt, con, seconds, fold)


def _fold_feedback(con: Any, settings: Settings, prompt: PinnedPrompt, splits: list[str],
                   warn: Callable[[str], None]) -> Any:
    """`--include-feedback`: the data step's examples + the feedback set (projects.data.feedback)."""
    from projects.data.feedback import fold_feedback, read_feedback_set

    cfg = settings.feedback
    fset = read_feedback_set(cfg.store_uri, settings.model.registered_name)
    return fold_feedback(con, fset, clean_options(settings, prompt), splits, low_rating_max=cfg.low_rating_max,
                         good_rating_min=cfg.good_rating_min, source_priority=cfg.source_priority,
                         confirmed_to_eval=cfg.confirmed_to_eval, split_digest_of=streamed_split_digest, warn=warn)


def lineage_of(settings: Settings, prompt: PinnedPrompt) -> Lineage:
    """What this step reads and how: versions of one lineage differ only by the data in the tables."""
    import hashlib

    sql = load_query(settings.data.query)
    engine = settings.warehouse.engine
    tables = dict(settings.warehouse.tables) if engine == "duckdb" else {}
    return Lineage(query=settings.data.query, query_sha256=hashlib.sha256(sql.encode()).hexdigest()[:16],
                   params={k: v for k, v in query_params(settings).items()}, engine=engine, tables=tables,
                   prompt_name=prompt.name, eval_percent=settings.data.eval_percent,
                   test_percent=settings.dataprep.test_percent)


def write_dataset(prepared: Prepared, output_dir: Path, parquet_min_rows: int,
                  now: datetime | None = None) -> tuple[Path, dict[str, dict[str, str]]]:
    """Write `<created>-<digest>/` atomically: readers (and MLflow) never see a half-written version."""
    created = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    target = Path(output_dir) / f"{created}-{prepared.digest}"
    parquet = sum(prepared.splits.values()) >= parquet_min_rows
    try:
        with atomic_path(target) as tmp:
            tmp.mkdir()
            files = {split: write_split(prepared.con, "examples", split, tmp, parquet) for split in prepared.splits}
            manifest = Manifest.build(
                {split: SplitInfo(digest=prepared.split_digests[split], rows=prepared.splits[split],
                                  file=files[split]["jsonl"]) for split in prepared.splits},
                prepared.lineage, prepared.prompt.name, prepared.prompt.version, prepared.prompt.instruction_hash,
                created, previous_digest=prepared.feedback.previous_digest if prepared.feedback else None)
            (tmp / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
            if prepared.feedback is not None:
                from projects.data.feedback import PROVENANCE_FILE

                (tmp / PROVENANCE_FILE).write_text(prepared.feedback.provenance_jsonl(), encoding="utf-8")
            stats = {**prepared.stats, "digest": prepared.digest, "created": created, "files": files,
                     **prepared.prompt.as_config()}
            (tmp / STATS_FILE).write_text(json.dumps(stats, indent=2, default=str), encoding="utf-8")
            (tmp / REPORT_FILE).write_text(json.dumps(prepared.report, indent=2, default=str), encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot write dataset to {output_dir}: {exc.strerror or exc}") from exc
    except duckdb.Error as exc:
        raise DataError(f"cannot write dataset to {output_dir}: {str(exc).splitlines()[0]}") from exc
    return target, files


def previous_run(digest: str, lineage_key: str):
    """A FINISHED data-step run of this lineage that produced this digest and still has its files, or None."""
    import mlflow
    from mlflow.tracking import MlflowClient

    active = mlflow.active_run()
    client = MlflowClient()
    runs = client.search_runs(
        [active.info.experiment_id],
        filter_string=(f"tags.`llmops.dataset_digest` = '{digest}' and tags.`llmops.step` = 'prepare_data' "
                       f"and tags.`llmops.dataset_lineage` = '{lineage_key}' and attributes.status = 'FINISHED'"),
        order_by=["attributes.start_time DESC"], max_results=5,
    )
    for run in runs:
        if run.info.run_id != active.info.run_id and "llmops.train_uri" in run.data.tags:
            return run
    return None


def _log_common(prepared: Prepared, settings: Settings) -> None:
    import mlflow

    from llmops.tracking import present

    params = prepared.stats["params"]
    _log_params_over_blank_defaults({
        "dataset_digest": prepared.digest, "dataset_scope": "+".join(prepared.split_digests),
        "dataset_lineage": prepared.lineage.key, "prompt_name": prepared.prompt.name,
        "prompt_version": prepared.prompt.version, "instruction_hash": prepared.prompt.instruction_hash,
        "query": prepared.stats["query"], "engine": settings.warehouse.engine,
        "eval_percent": settings.data.eval_percent, "test_percent": settings.dataprep.test_percent,
        # an unset date bound is not logged (no '' cells); the cutoff turned off reads as the value that did it
        **present({f"query.{k}": v for k, v in params.items()}),
        **({"query.answer_date_cutoff": "none"} if params.get("answer_date_cutoff") is None else {}),
        **(_feedback_params(prepared.feedback) if prepared.feedback is not None else {}),
    })
    leakage = prepared.report["leakage"]["eval_questions_with_train_duplicate"]
    metrics = {f"n_{split}": n for split, n in prepared.splits.items()}
    metrics.update(n_rows_from_query=prepared.stats["rows_from_query"], n_examples=prepared.stats["examples"],
                   leakage_eval_questions=leakage,
                   near_duplicate_groups=prepared.report["near_duplicates"]["groups"])
    metrics.update({f"dropped_{reason}": n for reason, n in prepared.report["dropped"].items()})
    if prepared.feedback is not None:
        fb = prepared.feedback.report
        metrics.update(feedback_records=fb["count"], feedback_used=fb["used"], feedback_superseded=fb["superseded"],
                       feedback_conflicts=fb["counts"].get("conflicts", 0),
                       **{f"feedback_{split}": n for split, n in fb["examples"].items()})
    mlflow.log_metrics(metrics)


def _log_params_over_blank_defaults(values: dict[str, Any]) -> None:
    """`mlflow run . -e prepare_data` logs the entry point's parameters first, a value left to the settings as ''
    (e.g. `eval_percent`): keep that record instead of contradicting it (the resolved value is in the lineage)."""
    import mlflow

    logged = mlflow.get_run(mlflow.active_run().info.run_id).data.params
    mlflow.log_params({k: v for k, v in values.items() if logged.get(k) not in ("", "''")})


def _feedback_params(fold: Any) -> dict[str, Any]:
    return {"feedback_digest": fold.feedback.digest, "feedback_ids_digest": fold.feedback.ids_digest,
            "feedback_count": fold.feedback.count, "previous_digest": fold.previous_digest}


def _feedback_tags(fold: Any) -> dict[str, str]:
    if fold is None:
        return {}
    return {"llmops.feedback_digest": fold.feedback.digest, "llmops.previous_dataset_digest": fold.previous_digest}


def log_dataset(prepared: Prepared, settings: Settings, directory: Path,
                files: dict[str, dict[str, str]]) -> dict[str, str]:
    """Log files, stats and `mlflow.data` inputs on the active run; tags last, so consumers see all or nothing."""
    import mlflow

    from llmops.tracking import log_dataset_input

    run = mlflow.active_run()
    _log_common(prepared, settings)
    mlflow.log_artifacts(str(directory), ARTIFACT_DIR)
    uris = {split: f"runs:/{run.info.run_id}/{ARTIFACT_DIR}/{names['jsonl']}" for split, names in files.items()}
    types = {"question_id": "long", "answer_id": "long", "prompt_version": "long"}
    columns = {name: types.get(name, "string") for name in EXAMPLE_COLUMNS}
    for split, uri in uris.items():
        log_dataset_input(uri, f"so-qa-{split}", prepared.digest, columns,
                          {"train": "training", "eval": "evaluation"}.get(split, split))
    tags = {"llmops.step": "prepare_data", "llmops.dataset_digest": prepared.digest,
            "llmops.dataset_lineage": prepared.lineage.key, "llmops.dataset_dir": directory.name,
            **_feedback_tags(prepared.feedback)}
    tags.update({f"llmops.{split}_uri": uri for split, uri in uris.items()})
    tags.update({f"llmops.{split}_vertex_uri": f"runs:/{run.info.run_id}/{ARTIFACT_DIR}/{names['vertex']}"
                 for split, names in files.items()})
    mlflow.set_tags(tags)
    return uris


def log_reuse(prepared: Prepared, settings: Settings, previous) -> dict[str, str]:
    """Point this run at the earlier run's files: same digest, nothing new written."""
    import mlflow

    _log_common(prepared, settings)
    mlflow.log_dict(prepared.report, f"reports/{REPORT_FILE}")
    copied = {k: v for k, v in previous.data.tags.items()
              if k.startswith("llmops.") and (k.endswith("_uri") or k == "llmops.dataset_dir")}
    mlflow.set_tags({**copied, "llmops.step": "prepare_data", "llmops.dataset_digest": prepared.digest,
                     "llmops.dataset_lineage": prepared.lineage.key, "llmops.reused_from": previous.info.run_id,
                     **_feedback_tags(prepared.feedback)})
    return {k.removeprefix("llmops.").removesuffix("_uri"): v for k, v in copied.items()
            if k.endswith("_uri") and "_vertex" not in k}


def run_data_step(settings: Settings, warehouse: Warehouse, prompt: PinnedPrompt,
                  log: Callable[[str], None] = lambda _: None, warn: Callable[[str], None] | None = None,
                  progress: Progress | None = None) -> Outcome:
    """The whole step inside the active MLflow run; any error leaves no dataset directory behind."""
    output_dir = Path(settings.data.output_dir)
    check_writable(output_dir)
    workdir = Path(tempfile.mkdtemp(prefix="llmops-prep-"))
    prepared = None
    try:
        try:
            prepared = prepare(settings, warehouse, prompt, workdir, log, warn, progress)
        except duckdb.Error as exc:  # the staging database (disk full, memory limit): one line, run FAILED
            raise DataError(f"staging the dataset failed: {str(exc).splitlines()[0]}") from exc
        previous = previous_run(prepared.digest, prepared.lineage.key) if settings.dataprep.reuse_by_digest else None
        if previous is not None:
            log(f"dataset {prepared.digest} unchanged: reusing run {previous.info.run_id}")
            uris = log_reuse(prepared, settings, previous)
            return Outcome(prepared.digest, prepared.splits, uris, None, previous.info.run_id)
        started = time.perf_counter()
        directory, files = write_dataset(prepared, output_dir, settings.dataprep.parquet_min_rows)
        prepared.seconds["write files"] = time.perf_counter() - started
        try:
            uris = log_dataset(prepared, settings, directory, files)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)  # the run fails; leave no orphan version on disk
            raise
        prepared.seconds["log to MLflow"] = time.perf_counter() - started - prepared.seconds["write files"]
        log(time_line(prepared.seconds))
        return Outcome(prepared.digest, prepared.splits, uris, directory)
    finally:
        if prepared is not None:
            prepared.con.close()
        shutil.rmtree(workdir, ignore_errors=True)
