"""Dataset files written by DuckDB `COPY` straight from the staging table: no row passes through Python.

- `<split>.jsonl`: one example per line with the keys `projects.datasets.REQUIRED_KEYS` needs (plus site, split,
  answer_id, tags, link) - the seeds' `input_text`/`output_text` format;
- `<split>_vertex.jsonl`: Vertex AI supervised tuning chat format,
  `{"contents": [{"role": "user", "parts": [{"text": ...}]}, {"role": "model", "parts": [{"text": ...}]}]}`;
- `<split>.parquet` (zstd) for large datasets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from projects.data.clean import EXAMPLE_COLUMNS
from projects.data.digest import combine

VERTEX_SUFFIX = "_vertex.jsonl"


def _path(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def streamed_digest(con: Any, table: str, batch_rows: int = 100_000) -> str:
    """`transform.dataset_digest` of a staging table, reading only (id, row_hash) in id order, batch by batch."""
    reader = con.sql(f"SELECT row_hash FROM {table} ORDER BY id").to_arrow_reader(batch_rows)
    return combine(h for batch in reader for h in batch.column(0).to_pylist())


def write_split(con: Any, table: str, split: str, directory: Path, parquet: bool) -> dict[str, str]:
    """COPY one split in every format; returns {format: file name}."""
    columns = ", ".join(EXAMPLE_COLUMNS)
    # rows keep staging order (deterministic: batches are cleaned and inserted in query order)
    where = f"FROM {table} WHERE split = '{split}'"
    files = {"jsonl": f"{split}.jsonl", "vertex": f"{split}{VERTEX_SUFFIX}"}
    con.execute(f"COPY (SELECT {columns} {where}) TO {_path(directory / files['jsonl'])} (FORMAT JSON)")
    vertex = ("[{'role': 'user', 'parts': [{'text': input_text}]}, "
              "{'role': 'model', 'parts': [{'text': output_text}]}] AS contents")
    con.execute(f"COPY (SELECT {vertex} {where}) TO {_path(directory / files['vertex'])} (FORMAT JSON)")
    if parquet:
        files["parquet"] = f"{split}.parquet"
        con.execute(f"COPY (SELECT {columns} {where}) TO {_path(directory / files['parquet'])} "
                    "(FORMAT PARQUET, COMPRESSION ZSTD)")
    return files
