"""`llmops ARGS` in this process, through the real entry point (usage and domain errors become one line and an
exit code there)."""

from __future__ import annotations

import pytest


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `llmops ARGS`."""
    from llmops.cli import main

    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err
