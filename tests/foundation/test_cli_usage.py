"""Usage errors through the real `llmops` console script: one `error:` line and exit 2, never a traceback; the
conventions every command shares (--version, defaults shown in --help, config show with secrets masked)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from llmops.cli import main
from tests.conftest import VENV_BIN

LLMOPS = str(VENV_BIN / "llmops")

USAGE_ERRORS = [
    (["data", "prepare", "--qestion", "x"], "No such option: --qestion"),
    (["nosuch"], "No such command 'nosuch'"),
    (["registry", "nosuch"], "No such command 'nosuch'"),
    # `--tag-pattern .*` unquoted: the shell expands it to the dot-files of the working directory
    (["data", "prepare", "--tag-pattern", ".", "..", ".venv", ".git"], "unexpected extra argument"),
    (["data", "prepare", "--limit"], "Option '--limit' requires an argument"),
    (["serve", "predict"], "Missing option '--model'"),
    (["data", "import-dump"], "Missing argument"),
    (["data", "import-dump", "posts.xml", "--site", "x.stackexchange.com"], "Missing option '--out'"),
    (["prompts", "diff", "so-qa", "one", "2"], "Invalid value for 'v1'"),
    (["--bogus"], "No such option: --bogus"),
    (["eval", "gate", "--agains", "x"], "No such option: --agains"),
    (["data", "prepare", "--quiet=3"], "does not take a value"),
    (["config", "show", "data", "extra"], "unexpected extra argument"),
]


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LLMOPS, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200", **env})


@pytest.mark.parametrize(("args", "message"), USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_usage_error_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = _run(args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0]
    assert "--help" in lines[0] and "Traceback" not in result.stderr + result.stdout


def test_usage_error_names_the_command_to_ask_for_help() -> None:
    assert "(see 'llmops data prepare --help')" in _run(["data", "prepare", "--limit"]).stderr


def test_group_without_command_prints_its_help_and_exits_2() -> None:
    result = _run(["data"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "prepare" in result.stdout + result.stderr and "import-dump" in result.stdout + result.stderr


def test_version() -> None:
    from importlib.metadata import version

    result = _run(["--version"])
    assert result.returncode == 0
    assert result.stdout.startswith(f"llmops {version('llmops-mlflow')} (mlflow {version('mlflow')}")


def test_help_shows_the_effective_setting_values_with_secrets_masked(tmp_path: Path) -> None:
    (tmp_path / "llmops.yaml").write_text("data:\n  limit: 1234\n")
    env = {"LLMOPS_DATA__TAG_PATTERN": "rust|go", "MLFLOW_TRACKING_URI": "postgresql://me:s3cr3t@db:5432/mlflow"}
    result = subprocess.run([LLMOPS, "data", "prepare", "--help"], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, env={**os.environ, "COLUMNS": "250", **env})
    assert result.returncode == 0, result.stderr
    help_text = " ".join(result.stdout.split())
    assert "data.tag_pattern = rust|go" in help_text  # from the environment
    assert "data.limit = 1234" in help_text  # from ./llmops.yaml
    assert "data.answer_date_cutoff = 2020-01-01" in help_text  # the built-in default
    assert "postgresql://me:***@db:5432/mlflow" in help_text and "s3cr3t" not in result.stdout
    assert "default: settings" not in help_text


def test_prompts_help_shows_the_templates_folder() -> None:
    from llmops.settings import load_settings

    result = _run(["prompts", "sync", "--help"], COLUMNS="400")
    assert f"prompt.templates_dir = {load_settings().prompt.templates_dir}" in " ".join(result.stdout.split())


def test_config_show_masks_api_keys_passwords_and_url_credentials(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LLMOPS_REGISTRY__LEDGER_URI", "postgresql+psycopg://ledger:pw-ledger@db/ledger")
    monkeypatch.setenv("LLMOPS_REGISTRY__NOTIFY_URL", "https://hooks.example.com/x?channel=ops&token=tok-123")
    monkeypatch.setenv("LLMOPS_REGISTRY__NOTIFY_COMMAND", "curl -s https://bot:pw-cmd@chat.example.com/hook")
    monkeypatch.setenv("LLMOPS_CHAIN__PROVIDER__PARAMS", json.dumps({"api_key": "sk-live-1", "temperature": 0.2}))
    monkeypatch.setenv("LLMOPS_CHAIN__PROVIDER__API_KEY_ENV", "OPENAI_API_KEY")
    with pytest.raises(SystemExit) as info:
        main(["config", "show", "--json"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for secret in ("pw-ledger", "tok-123", "pw-cmd", "sk-live-1"):
        assert secret not in out
    shown = json.loads(out)
    assert shown["registry"]["ledger_uri"] == "postgresql+psycopg://ledger:***@db/ledger"
    assert shown["registry"]["notify_url"] == "https://hooks.example.com/x?channel=ops&token=***"
    assert shown["registry"]["notify_command"] == "curl -s https://bot:***@chat.example.com/hook"
    assert shown["chain"]["provider"]["params"] == {"api_key": "***", "temperature": 0.2}
    assert shown["chain"]["provider"]["api_key_env"] == "OPENAI_API_KEY"  # a variable's name, not a secret
    assert shown["data"]["tag_pattern"] == "python"


def test_config_show_one_section_as_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    with pytest.raises(SystemExit) as info:
        main(["config", "show", "data"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("# defaults < llmops.yaml (absent) < LLMOPS_* environment < flags")
    assert yaml.safe_load(out) == {"data": yaml.safe_load(out)["data"]}
    assert yaml.safe_load(out)["data"]["answer_date_cutoff"] == "2020-01-01"
    with pytest.raises(SystemExit) as info:
        main(["config", "show", "dta"])
    assert info.value.code == 2 and "unknown settings section 'dta'" in capsys.readouterr().err


def _prepare_on_a_terminal(tmp_path: Path, *flags: str) -> tuple[int, str]:
    """`llmops data prepare` with stderr on a pseudo-terminal; returns (exit code, what the terminal showed)."""
    import pty
    import threading

    master, slave = pty.openpty()
    shown: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            shown.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    proc = subprocess.run([LLMOPS, "data", "prepare", "--output-dir", str(tmp_path / "out"), *flags],
                          stdout=subprocess.PIPE, stderr=slave, timeout=300, env={**os.environ, "COLUMNS": "120"})
    os.close(slave)
    reader.join(timeout=10)
    os.close(master)
    return proc.returncode, b"".join(shown).decode(errors="replace")


def test_data_progress_only_on_a_terminal_and_not_when_quiet(tracking_uri: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, terminal = _prepare_on_a_terminal(tmp_path)
    assert code == 0 and "query + clean (rows)" in terminal
    code, terminal = _prepare_on_a_terminal(tmp_path, "--quiet")
    assert code == 0 and "query + clean" not in terminal
    with pytest.raises(SystemExit) as info:  # stderr captured (not a terminal): plain lines only
        main(["data", "prepare", "--output-dir", str(tmp_path / "out")])
    assert info.value.code == 0 and "query + clean" not in capsys.readouterr().err
