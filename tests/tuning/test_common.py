"""Pure parts of tuning: chat conversion, dataset checks, settings ranges."""

from __future__ import annotations

import json

import pytest

from llmops.errors import ConfigError, DataError
from projects.tuning.common import chat_jsonl, chat_pair, to_chat


def test_rows_become_vertex_chat_examples() -> None:
    chat = to_chat({"input_text": "Question: why?", "output_text": "Because."})
    assert chat == {"contents": [{"role": "user", "parts": [{"text": "Question: why?"}]},
                                 {"role": "model", "parts": [{"text": "Because."}]}]}
    assert chat_pair(chat) == ("Question: why?", "Because.")
    line = json.loads(chat_jsonl([chat]).splitlines()[0])
    assert line == chat


def test_chat_rows_pass_through_and_multi_turn_prompts_join() -> None:
    contents = [{"role": "user", "parts": [{"text": "a"}]}, {"role": "model", "parts": [{"text": "b"}]},
                {"role": "user", "parts": [{"text": "c"}]}, {"role": "model", "parts": [{"text": "d"}]}]
    assert to_chat({"contents": contents, "input_text": "ignored"}) == {"contents": contents}
    assert chat_pair({"contents": contents}) == ("a\n\nb\n\nc", "d")


@pytest.mark.parametrize(("row", "message"), [
    ({"input_text": "", "output_text": "x"}, "input_text is missing or empty"),
    ({"input_text": "q"}, "output_text is missing or empty"),
    ({"contents": [{"role": "user", "parts": [{"text": "q"}]}]}, "at least a user and a model turn"),
    ({"contents": [{"role": "system", "parts": [{"text": "q"}]}, {"role": "model", "parts": [{"text": "a"}]}]},
     "role 'user' or 'model'"),
    ({"contents": [{"role": "user", "parts": []}, {"role": "model", "parts": [{"text": "a"}]}]}, "parts"),
    ({"contents": [{"role": "model", "parts": [{"text": "a"}]}, {"role": "user", "parts": [{"text": "q"}]}]},
     "last turn must be the model's"),
])
def test_malformed_rows_are_named(row, message) -> None:
    with pytest.raises(DataError, match=message):
        to_chat(row)


@pytest.mark.parametrize(("override", "key"), [
    ({"hf": {"epochs": 0}}, "tuning.hf.epochs"),
    ({"hf": {"learning_rate": 2.0}}, "tuning.hf.learning_rate"),
    ({"hf": {"lora_dropout": 1.0}}, "tuning.hf.lora_dropout"),
    ({"vertex": {"epochs": 101}}, "tuning.vertex.epochs"),
    ({"vertex": {"learning_rate_multiplier": 0}}, "tuning.vertex.learning_rate_multiplier"),
    ({"vertex": {"adapter_size": 3}}, "tuning.vertex.adapter_size"),
    ({"backend": "sagemaker"}, "tuning.backend"),
])
def test_hyperparameters_out_of_range_are_config_errors(override, key) -> None:
    from llmops.settings import load_settings

    with pytest.raises(ConfigError, match=key):
        load_settings({"tuning": override})


def test_gcs_uri_parsing() -> None:
    from projects.tuning.vertex import parse_gcs_uri

    assert parse_gcs_uri("gs://my-bucket/a/b/") == ("my-bucket", "a/b")
    assert parse_gcs_uri("gs://my-bucket") == ("my-bucket", "")
    for bad in ("my-bucket/a", "gs://", "gs://UPPER/x"):
        with pytest.raises(ConfigError):
            parse_gcs_uri(bad)
