"""The validation report: what the query returned, what each filter dropped and why, lengths, duplicates, leakage.

Every figure is computed by SQL over the staging tables, so the report costs a few scans, never a Python loop.
"""

from __future__ import annotations

from typing import Any

LEAKAGE_SAMPLE = 100


def _int(value: Any) -> int:
    return int(value or 0)


def length_stats(con: Any, table: str, column: str) -> dict[str, float]:
    row = con.execute(
        f"SELECT count(*), min(length({column})), quantile_cont(length({column}), 0.5), "
        f"quantile_cont(length({column}), 0.9), quantile_cont(length({column}), 0.99), max(length({column})), "
        f"avg(length({column})) FROM {table}"
    ).fetchone()
    keys = ("count", "min", "p50", "p90", "p99", "max", "mean")
    return {key: (round(float(value), 1) if value is not None else None) for key, value in zip(keys, row, strict=True)}


def near_duplicate_stats(con: Any, table: str) -> dict[str, int]:
    """Groups of questions that share a title key (they were kept, and placed in one split)."""
    groups, questions = con.execute(
        f"SELECT count(*), COALESCE(sum(n), 0) FROM (SELECT group_key, count(*) AS n FROM {table} "
        "WHERE group_key LIKE '%/t:%' GROUP BY group_key HAVING count(*) > 1)"
    ).fetchone()
    split_groups = con.execute(
        f"SELECT count(*) FROM (SELECT group_key FROM {table} GROUP BY group_key "
        "HAVING count(DISTINCT split) > 1)"
    ).fetchone()[0]
    return {"groups": _int(groups), "questions_in_groups": _int(questions), "groups_across_splits": _int(split_groups)}


def leakage(con: Any, table: str) -> dict[str, Any]:
    """Eval/test questions whose near-duplicate (same body key, an independent key from the split's) is in train."""
    count = con.execute(
        f"SELECT count(DISTINCT e.id) FROM {table} e JOIN {table} t ON e.body_key = t.body_key "
        "WHERE e.split <> 'train' AND t.split = 'train'"
    ).fetchone()[0]
    sample = con.execute(
        f"SELECT e.id, e.split, min(t.id) FROM {table} e JOIN {table} t ON e.body_key = t.body_key "
        f"WHERE e.split <> 'train' AND t.split = 'train' GROUP BY e.id, e.split ORDER BY e.id LIMIT {LEAKAGE_SAMPLE}"
    ).fetchall()
    return {
        "method": "same body key (first 64 lower-cased, whitespace-split words of title+body) in train and eval/test",
        "eval_questions_with_train_duplicate": _int(count),
        "pairs": [{"id": row[0], "split": row[1], "train_id": row[2]} for row in sample],
    }


def build_report(con: Any, table: str, *, funnel: dict[str, int] | None, rows_from_query: int,
                 cleaned: int, dropped: dict[str, int], nulls: dict[str, int],
                 splits: dict[str, int], duplicates: dict[str, int] | None = None) -> dict[str, Any]:
    examples = sum(splits.values())
    return {
        "funnel": funnel,
        "rows": {"from_query": rows_from_query, "after_cleaning": cleaned, "after_dedup": examples, **splits},
        "dropped": dropped,
        "nulls_in_query_result": nulls,
        # rows repeating a question id, and the duplicate (site, id) rows per table behind them ({}: none)
        "duplicates": duplicates or {},
        "lengths": {"question_chars": length_stats(con, table, "question"),
                    "answer_chars": length_stats(con, table, "answer")},
        "near_duplicates": near_duplicate_stats(con, table),
        "leakage": leakage(con, table),
    }
