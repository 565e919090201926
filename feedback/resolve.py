"""Resolving a request id through the inference log to the exact versions that produced the answer.

The log is append-only Parquet parts (`llmops.records`): a part never changes once it exists, so each part's
request ids are read once (that column only) into an in-memory index, and a lookup reads the one part holding the
id. A request id not in the index makes the index look for new parts before it is refused, so feedback on an
answer written a moment ago resolves as soon as its part is on the store; inside the model server, `on_miss` first
makes the server's own log writer write what it holds, so it resolves at once. Shadow records (a challenger's copy the
client never saw) are not resolvable. Memory: about 100 bytes per logged request; at a scale where that matters,
the same lookup is a query over the parts (BigQuery / DuckDB over the bucket).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from llmops.errors import DataError
from llmops.parts import filesystem, list_parts

# What a feedback record takes from the answer's log record (provenance and the answer itself).
PROVENANCE_FIELDS = ("request_id", "status", "role", "model_name", "model_version", "model_alias", "prompt_name",
                     "prompt_version", "instruction_hash", "dataset_digest", "question", "answer", "abstained",
                     "safety_blocked", "trace_id", "time", "citations", "endpoint")


class InferenceLog:
    """request id -> its log record, over the parts at `location` (a folder or fsspec URL)."""

    def __init__(self, location: str, on_miss: Callable[[], object] | None = None) -> None:
        self.location = location
        self.on_miss = on_miss  # called before looking for new parts when an id is not in the index
        self._lock = threading.Lock()
        self._parts: list[str] = []
        self._seen: set[str] = set()
        self._where: dict[str, int] = {}

    def refresh(self) -> int:
        """Index the parts written since the last look; returns how many were new."""
        with self._lock:
            fs, _ = filesystem(self.location)
            new = [path for path in list_parts(self.location) if path not in self._seen]
            for path in new:
                try:
                    with fs.open(path, "rb") as handle:
                        table = pq.read_table(handle, columns=["request_id", "role"])
                except (OSError, ValueError) as exc:
                    raise DataError(f"inference-log part {path} is not readable: {exc}") from exc
                index = len(self._parts)
                self._parts.append(path)
                self._seen.add(path)
                for request_id, role in zip(table.column("request_id").to_pylist(), table.column("role").to_pylist(),
                                            strict=True):
                    if request_id and role != "shadow":
                        self._where[request_id] = index
            return len(new)

    def find(self, request_id: str) -> dict[str, Any] | None:
        """The record of `request_id` (fields in PROVENANCE_FIELDS), or None when the log has none."""
        if request_id not in self._where:
            if self.on_miss is not None:
                self.on_miss()
            self.refresh()
        index = self._where.get(request_id)
        if index is None:
            return None
        return self._read_row(self._parts[index], request_id)

    def _read_row(self, path: str, request_id: str) -> dict[str, Any] | None:
        fs, _ = filesystem(self.location)
        with fs.open(path, "rb") as handle:
            table = pq.read_table(handle)
        table = table.filter(pc.equal(table.column("request_id"), request_id))
        rows = [row for row in table.to_pylist() if row.get("role") != "shadow"]
        if not rows:
            return None
        row = rows[-1]
        return {name: row.get(name) for name in PROVENANCE_FIELDS}

    def __len__(self) -> int:
        return len(self._where)

