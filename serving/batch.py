"""`llmops serve batch`: answer a JSONL or Parquet file of questions in chunks, resumable, logged like the server.

The input is streamed (JSONL line by line, Parquet by record batch); every `chunk_rows` rows are answered and
committed as one part file in `OUTPUT.parts/` (written under a temporary name, then renamed). An interrupted run
(Ctrl-C, a kill, a provider outage) is resumed by running the same command again: committed chunks are skipped,
the version the run started with is kept (the manifest pins it, so one output never mixes versions), and a
different input or chunk size is refused unless `--restart` is given. When every chunk is done the parts are
joined into OUTPUT (.jsonl or .parquet) atomically and the parts folder is removed.

Each row also becomes one inference-log record (endpoint `batch`, request id `batch-<job>-<row>`), written before
its chunk is committed, as a log part named after the chunk, so a resumed chunk finds its records already there
and never writes them twice. A row whose question is bad (empty, too long) gets an `error` and status 400 and the
run goes on; a provider that fails (BackendError) stops the run, keeping what is committed.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llmops.errors import BackendError, ConfigError, DataError, InputError, NotFoundError

FORMATS = (".jsonl", ".parquet")
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class BatchSummary:
    output: str
    model_name: str
    model_version: str
    rows: int
    failed_rows: int
    chunks: int
    resumed_chunks: int
    seconds: float
    log_uri: str
    job_id: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        resumed = f", {self.resumed_chunks} chunk(s) kept from an earlier run" if self.resumed_chunks else ""
        failed = f", {self.failed_rows} row(s) refused (see their error field)" if self.failed_rows else ""
        return (f"wrote {self.rows} answer(s) of models:/{self.model_name}/{self.model_version} to {self.output} in "
                f"{self.chunks} chunk(s){resumed}{failed}; log: {self.log_uri}")


def _suffix(path: Path, what: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"{what} {path} must end in .jsonl or .parquet")
    return suffix


def check_paths(input_path: Path, output_path: Path) -> None:
    _suffix(input_path, "--input")
    _suffix(output_path, "--output")
    if input_path.resolve() == output_path.resolve():
        raise ConfigError(f"--output {output_path} is the input file")


def scan_input(path: Path) -> tuple[int, str]:
    """(rows, sha256 of the file): every line/row is checked for a string `question` before any model call."""
    if not path.is_file():
        raise NotFoundError(f"input file not found: {path}")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    rows = 0
    for _ in iter_questions(path):
        rows += 1
    if rows == 0:
        raise InputError(f"input file {path} holds no questions")
    return rows, digest.hexdigest()


def iter_questions(path: Path) -> Iterator[str]:
    """The `question` of each row, in order; a bad row is named (JSONL line number, Parquet column type)."""
    if path.suffix.lower() == ".jsonl":
        with path.open("r", encoding="utf-8") as handle:
            try:
                for number, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise InputError(f"{path} line {number} is not valid JSON: {exc.msg}") from exc
                    if not isinstance(record, dict) or not isinstance(record.get("question"), str):
                        raise InputError(f"{path} line {number} needs a string field 'question'")
                    yield record["question"]
            except UnicodeDecodeError as exc:
                raise InputError(f"input file {path} is not UTF-8") from exc
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(f"input file {path} is not a readable Parquet file: {exc}") from exc
    field = parquet.schema_arrow.field("question") if "question" in parquet.schema_arrow.names else None
    if field is None or not (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)):
        raise InputError(f"{path} needs a string column 'question'")
    for batch in parquet.iter_batches(columns=["question"], batch_size=4096):
        for value in batch.column(0).to_pylist():
            yield value if value is not None else ""


def _chunks(questions: Iterator[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for question in questions:
        chunk.append(question)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _open_job(work: Path, *, input_path: Path, input_sha: str, rows: int, chunk_rows: int, model_name: str,
              resolve: Callable[[], str], restart: bool) -> tuple[dict[str, Any], bool]:
    """(manifest, resumed): a new job, or the interrupted one in `work` if it was started on the same input."""
    manifest_path = work / MANIFEST
    if manifest_path.exists() and restart:
        shutil.rmtree(work)
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{manifest_path} is damaged; pass --restart to start over") from exc
        changed = [what for what, key, now in (("input", "input_sha256", input_sha), ("chunk size", "chunk_rows",
                                                                                      chunk_rows),
                                               ("model", "model_name", model_name))
                   if manifest.get(key) != now]
        if changed:
            raise ConfigError(f"{work} holds an interrupted run on another {' and '.join(changed)}; pass --restart "
                              "to discard it, or another --output")
        return manifest, True
    work.mkdir(parents=True, exist_ok=True)
    manifest = {"job_id": uuid.uuid4().hex[:12], "input": str(input_path), "input_sha256": input_sha, "rows": rows,
                "chunk_rows": chunk_rows, "model_name": model_name, "model_version": resolve(),
                "started": time.time()}
    tmp = work / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    tmp.replace(manifest_path)
    return manifest, False


def run_batch(settings: Any, model_uri: str, input_path: Path, output_path: Path, *, chunk_rows: int | None = None,
              restart: bool = False, progress: Any = None) -> BatchSummary:
    from llmops.parts import list_parts
    from llmops.records import write_inference_records
    from serving.inference_log import inference_record, redact_record, replica_id
    from serving.loader import (
        RefusedVersion,
        answer_questions,
        check_consistency,
        load_version,
        parse_model_uri,
        resolve_version,
    )

    check_paths(input_path, output_path)
    out_format = _suffix(output_path, "--output")
    chunk_rows = chunk_rows or settings.serving.batch_chunk_rows
    ref = parse_model_uri(model_uri)
    rows, input_sha = scan_input(input_path)
    work = output_path.with_name(output_path.name + ".parts")
    manifest, resumed = _open_job(work, input_path=input_path, input_sha=input_sha, rows=rows, chunk_rows=chunk_rows,
                                  model_name=ref.name, resolve=lambda: resolve_version(ref), restart=restart)
    job, version = manifest["job_id"], str(manifest["model_version"])
    try:
        loaded = load_version(ref.name, version, ref.alias)
        check_consistency(loaded)
    except RefusedVersion as exc:
        raise NotFoundError(str(exc)) from exc
    log_uri = settings.serving.log_uri
    logged = {posixpath.basename(p) for p in list_parts(log_uri)}
    replica = replica_id()
    workers = max(1, int(getattr(loaded.chain, "max_concurrency", 1))) if loaded.chain.provider != "retrieval" else 1
    started_all = time.perf_counter()
    failed = kept = 0
    n_chunks = -(-rows // chunk_rows)
    if progress is not None:
        progress.start(rows)

    def answer_row(item: tuple[int, str]) -> tuple[int, str, dict[str, Any] | None, str | None, int, float, float]:
        row, question = item
        started, t0 = time.time(), time.perf_counter()
        try:
            [answer] = answer_questions(loaded.chain, [question])
            return row, question, answer, None, 200, started, (time.perf_counter() - t0) * 1000
        except InputError as exc:
            return row, question, None, str(exc), 400, started, (time.perf_counter() - t0) * 1000

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for index, chunk in enumerate(_chunks(iter_questions(input_path), chunk_rows)):
            part = work / f"chunk-{index:06d}{out_format}"
            first_row = index * chunk_rows
            if part.exists():
                kept += 1
                failed += _failed_in(part, out_format)
                if progress is not None:
                    progress.advance(len(chunk))
                continue
            try:
                results = list(pool.map(answer_row, enumerate(chunk, first_row)))
            except BackendError as exc:
                raise BackendError(f"{exc}; {index} of {n_chunks} chunk(s) are committed in {work}: run the same "
                                   "command again to resume") from exc
            prefix = f"inference-batch-{job}-c{index:06d}"
            if not any(name.startswith(prefix + "-") for name in logged):
                records = [redact_record(inference_record(
                    request_id=f"batch-{job}-{row}", started=started, latency_ms=latency, status=status,
                    endpoint="batch", model=loaded, role="champion", question=question, answer=answer, error=error,
                    replica=replica)) for row, question, answer, error, status, started, latency in results]
                logged.add(posixpath.basename(write_inference_records(log_uri, records, prefix)))
            _write_chunk(part, results, out_format)
            failed += sum(1 for r in results if r[3] is not None)
            if progress is not None:
                progress.advance(len(chunk))
    _join(work, output_path, out_format, n_chunks)
    shutil.rmtree(work, ignore_errors=True)
    return BatchSummary(str(output_path), ref.name, version, rows, failed, n_chunks, kept,
                        round(time.perf_counter() - started_all, 2), log_uri, job)


def _output_rows(results: list[tuple]) -> list[dict[str, Any]]:
    out = []
    for row, _question, answer, error, _status, _started, _latency in results:
        out.append({"row": row, "error": error, **(answer or {})})
    return out


def _write_chunk(part: Path, results: list[tuple], out_format: str) -> None:
    tmp = part.with_name(f".{part.name}.tmp")
    rows = _output_rows(results)
    if out_format == ".jsonl":
        with tmp.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        flat = [{**{k: v for k, v in row.items() if k not in ("citations", "safety")},
                 "citations": json.dumps(row.get("citations")) if "citations" in row else None,
                 "safety": json.dumps(row.get("safety")) if "safety" in row else None} for row in rows]
        pq.write_table(pa.Table.from_pylist(flat, schema=_parquet_schema()), tmp, compression="zstd")
    tmp.replace(part)


def _parquet_schema():
    import pyarrow as pa

    return pa.schema([("row", pa.int64()), ("error", pa.string()), ("answer", pa.string()),
                      ("citations", pa.string()), ("abstained", pa.bool_()), ("safety", pa.string()),
                      ("model_name", pa.string()), ("model_version", pa.string()), ("prompt_name", pa.string()),
                      ("prompt_version", pa.int64()), ("instruction_hash", pa.string()), ("chain", pa.string()),
                      ("provider", pa.string()), ("model_id", pa.string())])


def _failed_in(part: Path, out_format: str) -> int:
    if out_format == ".jsonl":
        return sum(1 for line in part.read_text(encoding="utf-8").splitlines() if json.loads(line).get("error"))
    import pyarrow.parquet as pq

    return sum(1 for e in pq.read_table(part, columns=["error"]).column(0).to_pylist() if e)


def _join(work: Path, output: Path, out_format: str, n_chunks: int) -> None:
    parts = [work / f"chunk-{i:06d}{out_format}" for i in range(n_chunks)]
    missing = [p.name for p in parts if not p.exists()]
    if missing:  # pragma: no cover - every chunk was just committed
        raise DataError(f"{work} lacks {', '.join(missing[:3])}: run again to finish")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    if out_format == ".jsonl":
        with tmp.open("wb") as handle:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, handle)
    else:
        import pyarrow.parquet as pq

        with pq.ParquetWriter(tmp, _parquet_schema(), compression="zstd") as writer:
            for part in parts:
                writer.write_table(pq.read_table(part))
    tmp.replace(output)
