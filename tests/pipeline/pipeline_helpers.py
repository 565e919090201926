"""Shared by the pipeline tests: the real `llmops` entry point in this process, and a MLproject copy to edit."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`llmops ARGS` through `llmops.cli.main` (usage and domain errors become one line and an exit code there)."""
    from llmops.cli import main

    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


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
