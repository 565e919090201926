"""`llmops server start --team`: one command brings up PostgreSQL and the llmops-auth server; SIGTERM stops both.
Plus the judge's pure helpers (alias look-alikes, artifact locations)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

LLMOPS = str(Path(sys.executable).parent / "llmops")


def test_one_command_starts_and_stops_the_team_server():
    from registry.team import PgCluster, _hand_to_pg_user, free_port, team_secrets

    data_dir = Path(tempfile.mkdtemp(prefix="llmops-team-cli-"))
    data_dir.chmod(0o755)
    _hand_to_pg_user(data_dir)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LLMOPS_"))}
    proc = subprocess.Popen([LLMOPS, "server", "start", "--team", "--data-dir", str(data_dir), "--port", str(port),
                             "--workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.time() + 150
        while time.time() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        assert proc.poll() is None, proc.stdout.read()
        secrets = team_secrets(data_dir)
        admin = ("admin", secrets["MLFLOW_AUTH_ADMIN_PASSWORD"])
        info = httpx.get(f"http://127.0.0.1:{port}/api/2.0/llmops/registry/info", auth=admin, timeout=10)
        assert info.status_code == 200 and info.json()["ledger"] == "server"
        assert httpx.get(f"http://127.0.0.1:{port}/api/2.0/llmops/registry/info", timeout=10).status_code == 401
        assert (data_dir / "team.env").stat().st_mode & 0o077 == 0  # secrets readable by the owner only
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "stopped" in out, out
        cluster = PgCluster(data_dir / "pg", int((data_dir / "pg-port").read_text()),
                            secrets["LLMOPS_TEAM_PG_PASSWORD"])
        assert not cluster.running()
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run([LLMOPS, "server", "stop", "--data-dir", str(data_dir)], capture_output=True, check=False)
        import shutil

        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.mark.parametrize("alias, imitates", [
    ("Production", "production"), ("prod-uction", "production"), ("PRODUCTION_", "production"),
    ("ｐｒｏｄｕｃｔｉｏｎ", "production"), ("production", None), ("canary", None), ("staging2", None),
])
def test_look_alikes(alias, imitates):
    from registry.guard import look_alike

    assert look_alike(alias, ["dev", "staging", "production"]) == imitates


def test_artifact_locations_compare_across_spellings():
    from registry.guard import location_key, overlaps

    dest = "/srv/artifacts"
    stored = location_key("mlflow-artifacts:/1/models/m-1/artifacts", dest)
    assert stored == "file:/srv/artifacts/1/models/m-1/artifacts"
    assert location_key("mlflow-artifacts://host:5000/1/models/m-1/artifacts/", dest) == stored
    assert location_key("file:///srv/artifacts/1/models/m-1/artifacts", dest) == stored
    for target, hit in (("1/models/m-1/artifacts/MLmodel", True), ("1/models/m-1", True), ("1", True),
                        ("1/models/m-2/artifacts/MLmodel", False), ("1/models/m-10/artifacts", False)):
        assert overlaps(location_key(f"mlflow-artifacts:/{target}", dest), stored) is hit, target
    assert location_key("s3://bucket/a/../b", None) == "s3://bucket/b"
