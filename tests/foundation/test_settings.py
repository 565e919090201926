"""Settings precedence and errors: defaults < llmops.yaml < environment < CLI flags."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from llmops.errors import ConfigError
from llmops.settings import load_settings, overrides_from_flags


def test_defaults_are_embedded_engines() -> None:
    settings = load_settings()
    assert settings.warehouse.engine == "duckdb"
    assert settings.mlflow.tracking_uri == f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    assert all(Path(p).is_file() for p in settings.warehouse.tables.values())


def test_precedence_file_then_env_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "llmops.yaml").write_text("data:\n  limit: 11\n  tag_pattern: java\n")
    assert load_settings().data.limit == 11
    monkeypatch.setenv("LLMOPS_DATA__LIMIT", "22")
    settings = load_settings()
    assert (settings.data.limit, settings.data.tag_pattern) == (22, "java")
    flagged = load_settings(overrides_from_flags(**{"data.limit": 33, "data.eval_percent": None}))
    assert (flagged.data.limit, flagged.data.tag_pattern, flagged.data.eval_percent) == (33, "java", 20)


def test_mlflow_tracking_uri_env_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert load_settings().mlflow.tracking_uri == "http://127.0.0.1:5999"


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValidationError, match="frozen"):
        settings.data.limit = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("yaml_text", "fragment"),
    [
        ("data:\n  limit: many\n", "data.limit"),
        ("data:\n  answer_date_cutoff: 01/02/2020\n", "YYYY-MM-DD"),
        ("warehouse:\n  engine: oracle\n", "warehouse.engine"),
        ("dta:\n  limit: 3\n", "dta"),
        ("data: [unclosed\n", "not valid YAML"),
        ("- a list\n", "mapping"),
        ("dataprep:\n  duckdb_memory_limit: lots\n", "dataprep.duckdb_memory_limit"),
        ("dataprep:\n  staging_memory_limit: 12 parsecs\n", "expected a memory size"),
    ],
)
def test_bad_config_names_the_problem(tmp_path: Path, yaml_text: str, fragment: str) -> None:
    (tmp_path / "llmops.yaml").write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert fragment in str(info.value)


def test_explicit_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(config_file=tmp_path / "nope.yaml")


def test_cli_reports_bad_config_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from llmops.cli import main

    (tmp_path / "llmops.yaml").write_text("data:\n  eval_percent: 150\n")
    with pytest.raises(SystemExit) as info:
        main(["data", "prepare"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: invalid setting data.eval_percent") and "\n" not in err
