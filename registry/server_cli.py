"""`llmops server`: the team tracking server (PostgreSQL + `mlflow server --app-name llmops-auth`) in one command."""

from __future__ import annotations

import signal
from pathlib import Path

import typer

from llmops.cli_support import echo, setting_option

server_app = typer.Typer(no_args_is_help=True)

DataDir = typer.Option(Path(".llmops-team"), "--data-dir", help="Cluster, secrets, auth config and artifacts.")


@server_app.command("start")
def start_command(
    team: bool = typer.Option(False, "--team", help="PostgreSQL + llmops-auth + proxied artifacts (required)."),
    data_dir: Path = DataDir,
    host: str = typer.Option("127.0.0.1", help="Address the tracking server listens on."),
    port: int = typer.Option(5000, help="Tracking server port."),
    pg_port: int = typer.Option(None, help="PostgreSQL port (default: chosen once, kept in DATA_DIR/pg-port)."),
    workers: int = typer.Option(2, min=1, help="Server worker processes."),
    policy: str = setting_option("registry.policy_file", "Promotion policy YAML.", "--policy"),
) -> None:
    """Start PostgreSQL and the tracking server in the foreground; Ctrl-C stops both."""
    from llmops.errors import ConfigError
    from llmops.settings import load_settings
    from registry.team import team as make_team

    if not team:
        raise ConfigError("only the team setup is supported here: llmops server start --team")
    policy_file = policy or load_settings().registry.policy_file
    server = make_team(data_dir, host=host, port=port, pg_port=pg_port, policy_file=policy_file, workers=workers)
    stopping = {"now": False}

    def stop(*_args: object) -> None:
        stopping["now"] = True

    signal.signal(signal.SIGTERM, stop)
    try:
        server.start()
        echo(f"tracking server {server.url} (PostgreSQL 127.0.0.1:{server.cluster.port}, data in {data_dir})")
        echo(f"admin user 'admin', password: MLFLOW_AUTH_ADMIN_PASSWORD in {data_dir / 'team.env'}")
        echo(f"clients: export MLFLOW_TRACKING_URI={server.url} MLFLOW_TRACKING_USERNAME=... "
             "MLFLOW_TRACKING_PASSWORD=...")
        while not stopping["now"] and server.process is not None and server.process.poll() is None:
            try:
                server.process.wait(timeout=1)
            except Exception:  # noqa: BLE001 - the timeout: keep waiting
                continue
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        server.cluster.stop()
        echo("stopped")


@server_app.command("stop")
def stop_command(data_dir: Path = DataDir) -> None:
    """Stop the PostgreSQL cluster of a team data dir (after a server that was killed)."""
    from llmops.errors import NotFoundError
    from registry.team import PgCluster, team_secrets

    pgdata = (data_dir / "pg").resolve()
    if not (pgdata / "PG_VERSION").exists():
        raise NotFoundError(f"no team cluster in {data_dir}")
    port = int((data_dir / "pg-port").read_text()) if (data_dir / "pg-port").exists() else 0
    PgCluster(pgdata, port, team_secrets(data_dir.resolve())["LLMOPS_TEAM_PG_PASSWORD"]).stop()
    echo(f"stopped the PostgreSQL cluster in {pgdata}")
