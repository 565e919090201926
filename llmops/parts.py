"""Append-only stores of Parquet part files in a local folder or any fsspec URL (`gs://bucket/log`, `s3://...`).

The inference log and the feedback store are such stores: writers only ever add a new part (never rewrite one),
so any number of server replicas can write to the same location, each under its own part names, and readers see
whole parts only (a local part is written under a hidden temporary name and renamed; an object store's PUT is
atomic by itself).
"""

from __future__ import annotations

import os
import posixpath
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from llmops.errors import DataError

PART_SUFFIX = ".parquet"


def filesystem(location: str) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) for a folder path or URL."""
    from fsspec.core import url_to_fs

    try:
        fs, path = url_to_fs(location)
    except (ImportError, ValueError) as exc:  # e.g. gs:// without gcsfs installed
        raise DataError(f"cannot open {location}: {exc}") from exc
    if _is_local(fs):
        path = os.path.abspath(path)
    return fs, path


def _is_local(fs: Any) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def part_name(prefix: str, when: datetime | None = None) -> str:
    """`<prefix>-<UTC time>-<random>.parquet`: sorts by time, unique across replicas."""
    stamp = (when or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{prefix}-{stamp}-{uuid.uuid4().hex[:12]}{PART_SUFFIX}"


def write_part(location: str, table: pa.Table, prefix: str) -> str:
    """Add one part holding `table`; returns its path. Readers never see it half-written."""
    fs, root = filesystem(location)
    fs.makedirs(root, exist_ok=True)
    final = posixpath.join(root, part_name(prefix))
    if _is_local(fs):
        tmp = posixpath.join(root, f".{uuid.uuid4().hex}.tmp")
        try:
            pq.write_table(table, tmp, compression="zstd")
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    else:
        with fs.open(final, "wb") as handle:
            pq.write_table(table, handle, compression="zstd")
    return final


def list_parts(location: str) -> list[str]:
    """Every finished part under `location` (recursively), oldest name first; a missing folder holds none."""
    fs, root = filesystem(location)
    if not fs.exists(root):
        return []
    found = fs.find(root)
    return sorted(p for p in found if p.endswith(PART_SUFFIX) and not posixpath.basename(p).startswith("."))


def iter_part_tables(location: str) -> Iterator[tuple[str, pa.Table]]:
    fs, _root = filesystem(location)
    for path in list_parts(location):
        try:
            with fs.open(path, "rb") as handle:
                yield path, pq.read_table(handle)
        except (OSError, pa.ArrowInvalid) as exc:
            raise DataError(f"part {path} is not a readable Parquet file: {exc}") from exc


def read_store(location: str, schema: pa.Schema, required: tuple[str, ...], what: str) -> pa.Table:
    """All parts as one table in `schema`: a part lacking a required column, or holding a column with another
    type, is an error naming the part; optional columns a part predates are filled with nulls (schemas only
    ever gain fields)."""
    tables = []
    for path, table in iter_part_tables(location):
        missing = [name for name in required if name not in table.column_names]
        if missing:
            raise DataError(f"{what} part {path} lacks column(s): {', '.join(missing)}")
        columns = []
        for field in schema:
            if field.name in table.column_names:
                column = table.column(field.name)
                if not column.type.equals(field.type):
                    try:
                        column = column.cast(field.type)
                    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                        raise DataError(f"{what} part {path}: column {field.name} is {column.type}, expected "
                                        f"{field.type}") from exc
                columns.append(column)
            else:
                columns.append(pa.nulls(table.num_rows, field.type))
        tables.append(pa.Table.from_arrays(columns, schema=schema))
    if not tables:
        return schema.empty_table()
    return pa.concat_tables(tables)
