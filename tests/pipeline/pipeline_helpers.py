"""Shared by the pipeline tests: the real `llmops` entry point in this process, and a MLproject copy to edit."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.cli import run_cli as cli  # noqa: F401 - the pipeline tests' `cli(capsys, ...)`

REPO = Path(__file__).resolve().parents[2]


def project_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit=None) -> Path:
    """MLproject copied to `tmp_path/project` (optionally edited) and made the one the definition reads."""
    import projects.pipeline_definition as definition

    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(REPO / "MLproject", root / "MLproject")
    if edit:
        path = root / "MLproject"
        path.write_text(edit(path.read_text()))
    monkeypatch.setattr(definition, "mlproject_path", lambda root_=None: root / "MLproject")
    return root
