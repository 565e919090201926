"""Folding human feedback into the next dataset version (`llmops data prepare --include-feedback`).

The feedback set F is every record of the feedback store (`feedback.store_uri`, read through the core record schema
`llmops.records.read_feedback`) about the registered model `model.registered_name`. The new version is "the data
step's own examples + F": its manifest records the digest of the version without F (`previous_digest`) and F's
digest, size and ids digest (`lineage.feedback`); the lineage key ignores F, so the version continues its lineage.

What F becomes (docs/feedback.md states the same rules for readers):
1. The newest record per (request id, user) counts: a person who rates the same answer again changed their mind.
2. One example per question (its PII-redacted text, compared case-insensitively):
   - a question with corrections becomes a **correction** example answered with the winning correction. Conflicting
     corrections are decided by, in order: the source (`feedback.source_priority`, review first), the majority of
     identical texts (whitespace ignored), the newest. Each question with more than one distinct correction is
     counted (`conflicts`), as is every record overruled;
   - otherwise, an answer rated good (thumbs up, or >= `feedback.good_rating_min`) more often than low, neither
     abstained nor blocked, becomes a **confirmed** example answered with that answer.
   Low ratings without a correction add nothing here: they are the review queue (`llmops feedback review`).
3. Placement, by near-duplicate links (the split's title key across sites, the leakage report's body key, or the
   same text) to the data step's examples and between the feedback questions themselves (linked questions form one
   group, placed together):
   - a group linked to an eval (or test) example goes to that split: a question near-duplicate to an eval question
     never enters train;
   - else a group linked to a train example goes to train;
   - else (new questions) a group with a correction goes to train - where the correction teaches the model (the
     local retriever answers a question with the answer of its nearest train question) - and a group of confirmed
     answers goes to eval as new eval cases (`feedback.confirmed_to_eval`, else train).
   A feedback example whose question is the same text as a data-step example of the split it lands in replaces
   that example (`superseded`) and keeps its id, question id and link: "a corrected question keeps its split".
   Every other feedback example gets the id `feedback/<16 hex of the question key>` and question and answer ids
   from 2**62 up, which no Stack Exchange id reaches.
4. PII: question, answer and correction are redacted again (`llmops.pii.redact`) before they become examples.

Provenance - which feedback ids, request ids, users and model versions each example comes from, why it was placed
where it is, what it replaced and which records it overruled - is written beside the splits as
`feedback_examples.jsonl`, whose sha256 `lineage.feedback` records.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from llmops.dataset import dataset_digest, row_hash
from llmops.errors import DataError
from llmops.pii import redact_text
from llmops.records import FEEDBACK_SCHEMA, read_feedback
from llmops.secrets import mask_text
from projects.data.clean import CLEAN_SCHEMA, CleanOptions, body_key, normalise_whitespace, title_key

PROVENANCE_FILE = "feedback_examples.jsonl"
FEEDBACK_ID_BASE = 1 << 62
ID_PREFIX = "feedback/"
SPLIT_ORDER = ("eval", "test", "train")  # a group linked to several splits goes to the first


# -- the rating schema, as the data step reads it ---------------------------------------------------------------

def is_low(record: Mapping[str, Any], low_rating_max: int) -> bool:
    rating = float(record["rating"])
    return rating < 0.5 if record["rating_kind"] == "thumbs" else rating <= low_rating_max


def is_good(record: Mapping[str, Any], good_rating_min: int) -> bool:
    rating = float(record["rating"])
    return rating >= 0.5 if record["rating_kind"] == "thumbs" else rating >= good_rating_min


def normalise_text(text: str) -> str:
    """Compare texts ignoring whitespace runs and case."""
    return " ".join(text.split()).lower()


def question_key(question: str) -> str:
    return hashlib.sha1(normalise_text(question).encode("utf-8")).hexdigest()


# -- the feedback set ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FeedbackSet:
    """F: the records read, in feedback-id order, and what names them."""

    records: list[dict[str, Any]]
    digest: str       # over every record's content
    ids_digest: str   # over the feedback ids alone
    model_name: str
    store: str

    @property
    def count(self) -> int:
        return len(self.records)


def _canonical(record: Mapping[str, Any]) -> str:
    return "\x1e".join(f"{name}\x1f{'' if record.get(name) is None else record.get(name)}"
                       for name in FEEDBACK_SCHEMA.names)


def feedback_set(records: Iterable[Mapping[str, Any]], model_name: str, store: str) -> FeedbackSet:
    ordered = sorted((dict(r) for r in records if r.get("model_name") == model_name),
                     key=lambda r: str(r["feedback_id"]))
    content = hashlib.sha256("".join(_canonical(r) + "\n" for r in ordered).encode("utf-8")).hexdigest()[:16]
    ids = hashlib.sha256("".join(f"{r['feedback_id']}\n" for r in ordered).encode("utf-8")).hexdigest()[:16]
    return FeedbackSet(ordered, content, ids, model_name, mask_text(store))


def read_feedback_set(store_uri: str, model_name: str) -> FeedbackSet:
    """The store's records about `model_name`; a store location that does not exist is an error (a typo would
    otherwise fold nothing, silently)."""
    from llmops.parts import filesystem

    fs, root = filesystem(store_uri)
    if not fs.exists(root):
        raise DataError(f"feedback store {mask_text(store_uri)} does not exist (feedback.store_uri); nothing to "
                        "include")
    return feedback_set(read_feedback(store_uri).to_pylist(), model_name, store_uri)


def newest_per_user(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rule 1: the newest record per (request id, user); ties broken by feedback id. Anonymous records (no user)
    each count."""
    latest: dict[tuple[str, str], Mapping[str, Any]] = {}
    for record in sorted(records, key=lambda r: (r["time"], str(r["feedback_id"]))):
        user = record.get("user") or f"anonymous:{record['feedback_id']}"
        latest[(str(record["request_id"]), str(user))] = record
    return sorted((dict(r) for r in latest.values()), key=lambda r: str(r["feedback_id"]))


# -- rule 2: one example per question ---------------------------------------------------------------------------

@dataclass
class Candidate:
    """A question of F that becomes an example, with its provenance."""

    key: str
    question: str
    answer: str
    kind: str                                  # correction | confirmed
    support: list[dict[str, Any]]              # the records it follows
    overruled: list[str] = field(default_factory=list)
    decided_by: str | None = None              # source | majority | newest, when corrections conflicted
    title_key: str | None = None
    body_key: str | None = None

    @property
    def feedback_ids(self) -> list[str]:
        return sorted(str(r["feedback_id"]) for r in self.support)


@dataclass
class Resolution:
    candidates: list[Candidate]
    counts: dict[str, int]


def _newest(records: Sequence[Mapping[str, Any]]) -> Any:
    return max(r["time"] for r in records)


def _choose_correction(records: list[dict[str, Any]], priority: Sequence[str]) -> tuple[list[dict[str, Any]],
                                                                                      list[dict[str, Any]], str | None]:
    """(the winning group of identical corrections, the records overruled, what decided) - rule 2."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[normalise_text(record["corrected_answer"])].append(record)
    rank = {source: i for i, source in enumerate(priority)}

    def order(item: tuple[str, list[dict[str, Any]]]) -> tuple[Any, ...]:
        text, group = item
        best = min(rank.get(str(r.get("source")), len(rank)) for r in group)
        return (best, -len(group), -_newest(group).timestamp(), text)

    ranked = sorted(groups.items(), key=order)
    winner = ranked[0][1]
    overruled = [r for _, group in ranked[1:] for r in group]
    if len(ranked) == 1:
        return winner, overruled, None
    first, second = order(ranked[0]), order(ranked[1])
    decided = "source" if first[0] != second[0] else "majority" if first[1] != second[1] else "newest"
    return winner, overruled, decided


def resolve(records: Sequence[Mapping[str, Any]], *, low_rating_max: int, good_rating_min: int,
            source_priority: Sequence[str]) -> Resolution:
    """F's records -> one candidate example per question, with every count the rules produce (pure)."""
    counts: dict[str, int] = defaultdict(int)
    effective = newest_per_user(records)
    counts["records"] = len(records)
    counts["replaced_by_same_user"] = len(records) - len(effective)
    by_question: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in effective:
        question = redact_text(normalise_whitespace(record.get("question") or ""))
        if not question:
            counts["skipped_no_question"] += 1
            continue
        by_question[question_key(question)].append({**record, "question": question})
    candidates = []
    for key, group in sorted(by_question.items()):
        question = group[0]["question"]
        corrections = [r for r in group if (r.get("corrected_answer") or "").strip() and not r.get("safety_blocked")]
        if corrections:
            winner, overruled, decided = _choose_correction(corrections, source_priority)
            newest = max(winner, key=lambda r: (r["time"], str(r["feedback_id"])))
            answer = redact_text(normalise_whitespace(newest["corrected_answer"]))
            confirmations = [r for r in group if r not in corrections and is_good(r, good_rating_min)]
            counts["corrections"] += len(corrections)
            counts["confirmations_overridden_by_correction"] += len(confirmations)
            if decided:
                counts["conflicts"] += 1
                counts["overruled"] += len(overruled)
            candidates.append(Candidate(key, question, answer, "correction", winner,
                                        sorted(str(r["feedback_id"]) for r in overruled), decided))
            continue
        rated: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in group:
            if record.get("abstained") or record.get("safety_blocked") or not (record.get("answer") or "").strip():
                continue
            rated[normalise_text(record["answer"])].append(record)
        best: tuple[Any, ...] | None = None
        for answers in rated.values():
            good = [r for r in answers if is_good(r, good_rating_min)]
            low = [r for r in answers if is_low(r, low_rating_max)]
            if good and low:
                counts["confirmation_conflicts"] += 1
            if len(good) > len(low):
                score = (len(good) - len(low), _newest(good))
                if best is None or score > best[0]:
                    best = (score, good)
        counts["low_without_correction"] += sum(1 for r in group if is_low(r, low_rating_max))
        if best is None:
            continue
        good = best[1]
        newest = max(good, key=lambda r: (r["time"], str(r["feedback_id"])))
        counts["confirmations"] += len(good)
        candidates.append(Candidate(key, question, redact_text(normalise_whitespace(newest["answer"])), "confirmed",
                                    good))
    return Resolution(candidates, dict(counts))


# -- rule 3: placement, in the staging database -------------------------------------------------------------------

@dataclass(frozen=True)
class Link:
    candidate: int
    id: str
    split: str
    exact: bool
    site: str
    question_id: int
    link: str
    tags: str


LINKS_SQL = """
WITH b AS (
    SELECT id, split, site, question, question_id, link, tags, body_key,
           CASE WHEN group_key LIKE '%/t:%' THEN split_part(group_key, '/t:', 2) END AS tkey
    FROM examples
),
linked AS (
    SELECT k.idx, b.* FROM fb_keys k JOIN b ON b.tkey = k.title_key
    UNION ALL
    SELECT k.idx, b.* FROM fb_keys k JOIN b ON b.body_key = k.body_key
    UNION ALL
    SELECT k.idx, b.* FROM fb_keys k JOIN b ON b.body_key IS NULL AND lower(b.question) = k.qlower
)
SELECT DISTINCT l.idx, l.id, l.split, lower(l.question) = k.qlower AS exact, l.site, l.question_id, l.link, l.tags
FROM linked l JOIN fb_keys k USING (idx)
ORDER BY l.idx, l.id
"""


def links_to_examples(con: Any, candidates: Sequence[Candidate]) -> list[Link]:
    """Every data-step example each candidate is a near-duplicate of (or the same question as)."""
    keys = pa.table({
        "idx": pa.array(range(len(candidates)), pa.int64()),
        "title_key": pa.array([c.title_key for c in candidates], pa.string()),
        "body_key": pa.array([c.body_key for c in candidates], pa.string()),
        "qlower": pa.array([c.question.lower() for c in candidates], pa.string()),
    })
    con.register("fb_keys_arrow", keys)
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE fb_keys AS SELECT * FROM fb_keys_arrow")
    finally:
        con.unregister("fb_keys_arrow")
    return [Link(int(idx), str(id_), split, bool(exact), site, int(qid), link or "", tags or "")
            for idx, id_, split, exact, site, qid, link, tags in con.execute(LINKS_SQL).fetchall()]


def _groups(candidates: Sequence[Candidate], links: Sequence[Link]) -> list[list[int]]:
    """Candidates linked to each other (shared key or shared linked example): union-find."""
    parent = list(range(len(candidates)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        parent[find(a)] = find(b)

    seen: dict[tuple[str, str], int] = {}
    for i, candidate in enumerate(candidates):
        for kind, value in (("t", candidate.title_key), ("b", candidate.body_key), ("e", candidate.key)):
            if value is None:
                continue
            if (kind, value) in seen:
                union(i, seen[(kind, value)])
            else:
                seen[(kind, value)] = i
    for link in links:
        if ("x", link.id) in seen:
            union(link.candidate, seen[("x", link.id)])
        else:
            seen[("x", link.id)] = link.candidate
    members: dict[int, list[int]] = defaultdict(list)
    for i in range(len(candidates)):
        members[find(i)].append(i)
    return sorted(members.values())


@dataclass(frozen=True)
class Placement:
    split: str
    reason: str


def place(candidates: Sequence[Candidate], links: Sequence[Link], splits_in_scope: Sequence[str],
          confirmed_to_eval: bool) -> list[Placement]:
    """Rule 3 for every candidate (pure, given the links)."""
    by_candidate: dict[int, list[Link]] = defaultdict(list)
    for link in links:
        by_candidate[link.candidate].append(link)
    out: list[Placement | None] = [None] * len(candidates)
    for group in _groups(candidates, links):
        group_links = [link for i in group for link in by_candidate[i]]
        linked_splits = {link.split for link in group_links}
        target = next((s for s in SPLIT_ORDER if s in linked_splits and s in splits_in_scope), None)
        if target is not None:
            example = min((link for link in group_links if link.split == target), key=lambda link: link.id)
            shared = "" if len(group) == 1 else f" (placed with {len(group) - 1} linked feedback question(s))"
            reason = f"near-duplicate of {target} example {example.id}{shared}"
        elif any(candidates[i].kind == "correction" for i in group):
            target, reason = "train", "new question with a correction: train, where it teaches the model"
        elif confirmed_to_eval and "eval" in splits_in_scope:
            target, reason = "eval", "new question with a confirmed answer: a new eval case"
        else:
            target, reason = "train", "new question with a confirmed answer (feedback.confirmed_to_eval off)"
        for i in group:
            exact = [link for link in by_candidate[i] if link.exact and link.split == target]
            if exact:
                out[i] = Placement(target, f"same question as {target} example {min(exact, key=lambda x: x.id).id}"
                                           f" (superseded)")
            else:
                out[i] = Placement(target, reason)
    return [p for p in out if p is not None]


# -- the examples, and the fold ------------------------------------------------------------------------------------

def _synthetic_id(text: str) -> int:
    return FEEDBACK_ID_BASE + int(hashlib.sha1(text.encode("utf-8")).hexdigest()[:15], 16)


@dataclass
class Fold:
    """What folding F did: for the manifest, the report, the run and the provenance file."""

    feedback: FeedbackSet
    previous_digest: str
    lineage: dict[str, Any]
    report: dict[str, Any]
    provenance: list[dict[str, Any]]

    def provenance_jsonl(self) -> str:
        return "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in self.provenance)


def example_rows(candidates: Sequence[Candidate], placements: Sequence[Placement], links: Sequence[Link],
                 options: CleanOptions) -> tuple[list[dict[str, Any]], list[str], list[dict[str, Any]]]:
    """(rows in CLEAN_SCHEMA, ids of the data-step examples they replace, provenance rows)."""
    rows, superseded, provenance = [], [], []
    by_candidate: dict[int, list[Link]] = defaultdict(list)
    for link in links:
        by_candidate[link.candidate].append(link)
    for i, (candidate, placement) in enumerate(zip(candidates, placements, strict=True)):
        exact = sorted((link for link in by_candidate[i] if link.exact and link.split == placement.split),
                       key=lambda link: link.id)
        if exact:
            base = exact[0]
            id_, qid, site, link, tags = base.id, base.question_id, base.site, base.link, base.tags
            superseded.extend(link.id for link in exact)
        else:
            id_, qid, site = f"{ID_PREFIX}{candidate.key[:16]}", _synthetic_id(candidate.key), options.default_site
            link, tags = "", ""
        aid = _synthetic_id(",".join(candidate.feedback_ids))
        example = {
            "id": id_, "question_id": qid, "answer_id": aid, "site": site, "question": candidate.question,
            "answer": candidate.answer, "input_text": candidate.question.join(options.template_parts),
            "output_text": candidate.answer, "tags": tags, "link": link, "split": placement.split,
            "prompt_name": options.prompt_name, "prompt_version": options.prompt_version,
            "instruction_hash": options.instruction_hash,
        }
        tkey = candidate.title_key
        rows.append({**example,
                     "group_key": f"{site}/t:{tkey}" if tkey else f"{site}/q:{qid}",
                     "body_key": candidate.body_key,
                     "exact_key": hashlib.sha1(f"{candidate.question.lower()}\x00{candidate.answer.lower()}"
                                               .encode()).hexdigest(),
                     "row_hash": row_hash(example)})
        provenance.append({
            "id": id_, "split": placement.split, "kind": candidate.kind, "placement": placement.reason,
            "superseded": [link.id for link in exact],
            "feedback_ids": candidate.feedback_ids,
            "request_ids": sorted({str(r["request_id"]) for r in candidate.support}),
            "users": sorted({str(r.get("user") or "") for r in candidate.support}),
            "sources": sorted({str(r.get("source") or "") for r in candidate.support}),
            "model_versions": sorted({str(r.get("model_version") or "") for r in candidate.support}),
            "dataset_digests": sorted({str(r.get("dataset_digest") or "") for r in candidate.support}),
            "overruled": candidate.overruled, "decided_by": candidate.decided_by,
        })
    return rows, sorted(set(superseded)), provenance


def _within_limits(candidate: Candidate, options: CleanOptions) -> str | None:
    if len(candidate.question) > options.max_question_chars:
        return "question_too_long"
    if len(candidate.answer) < options.min_answer_chars:
        return "empty_answer"
    if len(candidate.answer) > options.max_answer_chars:
        return "answer_too_long"
    return None


def fold_feedback(con: Any, fset: FeedbackSet, options: CleanOptions, splits_in_scope: Sequence[str], *,
                  low_rating_max: int, good_rating_min: int, source_priority: Sequence[str], confirmed_to_eval: bool,
                  split_digest_of: Callable[[Any, str, str], str],
                  warn: Callable[[str], None] = lambda _: None) -> Fold | None:
    """Replace the staging database's `examples` view by the data step's examples + F's (rules 1-4). Returns None,
    leaving `examples` as it was, when F yields no example."""
    resolution = resolve(fset.records, low_rating_max=low_rating_max, good_rating_min=good_rating_min,
                         source_priority=source_priority)
    counts = dict(resolution.counts)
    kept = []
    for candidate in resolution.candidates:
        problem = _within_limits(candidate, options)
        if problem:
            counts[f"dropped_{problem}"] = counts.get(f"dropped_{problem}", 0) + 1
            continue
        first_line = candidate.question.split("\n", 1)[0]
        candidate.title_key, candidate.body_key = title_key(first_line), body_key(candidate.question)
        kept.append(candidate)
    if not kept:
        warn(f"feedback set {fset.digest} ({fset.count} record(s) about {fset.model_name}) yields no example "
             "(no correction or confirmed answer): the dataset is written without it")
        return None
    links = links_to_examples(con, kept)
    placements = place(kept, links, splits_in_scope, confirmed_to_eval)
    rows, superseded, provenance = example_rows(kept, placements, links, options)
    previous = dataset_digest({split: split_digest_of(con, "examples", split) for split in splits_in_scope})
    con.execute("ALTER VIEW examples RENAME TO base_examples")
    table = pa.Table.from_pylist(rows, schema=CLEAN_SCHEMA)
    con.register("fb_rows_arrow", table)
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE feedback_examples AS SELECT * FROM fb_rows_arrow")
    finally:
        con.unregister("fb_rows_arrow")
    con.execute("CREATE OR REPLACE TEMP TABLE superseded_examples (id VARCHAR)")
    if superseded:
        con.executemany("INSERT INTO superseded_examples VALUES (?)", [[id_] for id_ in superseded])
    con.execute("CREATE TEMP VIEW examples AS SELECT * FROM base_examples "
                "WHERE id NOT IN (SELECT id FROM superseded_examples) "
                "UNION ALL BY NAME SELECT * FROM feedback_examples")
    placed = {split: sum(1 for p in placements if p.split == split) for split in splits_in_scope}
    used = sorted({fid for row in provenance for fid in row["feedback_ids"]})
    report = {
        "store": fset.store, "model_name": fset.model_name, "digest": fset.digest, "ids_digest": fset.ids_digest,
        "count": fset.count, "used": len(used), "examples": placed,
        "corrections": sum(1 for c in kept if c.kind == "correction"),
        "confirmed": sum(1 for c in kept if c.kind == "confirmed"),
        "superseded": len(superseded), "counts": dict(sorted(counts.items())),
    }
    text = "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in provenance)
    lineage = {**{k: report[k] for k in ("store", "model_name", "digest", "ids_digest", "count", "used",
                                         "examples", "superseded")},
               "conflicts": counts.get("conflicts", 0), "overruled": counts.get("overruled", 0),
               "provenance": PROVENANCE_FILE,
               "provenance_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]}
    return Fold(fset, previous, lineage, report, provenance)


def feedback_fingerprint(store_uri: str) -> str:
    """What a pipeline driver hashes into the data step's reuse key: the store is append-only, so the names of its
    parts identify its content (a new record is a new part)."""
    from llmops.parts import list_parts

    return hashlib.sha256("\n".join(list_parts(store_uri)).encode("utf-8")).hexdigest()[:16]
