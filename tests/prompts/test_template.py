"""The strict template model: unknown keys, undeclared or missing variables, few-shot and parameters."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llmops.errors import ConfigError
from prompts.template import load_template_file

GOOD = {
    "name": "t", "instruction": "Answer well.", "template": "{{instruction}}\n{{question}}",
    "variables": ["instruction", "question"], "model_parameters": {"temperature": 0.1}, "tags": {"task": "qa"},
}


def write(tmp_path: Path, **changes) -> Path:
    data = {**GOOD, **changes}
    data = {k: v for k, v in data.items() if v is not None}
    path = tmp_path / f"{data.get('name', 't')}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_good_template_renders_and_hashes(tmp_path):
    template = load_template_file(write(tmp_path))
    assert template.render(question="Why?") == "Answer well.\nWhy?"
    other = load_template_file(write(tmp_path, template="{{instruction}}\n\nQ: {{question}}"))
    assert other.instruction_hash == template.instruction_hash
    assert other.content_hash != template.content_hash


@pytest.mark.parametrize("changes, problem", [
    ({"temprature": 0.2}, "unknown key 'temprature'"),
    ({"template": "{{instruction}} {{question}} {{context}}"}, "undeclared variable.*context"),
    ({"variables": ["instruction", "question", "context"]}, "not used in the template: context"),
    ({"template": "{{question}}", "variables": ["question"]}, "must use {{instruction}}"),
    ({"few_shot": [{"question": "a", "answer": "b"}]}, "few_shot examples and the {{examples}} variable"),
    ({"model_parameters": {"max_tokens": 5}}, "unknown model parameter.*max_tokens"),
    ({"instruction": ""}, "instruction"),
    ({"name": "other"}, "must match the file name"),
])
def test_bad_templates_name_the_problem(tmp_path, changes, problem):
    path = write(tmp_path, **changes)
    if "name" in changes:
        path = path.rename(tmp_path / "t.yaml")
    with pytest.raises(ConfigError, match=problem):
        load_template_file(path)


def test_missing_and_unknown_values_at_render_time(tmp_path):
    template = load_template_file(write(tmp_path))
    with pytest.raises(ConfigError, match="missing: question"):
        template.render()
    with pytest.raises(ConfigError, match="unknown prompt variable.*context"):
        template.render(question="q", context="c")


def test_few_shot_examples_are_part_of_the_rendered_text(tmp_path):
    path = write(tmp_path, template="{{instruction}}\n{{examples}}\n{{question}}",
                 variables=["instruction", "examples", "question"],
                 few_shot=[{"question": "Reverse a list?", "answer": "xs[::-1]"}])
    text = load_template_file(path).render(question="Sort a dict?")
    assert "Reverse a list?" in text and "xs[::-1]" in text and text.endswith("Sort a dict?")


def test_shipped_templates_are_valid_and_share_the_instruction():
    root = Path(__file__).resolve().parents[2] / "prompts" / "templates"
    templates = [load_template_file(p) for p in sorted(root.glob("*.yaml"))]
    assert {t.name for t in templates} >= {"so-qa", "so-qa-grounded"}
    assert len({t.instruction_hash for t in templates}) == 1


def test_not_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_template_file(bad)
    from llmops.errors import NotFoundError

    with pytest.raises(NotFoundError):
        load_template_file(tmp_path / "absent.yaml")
