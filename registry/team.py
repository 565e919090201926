"""The team setup in one command: a PostgreSQL cluster in a data dir and `mlflow server --app-name llmops-auth`.

`llmops server start --team` (or `make team`) creates on first use, under `--data-dir`:

    pg/            the PostgreSQL cluster (Debian's `postgresql` package: initdb / pg_ctl from
                   /usr/lib/postgresql/*/bin), listening on 127.0.0.1 only, password auth (scram-sha-256)
    team.env       generated once, mode 0600: the database password, MLflow's Flask secret key and the
                   admin password (environment variables of the same names win)
    auth.ini       MLflow basic-auth's config: its user/permission store is a second PostgreSQL database
    artifacts/     the artifact store the server proxies (`--serve-artifacts`)

then runs the tracking server on `postgresql+psycopg://` in the foreground; Ctrl-C stops both. PostgreSQL
refuses to run as root, so as root its binaries run as the `postgres` user the package creates (runuser), and
the cluster directory is handed to that user. The same classes start the test suite's cluster and server.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from llmops.errors import ConfigError, LlmopsError

PG_USER = "llmops"
DATABASES = ("mlflow", "mlflow_auth")
ADMIN_USER = "admin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pg_bindir() -> Path:
    """The newest installed PostgreSQL's binaries (Debian keeps them off PATH)."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise ConfigError("PostgreSQL is not installed: `apt-get install -y postgresql` (Debian/Ubuntu) provides "
                      "initdb and pg_ctl")


def _as_pg_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    if shutil.which("runuser") is None:
        raise ConfigError("running as root: PostgreSQL must run as an unprivileged user, and runuser is missing")
    return ["runuser", "-u", "postgres", "--", *cmd]


def _hand_to_pg_user(path: Path) -> None:
    if os.geteuid() == 0:
        import pwd

        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)


@dataclass
class PgCluster:
    """One PostgreSQL cluster in `pgdata`, on 127.0.0.1:`port`, with role `llmops` / `password`."""

    pgdata: Path
    port: int
    password: str

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(_as_pg_user([str(pg_bindir() / args[0]), *args[1:]]), capture_output=True, text=True,
                              check=False, timeout=120)
        if check and proc.returncode != 0:
            tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
            raise LlmopsError(f"{args[0]} failed (exit {proc.returncode}): {' / '.join(tail)}")
        return proc

    def init(self) -> None:
        """initdb once (a data dir that already holds a cluster is reused)."""
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.pgdata.chmod(0o700)
        _hand_to_pg_user(self.pgdata)
        pwfile = self.pgdata.parent / f".{self.pgdata.name}-initdb-pw"  # initdb wants an empty data dir
        pwfile.write_text(self.password + "\n", encoding="utf-8")
        pwfile.chmod(0o600)
        _hand_to_pg_user(pwfile)
        try:
            self._run("initdb", "-D", str(self.pgdata), "-U", PG_USER, f"--pwfile={pwfile}",
                          "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8",
                          "--locale=C.UTF-8" if _has_locale("C.UTF-8") else "--no-locale")
        finally:
            pwfile.unlink(missing_ok=True)

    def running(self) -> bool:
        proc = self._run("pg_ctl", "-D", str(self.pgdata), "status", check=False)
        return proc.returncode == 0

    def start(self) -> None:
        if self.running():
            return
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.pgdata} -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.pgdata), "-l", str(self.pgdata / "server.log"), "-o", options,
                      "-w", "-t", "60", "start")

    def stop(self) -> None:
        if self.running():
            self._run("pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "60", "stop", check=False)

    def url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        from urllib.parse import quote

        return f"{driver}://{PG_USER}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{database}"

    def ensure_databases(self, names: tuple[str, ...] = DATABASES) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres", "postgresql"), autocommit=True, connect_timeout=10) as conn:
            existing = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
            for name in names:
                if name not in existing:
                    conn.execute(f'CREATE DATABASE "{name}"')


def _has_locale(name: str) -> bool:
    try:
        out = subprocess.run(["locale", "-a"], capture_output=True, text=True, timeout=10, check=False).stdout
    except OSError:
        return False
    return name.lower().replace("-", "") in {line.strip().lower().replace("-", "") for line in out.splitlines()}


# -- the team's secrets, generated once ----------------------------------------------------------------------
SECRET_KEYS = ("LLMOPS_TEAM_PG_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_AUTH_ADMIN_PASSWORD")


def team_secrets(data_dir: Path) -> dict[str, str]:
    """`team.env` in the data dir (created 0600 on first use); the environment wins per key."""
    path = data_dir / "team.env"
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() in SECRET_KEYS:
                values[key.strip()] = value.strip()
    missing = [k for k in SECRET_KEYS if k not in values]
    if missing:
        for key in missing:
            values[key] = secrets.token_urlsafe(24)
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(f"{k}={values[k]}\n" for k in SECRET_KEYS), encoding="utf-8")
        tmp.chmod(0o600)
        os.replace(tmp, path)
    return {k: os.environ.get(k) or values[k] for k in SECRET_KEYS}


# -- the tracking server -----------------------------------------------------------------------------------
@dataclass
class TeamServer:
    """`mlflow server --app-name llmops-auth` on the cluster's `mlflow` database; auth store in `mlflow_auth`."""

    data_dir: Path
    cluster: PgCluster
    host: str
    port: int
    policy_file: str | None
    admin_password: str
    secret_key: str
    workers: int = 1
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        ini = self.data_dir / "auth.ini"
        ini.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = {self.cluster.url('mlflow_auth')}\n"
                       f"admin_username = {ADMIN_USER}\nauth_cache_ttl_seconds = 5\n"
                       "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
                       encoding="utf-8")
        ini.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LLMOPS_"))
               or k in ("LLMOPS_CONFIG",)}
        env.update(MLFLOW_FLASK_SERVER_SECRET_KEY=self.secret_key, MLFLOW_AUTH_ADMIN_PASSWORD=self.admin_password,
                   MLFLOW_AUTH_CONFIG_PATH=str(ini), MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
                   PYTHONUNBUFFERED="1")
        if self.policy_file:
            env["LLMOPS_REGISTRY__POLICY_FILE"] = str(self.policy_file)
        return env

    def command(self) -> list[str]:
        mlflow = str(Path(sys.executable).parent / "mlflow")
        artifacts = self.data_dir / "artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        return [mlflow, "server", "--app-name", "llmops-auth", "--host", self.host, "--port", str(self.port),
                "--workers", str(self.workers), "--backend-store-uri", self.cluster.url("mlflow"),
                "--serve-artifacts", "--artifacts-destination", str(artifacts)]

    def start(self, log_path: Path | None = None, timeout_s: float = 180) -> None:
        import httpx

        log = (log_path or self.data_dir / "server.log").open("ab")
        self.process = subprocess.Popen(self.command(), cwd=self.data_dir, env=self.env(), stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout_s
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.time() > deadline:
                self.stop()
                tail = (log_path or self.data_dir / "server.log").read_text(errors="replace")[-2000:]
                raise LlmopsError(f"the tracking server did not start on {self.url}:\n{tail}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def team(data_dir: Path, host: str = "127.0.0.1", port: int = 5000, pg_port: int | None = None,
         policy_file: str | None = None, workers: int = 1) -> TeamServer:
    """The cluster (created and started) and an unstarted server for `data_dir`."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    values = team_secrets(data_dir)
    pgdata = data_dir / "pg"
    port_file = data_dir / "pg-port"
    if pg_port is None:
        pg_port = int(port_file.read_text()) if port_file.exists() else free_port()
    port_file.write_text(str(pg_port), encoding="utf-8")
    if os.geteuid() == 0:
        _check_reachable_by_pg_user(data_dir)
    cluster = PgCluster(pgdata, pg_port, values["LLMOPS_TEAM_PG_PASSWORD"])
    cluster.init()
    cluster.start()
    cluster.ensure_databases()
    return TeamServer(data_dir, cluster, host, port, policy_file, values["MLFLOW_AUTH_ADMIN_PASSWORD"],
                      values["MLFLOW_FLASK_SERVER_SECRET_KEY"], workers)


def _check_reachable_by_pg_user(path: Path) -> None:
    proc = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(path)], capture_output=True,
                          check=False, timeout=30)
    if proc.returncode != 0:
        raise ConfigError(f"running as root: the postgres user cannot reach {path} (a parent folder is private); "
                          "choose a --data-dir under /srv or /var/lib, or run as an ordinary user")


@contextmanager
def running_team(data_dir: Path, **kwargs: object) -> Iterator[TeamServer]:
    server = team(data_dir, **kwargs)  # type: ignore[arg-type]
    try:
        server.start()
        yield server
    finally:
        server.stop()
        server.cluster.stop()
