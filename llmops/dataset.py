"""The dataset contract every step shares: the example schema, the reader, the one digest and its scope, lineage.

A dataset version is what one data-step run writes: split files (`train.jsonl`, `eval.jsonl`, optionally
`test.jsonl`) beside a `manifest.json` that names
- the **digest**: `dataset_digest(split_digests)`, a hash over the digests of the splits in its **scope**;
  a split's digest combines its examples' row hashes in id order, so it can be computed while streaming;
- the **lineage**: what produced it (query file and its hash, bind parameters, warehouse engine and tables,
  prompt name, split percentages) and the lineage **key** hashing those: versions of one lineage differ only by
  the data they read, so "the current dataset" is the newest version of the same lineage.

Every consumer (tuning, evaluation, registration) reads splits through `load_splits` / `identify_eval`, which
check the files against their manifest and record the same digest, scope and lineage key. A hand-made JSONL
without a manifest gets a digest of the splits that were read (scope recorded) and no lineage.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmops.errors import DataError, NotFoundError
from llmops.jsonl import json_records

SPLITS = ("train", "eval", "test")
MANIFEST_FILE = "manifest.json"
# Every example the data step writes has these keys (JSONL and Parquet); ints are BigQuery INT64.
EXAMPLE_COLUMNS = ("id", "question_id", "answer_id", "site", "question", "answer", "input_text", "output_text",
                   "tags", "link", "split", "prompt_name", "prompt_version", "instruction_hash")
INT_COLUMNS = frozenset({"question_id", "answer_id", "prompt_version"})
# What a consumer needs of a row (hand-made datasets may omit the rest).
REQUIRED_KEYS = ("id", "question_id", "question", "answer", "input_text", "output_text", "prompt_name",
                 "prompt_version", "instruction_hash")


# -- the digest ------------------------------------------------------------------------------------------------

def _text(value: Any) -> str:
    return "" if value is None else str(value)


def row_hash(example: Mapping[str, Any]) -> str:
    """sha256 of `key US value` pairs in key order, joined by RS: independent of JSON formatting and key order."""
    canonical = "\x1e".join(f"{key}\x1f{_text(example[key])}" for key in sorted(example))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def combine_lines(chunks: Iterable[str]) -> str:
    """A split digest from pre-joined `row_hash\\n` lines in id order: one update per chunk, however many rows."""
    hasher = hashlib.sha256()
    for chunk in chunks:
        hasher.update(chunk.encode("ascii"))
    return hasher.hexdigest()[:16]


def split_digest(examples: Iterable[Mapping[str, Any]]) -> str:
    """Digest of one split's examples, in id order (the order they are read in does not matter)."""
    ordered = sorted(examples, key=lambda e: str(e["id"]))
    return combine_lines(row_hash(e) + "\n" for e in ordered)


def dataset_digest(split_digests: Mapping[str, str]) -> str:
    """THE dataset digest: over the digests of the splits in scope (named in the hash, in SPLITS order)."""
    unknown = sorted(set(split_digests) - set(SPLITS))
    if unknown or not split_digests:
        raise DataError(f"a dataset digest needs splits among {', '.join(SPLITS)}, got {sorted(split_digests)}")
    lines = "".join(f"{name}={split_digests[name]}\n" for name in SPLITS if name in split_digests)
    return hashlib.sha256(lines.encode("ascii")).hexdigest()[:16]


def scope_of(split_digests: Mapping[str, str]) -> str:
    """How the scope is recorded: `train+eval+test`."""
    return "+".join(name for name in SPLITS if name in split_digests)


# -- lineage and manifest --------------------------------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Lineage(_Strict):
    """What produced a dataset version; two versions of one lineage differ only in the data they read."""

    query: str
    query_sha256: str
    params: dict[str, Any]
    engine: str
    tables: dict[str, str | list[str]]  # as configured (paths, globs): new files under a glob continue a lineage
    prompt_name: str
    eval_percent: int
    test_percent: int
    feedback: dict[str, Any] | None = None  # the feedback set folded in (digest, count, ids digest), when any

    @property
    def key(self) -> str:
        """The lineage key: everything but the feedback set (a version with feedback continues its lineage)."""
        payload = self.model_dump(exclude={"feedback"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


class SplitInfo(_Strict):
    digest: str
    rows: int
    file: str


class Manifest(_Strict):
    """`manifest.json` of a dataset version (the data step writes it; consumers check files against it)."""

    digest: str
    scope: str
    splits: dict[str, SplitInfo]
    lineage: Lineage
    lineage_key: str
    prompt_name: str
    prompt_version: int
    instruction_hash: str
    created: str
    previous_digest: str | None = Field(default=None, description="The version this one extends (feedback).")

    @classmethod
    def build(cls, split_infos: Mapping[str, SplitInfo], lineage: Lineage, prompt_name: str, prompt_version: int,
              instruction_hash: str, created: str, previous_digest: str | None = None) -> Manifest:
        digests = {name: info.digest for name, info in split_infos.items()}
        return cls(digest=dataset_digest(digests), scope=scope_of(digests), splits=dict(split_infos),
                   lineage=lineage, lineage_key=lineage.key, prompt_name=prompt_name,
                   prompt_version=int(prompt_version), instruction_hash=instruction_hash, created=created,
                   previous_digest=previous_digest)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


@dataclass(frozen=True)
class DatasetIdentity:
    """What every step records about the data it used: `dataset_digest`, `dataset_scope`, `dataset_lineage`."""

    digest: str
    scope: str
    lineage_key: str | None
    split_digests: dict[str, str]
    feedback_digest: str | None = None  # the feedback set folded into this version, when any
    previous_digest: str | None = None  # the version it extends with that feedback

    def as_params(self) -> dict[str, str]:
        return {"dataset_digest": self.digest, "dataset_scope": self.scope,
                "dataset_lineage": self.lineage_key or "none", "dataset_feedback": self.feedback_digest or "none",
                "dataset_previous": self.previous_digest or "none"}

    def as_tags(self) -> dict[str, str]:
        return {f"llmops.{k}": v for k, v in self.as_params().items()}


# -- reading ---------------------------------------------------------------------------------------------------

def _download(uri: str, directory: Path) -> Path:
    from llmops.tracking import download

    return download(uri, directory)


def read_examples(uri: str) -> list[dict[str, Any]]:
    """Load a JSONL split from a `runs:/`, `models:/` or local URI; a bad line is named in the error."""
    with tempfile.TemporaryDirectory() as tmp:
        path = _download(uri, Path(tmp))
        if path.is_dir():
            raise DataError(f"dataset {uri} is a directory, expected a JSONL file")
        rows = []
        with path.open(encoding="utf-8") as handle:
            for number, row in json_records(handle, f"dataset {uri}", DataError):
                missing = [k for k in REQUIRED_KEYS if k not in row]
                if missing:
                    raise DataError(f"dataset {uri} line {number} lacks key(s): {', '.join(missing)}")
                rows.append(row)
    if not rows:
        raise DataError(f"dataset {uri} holds no examples")
    return rows


def manifest_uri(split_uri: str) -> str:
    """The manifest beside a split file: `runs:/R/datasets/train.jsonl` -> `runs:/R/datasets/manifest.json`."""
    head, _, _name = split_uri.rstrip("/").rpartition("/")
    return f"{head}/{MANIFEST_FILE}" if head else MANIFEST_FILE


def read_manifest(split_uri: str) -> Manifest | None:
    """The split's manifest, or None when there is none (a hand-made dataset)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = _download(manifest_uri(split_uri), Path(tmp))
        except NotFoundError:
            return None
        if not path.is_file():
            return None
        text = path.read_text(encoding="utf-8")
    try:
        return Manifest.model_validate_json(text)
    except ValidationError as exc:
        raise DataError(f"{manifest_uri(split_uri)} is not a valid dataset manifest: "
                        f"{exc.errors()[0]['msg']}") from exc


def _check_against(manifest: Manifest, split: str, uri: str, rows: Sequence[Mapping[str, Any]]) -> str:
    info = manifest.splits.get(split)
    if info is None:
        raise DataError(f"{uri}: its manifest has no {split!r} split (has {', '.join(manifest.splits)})")
    digest = split_digest(rows)
    if digest != info.digest or len(rows) != info.rows:
        raise DataError(f"{uri} does not match its manifest ({len(rows)} rows, digest {digest}; manifest says "
                        f"{info.rows} rows, digest {info.digest}): the file was changed after it was written")
    return digest


def identify(splits: Mapping[str, tuple[str, Sequence[Mapping[str, Any]]]]) -> DatasetIdentity:
    """The identity of a dataset given some of its splits as {split: (uri, rows)}.

    With a manifest beside the files: each file is checked against it and the manifest's digest (all its splits,
    the test split included) and lineage are returned. Without one: the digest of the splits given.
    """
    first_uri = next(iter(splits.values()))[0]
    manifest = read_manifest(first_uri)
    if manifest is None:
        digests = {name: split_digest(rows) for name, (_uri, rows) in splits.items()}
        return DatasetIdentity(dataset_digest(digests), scope_of(digests), None, digests)
    for name, (uri, rows) in splits.items():
        if manifest_uri(uri) != manifest_uri(first_uri):
            other = read_manifest(uri)
            if other is None or other.digest != manifest.digest:
                raise DataError(f"{uri} and {first_uri} belong to different dataset versions")
        _check_against(manifest, name, uri, rows)
    feedback = (manifest.lineage.feedback or {}).get("digest")
    return DatasetIdentity(manifest.digest, manifest.scope, manifest.lineage_key,
                           {name: info.digest for name, info in manifest.splits.items()},
                           feedback_digest=feedback, previous_digest=manifest.previous_digest if feedback else None)


def manifest_for_files(split_files: Mapping[str, Path], created: str) -> Manifest:
    """A manifest for split files not written by the data step (a dataset brought from elsewhere), so tuning,
    evaluation and registration can tie them together. Their lineage is the files themselves."""
    paths = {name: Path(path).resolve() for name, path in split_files.items()}
    unknown = sorted(set(paths) - set(SPLITS))
    if unknown or "train" not in paths or "eval" not in paths:
        raise DataError(f"a dataset needs train and eval files (optionally test), got {sorted(paths)}")
    if len({path.parent for path in paths.values()}) != 1:
        raise DataError("the split files of one dataset must sit in one directory (beside their manifest)")
    rows = {name: read_examples(str(path)) for name, path in paths.items()}
    prompt_name, prompt_version, instruction_hash = prompt_of([r for part in rows.values() for r in part])
    infos = {name: SplitInfo(digest=split_digest(part), rows=len(part), file=paths[name].name)
             for name, part in rows.items()}
    lineage = Lineage(query="files", query_sha256="", params={}, engine="files",
                      tables={name: str(path) for name, path in paths.items()}, prompt_name=prompt_name,
                      eval_percent=0, test_percent=0)
    return Manifest.build(infos, lineage, prompt_name, prompt_version, instruction_hash, created)


def write_manifest(manifest: Manifest, directory: Path) -> Path:
    from llmops.fsutil import write_text_atomic

    target = Path(directory) / MANIFEST_FILE
    write_text_atomic(target, manifest.to_json())
    return target


def prompt_of(examples: list[dict[str, Any]]) -> tuple[str, int, str]:
    """(prompt name, version, instruction hash) the examples were built with; they must agree."""
    seen = {(e["prompt_name"], int(e["prompt_version"]), e["instruction_hash"]) for e in examples}
    if len(seen) != 1:
        raise DataError(f"dataset mixes {len(seen)} prompt versions: {sorted(seen)}")
    return seen.pop()
