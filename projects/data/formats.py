"""Dataset files written by DuckDB `COPY` straight from the staging table: no row passes through Python.

- `<split>.jsonl`: one example per line with the keys `llmops.dataset.REQUIRED_KEYS` needs (plus site, split,
  answer_id, tags, link) - the seeds' `input_text`/`output_text` format;
- `<split>_vertex.jsonl`: Vertex AI supervised tuning chat format,
  `{"contents": [{"role": "user", "parts": [{"text": ...}]}, {"role": "model", "parts": [{"text": ...}]}]}`;
- `<split>.parquet` (zstd, 8,192-row groups) for large datasets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmops.dataset import EXAMPLE_COLUMNS, combine_lines

VERTEX_SUFFIX = "_vertex.jsonl"
PARQUET_ROW_GROUP_ROWS = 8_192


def _path(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def streamed_split_digest(con: Any, table: str, split: str, batch_rows: int = 100_000) -> str:
    """`llmops.dataset.split_digest` of one split of a staging table, reading only row hashes in id order."""
    reader = con.sql(f"SELECT row_hash || chr(10) FROM {table} WHERE split = $split ORDER BY id",
                     params={"split": split}).to_arrow_reader(batch_rows)
    return combine_lines("".join(batch.column(0).to_pylist()) for batch in reader)


def write_split(con: Any, table: str, split: str, directory: Path, parquet: bool) -> dict[str, str]:
    """COPY one split in every format; returns {format: file name}."""
    columns = ", ".join(EXAMPLE_COLUMNS)
    # row order is unspecified (as the query's); the digest, not the file bytes, identifies the version
    where = f"FROM {table} WHERE split = '{split}'"
    files = {"jsonl": f"{split}.jsonl", "vertex": f"{split}{VERTEX_SUFFIX}"}
    con.execute(f"COPY (SELECT {columns} {where}) TO {_path(directory / files['jsonl'])} (FORMAT JSON)")
    vertex = ("[{'role': 'user', 'parts': [{'text': input_text}]}, "
              "{'role': 'model', 'parts': [{'text': output_text}]}] AS contents")
    con.execute(f"COPY (SELECT {vertex} {where}) TO {_path(directory / files['vertex'])} (FORMAT JSON)")
    if parquet:
        files["parquet"] = f"{split}.parquet"
        # the writer buffers a whole row group: keep groups small so a staging memory limit of a few hundred
        # MB holds (DuckDB's default 122,880 rows of ~5 KB examples would need ~600 MB per thread)
        con.execute(f"COPY (SELECT {columns} {where}) TO {_path(directory / files['parquet'])} "
                    f"(FORMAT PARQUET, COMPRESSION ZSTD, ROW_GROUP_SIZE {PARQUET_ROW_GROUP_ROWS})")
    return files
