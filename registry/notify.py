"""Tell the world an alias moved: run a command and/or POST to a URL with the move as JSON.

Called after the move is committed; a failure is reported to the caller and never undoes the move.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from typing import Any


def notify(move: dict[str, Any], command: str | None, url: str | None, timeout_s: float) -> list[str]:
    """Returns one line per configured target: 'ok' or what went wrong."""
    from llmops.secrets import mask_text

    payload = json.dumps(move, sort_keys=True)
    lines = []
    if command:
        lines.append(f"notify command: {_run_command(command, payload, timeout_s)}")
    if url:
        lines.append(f"notify url: {_post(url, payload, timeout_s)}")
    return [mask_text(line) for line in lines]


def _run_command(command: str, payload: str, timeout_s: float) -> str:
    try:
        proc = subprocess.run(shlex.split(command), input=payload, capture_output=True, text=True, check=False,
                              timeout=timeout_s)
    except FileNotFoundError as exc:
        return f"FAILED ({exc.filename}: not found)"
    except subprocess.TimeoutExpired:
        return f"FAILED (no exit within {timeout_s:.0f} s)"
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [""])[-1]
        return f"FAILED (exit {proc.returncode}{': ' + tail if tail else ''})"
    return "ok"


def _post(url: str, payload: str, timeout_s: float) -> str:
    import httpx

    try:
        response = httpx.post(url, content=payload, headers={"Content-Type": "application/json"},
                              timeout=timeout_s)
    except httpx.HTTPError as exc:
        return f"FAILED ({type(exc).__name__}: {exc})"
    if response.status_code >= 300:
        return f"FAILED (HTTP {response.status_code})"
    return "ok"
