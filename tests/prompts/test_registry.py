"""Prompt Registry sync, aliases, diffs and URIs against a real SQLite MLflow store, through the CLI boundary."""

from __future__ import annotations

import itertools
from pathlib import Path

import mlflow
import pytest

from llmops.cli import main
from llmops.errors import ConfigError, NotFoundError
from prompts.registry import (
    diff_versions,
    load_pinned,
    parse_prompt_uri,
    set_alias,
    sync_prompt,
)
from prompts.template import load_template_file

_NUMBERS = itertools.count()


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.fixture
def templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: str, template_copier) -> tuple[Path, str]:
    """A templates dir holding the shipped so-qa under a name that is new in the module's store."""
    name = f"qa-{next(_NUMBERS)}"
    path = template_copier(tmp_path / "templates", "so-qa", name)
    monkeypatch.setenv("LLMOPS_PROMPT__TEMPLATES_DIR", str(path.parent))
    return path, name


def test_sync_creates_a_version_only_when_content_changes(templates, capsys):
    path, name = templates
    code, out, _ = run_cli(capsys, "prompts", "sync", "--name", name, "--message", "first")
    assert code == 0 and f"prompts:/{name}/1 created" in out
    code, out, _ = run_cli(capsys, "prompts", "sync", "--name", name)
    assert code == 0 and f"prompts:/{name}/1 unchanged" in out
    path.write_text(path.read_text().replace("temperature: 0.2", "temperature: 0.4"))
    code, out, _ = run_cli(capsys, "prompts", "sync", "--name", name, "--message", "warmer")
    assert code == 0 and f"prompts:/{name}/2 created" in out
    version = mlflow.genai.load_prompt(f"prompts:/{name}/2")
    assert version.commit_message == "warmer"
    assert version.tags["llmops.model_parameters"] == '{"max_output_tokens": 1024, "temperature": 0.4}'
    assert load_pinned(f"prompts:/{name}/2").model_parameters["temperature"] == 0.4
    # the instruction did not change, so neither did its hash
    assert load_pinned(f"prompts:/{name}/1").instruction_hash == load_pinned(f"prompts:/{name}/2").instruction_hash


def test_sync_all_validates_every_file_before_registering(templates, capsys):
    path, name = templates
    (path.parent / "broken.yaml").write_text("name: broken\ninstruction: x\ntemplate: '{{instruction}} {{question}}'\n"
                                             "variables: [instruction, question]\ncolour: red\n")
    code, _, err = run_cli(capsys, "prompts", "sync")
    assert code == ConfigError.exit_code
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.yaml: unknown key 'colour'" in errors[0]
    assert mlflow.genai.load_prompt(f"prompts:/{name}@latest", allow_missing=True) is None  # nothing half-way


def test_alias_moves_and_diff_shows_the_change(templates, capsys):
    path, name = templates
    first, _ = sync_prompt(load_template_file(path))
    path.write_text(path.read_text().replace("concise answer", "short answer"))
    second, created = sync_prompt(load_template_file(path), "shorter")
    assert created and second.version == 2 and second.instruction_hash != first.instruction_hash

    code, out, _ = run_cli(capsys, "prompts", "alias", name, "1", "production")
    assert code == 0 and f"prompts:/{name}@production -> prompts:/{name}/1" in out
    assert load_pinned(f"prompts:/{name}@production").version == 1
    run_cli(capsys, "prompts", "alias", name, "2", "production")
    assert load_pinned(f"prompts:/{name}@production").version == 2  # moved, and not served stale from a cache

    code, out, _ = run_cli(capsys, "prompts", "diff", name, "1", "2")
    assert code == 0
    assert "-You are a helpful Python expert. Answer the question below with a correct, concise answer." in out
    assert "+You are a helpful Python expert. Answer the question below with a correct, short answer." in out
    assert "llmops.instruction_hash" in out
    assert diff_versions(name, 2, 2) == ""


def test_missing_versions_aliases_and_bad_uris(templates, capsys):
    path, name = templates
    sync_prompt(load_template_file(path))
    with pytest.raises(NotFoundError, match=f"prompts:/{name}@nope"):
        load_pinned(f"prompts:/{name}@nope")
    with pytest.raises(NotFoundError, match=f"prompts:/{name}/9"):
        load_pinned(f"prompts:/{name}/9")
    with pytest.raises(NotFoundError, match="prompts:/absent/1"):
        load_pinned("prompts:/absent/1")
    with pytest.raises(NotFoundError):
        set_alias(name, 7, "production")
    code, _, err = run_cli(capsys, "prompts", "diff", name, "1", "3")
    assert code == NotFoundError.exit_code and "version 3 not found" in err
    code, _, err = run_cli(capsys, "prompts", "show", f"prompts:/{name}@missing")
    assert code == NotFoundError.exit_code and "not found" in err
    for bad in ("so-qa@prod", "prompts:/so-qa", "prompts:/so-qa/x", "models:/so-qa/1"):
        with pytest.raises(ConfigError, match="prompt URI must look like"):
            parse_prompt_uri(bad)
    with pytest.raises(ConfigError, match="reserved"):
        set_alias(name, 1, "latest")


def test_loading_inside_a_run_links_the_prompt(templates):
    path, name = templates
    sync_prompt(load_template_file(path))
    with mlflow.start_run() as run:
        load_pinned(f"prompts:/{name}/1")
    linked = mlflow.get_run(run.info.run_id).data.tags.get("mlflow.linkedPrompts", "")
    assert f'"{name}"' in linked and '"1"' in linked
