"""On-disk cache of judge responses, keyed by (judge model, prompt, input): a rerun costs nothing and scores the same.

One small JSON file per key, written atomically, so concurrent judges and concurrent processes never see
half a file. Only parseable responses are stored (the judge decides); a bad response is asked again next time.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any


def cache_key(judge_model: str, prompt: str, payload: Any) -> str:
    blob = json.dumps([judge_model, prompt, payload], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class JudgeCache:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        try:
            text = json.loads(self._path(key).read_text(encoding="utf-8"))["response"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            with self._lock:
                self.misses += 1
            return None
        with self._lock:
            self.hits += 1
        return text

    def put(self, key: str, response: str, meta: dict[str, Any] | None = None) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"response": response, **(meta or {})}, handle, ensure_ascii=False)
        os.replace(tmp, path)
