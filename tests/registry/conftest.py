"""Fixtures for release management: one SQLite store per module and a factory of tiny registered versions.

A tiny models-from-code pyfunc stands in for the chain (the checks read tags, eval runs and the ledger, not
the chain itself). Its eval run is an evaluation's shape made by evaluation's own functions from per-row scores
a test chooses (every answered row scores `quality`, the random baseline 0.12), so gates - absolute, against the
baselines and against the champion on the same rows - pass or fail on purpose. The real steps are tested end to
end in tests/foundation and tests/registry/test_release.py.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = '''
import mlflow


class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return [{"answer": "echo: " + str(q)} for q in model_input["question"]]


mlflow.models.set_model(Echo())
'''
GOOD = 0.30  # answered token F1 of a good version
DIGEST = "digest-current"
LINEAGE = "lineage-1"
EVAL_ROWS = 40


@pytest.fixture(scope="module")
def module_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store")


@pytest.fixture
def store(module_store: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """This module's SQLite store, active for this test and its child processes."""
    import mlflow

    uri = f"sqlite:///{module_store / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("LLMOPS_MLFLOW__EXPERIMENT_NAME", "llmops")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment("llmops")
    yield uri
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture(scope="module")
def tiny_model_file(module_store: Path) -> Path:
    path = module_store / "tiny_model.py"
    path.write_text(TINY_MODEL, encoding="utf-8")
    return path


@pytest.fixture
def prepare_run(store: str) -> Callable[..., str]:
    """prepare_run(digest) -> a finished prepare_data run: what 'the current eval dataset' means."""
    import mlflow

    def make(digest: str = DIGEST, lineage: str = LINEAGE) -> str:
        with mlflow.start_run(run_name="prepare_data") as run:
            mlflow.set_tags({"llmops.step": "prepare_data", "llmops.dataset_digest": digest,
                             "llmops.dataset_lineage": lineage})
        return run.info.run_id

    return make


def log_eval_run(quality: float, digest: str = DIGEST, lineage: str = LINEAGE, coverage: float = 0.5,
                 n_rows: int = EVAL_ROWS, n_train: int = 200) -> str:
    """A finished eval run: rows table, metrics computed by evaluation's functions, the dataset's identity."""
    import mlflow
    import numpy as np
    import pandas as pd

    from evaluation.baselines import BaselineRows, always_abstain, relative_metrics, utility_rows
    from evaluation.run import ROWS_ARTIFACT, answered_metrics

    abstained = np.arange(n_rows) >= round(coverage * n_rows)
    f1 = np.where(abstained, 0.0, quality)
    rows = pd.DataFrame({"row_id": [f"r{i}" for i in range(n_rows)], "token_f1": f1, "rouge_l": f1 * 2 / 3,
                         "cited": 1.0, "response_abstained": abstained})
    rows["utility"] = utility_rows(f1, abstained, 0.2)
    random = BaselineRows("random_answer", np.full(n_rows, 0.12), np.full(n_rows, 0.08),
                          np.zeros(n_rows, dtype=bool), utility_rows(np.full(n_rows, 0.12), np.zeros(n_rows, bool),
                                                                     0.2))
    metrics = {**answered_metrics(rows), "cited/mean": 1.0, "n_rows": float(n_rows), "n_train": float(n_train),
               **relative_metrics(rows, [random, always_abstain(n_rows, 0.2)], 0.2, samples=200, confidence=0.95,
                                  seed=0)}
    with mlflow.start_run(run_name="evaluate") as run:
        mlflow.log_params({"eval_digest": f"rows-{digest}", "dataset_digest": digest, "dataset_lineage": lineage})
        mlflow.log_metrics(metrics)
        mlflow.log_table(rows, artifact_file=ROWS_ARTIFACT)
        mlflow.set_tags({"llmops.step": "evaluate", "llmops.dataset_digest": digest})
    return run.info.run_id


@pytest.fixture
def make_version(store: str, tiny_model_file: Path) -> Callable[..., str]:
    """make_version(name, quality=GOOD, digest=DIGEST, drop=()) -> version, with bundle tags and alias dev."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from registry.release import BUNDLE_KEYS

    def make(name: str, quality: float = GOOD, digest: str = DIGEST, drop: tuple[str, ...] = (),
             lineage: str = LINEAGE, **eval_kwargs) -> str:
        eval_run_id = log_eval_run(quality, digest, lineage, **eval_kwargs)
        with mlflow.start_run(run_name="register"):
            info = mlflow.pyfunc.log_model(name="model", python_model=str(tiny_model_file),
                                           pip_requirements=["mlflow"], registered_model_name=name)
        version = str(info.registered_model_version)
        client = MlflowClient()
        bundle = {"prompt_name": "so-qa", "prompt_version": "1", "instruction_hash": "abc123",
                  "dataset_digest": digest, "dataset_lineage": lineage, "eval_run_id": eval_run_id,
                  "tune_run_id": "t" * 32, "chain": "qa_chain"}
        for key in BUNDLE_KEYS:  # whatever the register step promises, so the bundle check is the real one
            if key not in drop:
                client.set_model_version_tag(name, version, f"llmops.{key}", bundle.get(key, f"{key}-1"))
        client.set_registered_model_alias(name, "dev", version)
        return version

    return make


@pytest.fixture
def policy_file(tmp_path: Path) -> Callable[..., Path]:
    """Write a copy of registry/policy.yaml with some keys replaced (top-level and aliases.*)."""
    import yaml

    base = yaml.safe_load((REPO / "registry" / "policy.yaml").read_text(encoding="utf-8"))

    def write(aliases: dict | None = None, **top: object) -> Path:
        data = {**base, **top}
        if aliases:
            data["aliases"] = {**base["aliases"], **{k: {**base["aliases"].get(k, {}), **v}
                                                     for k, v in aliases.items()}}
        path = tmp_path / "policy.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return path

    return write


@pytest.fixture
def cli(capsys: pytest.CaptureFixture) -> Callable[..., tuple[int, str, str]]:
    """cli(*args) runs `llmops ARGS` in this process: (exit code, stdout, stderr)."""
    from tests.support.cli import run_cli

    return lambda *args: run_cli(capsys, *args)


LLMOPS = str(Path(sys.executable).parent / "llmops")


@pytest.fixture
def fast_policy(policy_file) -> Path:
    """The shipped policy without the (slow, separately tested) fresh-process validation."""
    return policy_file(aliases={"staging": {"infra_validation": False}})


@pytest.fixture
def alias_version(store: str) -> Callable[[str, str], str | None]:
    """The version an alias points at now, or None when the alias is not set."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    def version(name: str, alias: str) -> str | None:
        try:
            return str(MlflowClient().get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    return version


# -- the team server: PostgreSQL + `mlflow server --app-name llmops-auth`, one per test session --------------
ADMIN_PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"
PASSWORD = "user-password-123456"
# user -> (policy role, what MLflow's permissions give them)
TEAM_USERS = {
    "rm-user": "release-managers",   # may move production
    "ml-user": "ml-team",            # may move dev/staging only
    "outsider": None,                # MANAGE on an unrelated model only
    "reader": None,                  # MLflow's default READ only
}
GUARDED_MODEL, GUARDED_PROMPT, OTHER_MODEL = "guarded-model", "guarded-prompt", "other-model"


def _team_policy(path: Path) -> Path:
    import yaml

    data = yaml.safe_load((REPO / "registry" / "policy.yaml").read_text(encoding="utf-8"))
    data["rights"]["roles"] = {"release-managers": ["rm-user"], "ml-team": ["ml-user"]}
    data["rights"]["self_approval"] = "forbid"
    data["aliases"]["staging"] = {"requires_prior": [], "gates": None, "infra_validation": False, "approvals": 0}
    data["aliases"]["production"] = {"requires_prior": ["staging"], "gates": None, "approvals": 1}
    data["dataset"] = {"require_current": False}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


class Team:
    """Handles on the session's team server: URL, users, REST calls, a snapshot of everything protected."""

    def __init__(self, server, data_dir: Path, policy: Path, tiny_model: Path) -> None:
        self.server = server
        self.url = server.url
        self.data_dir = data_dir
        self.policy = policy
        self.tiny_model = tiny_model
        self.admin_password = server.admin_password
        self.artifacts = data_dir / "artifacts"

    def password(self, user: str) -> str:
        return self.admin_password if user == "admin" else PASSWORD

    def as_user(self, user: str):
        """Context manager: MLflow's client in this process talks to the server as `user`."""
        from tests.support.mlflow_scope import mlflow_pointed_at

        return mlflow_pointed_at(self.url, MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=self.password(user),
                                 MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.url, self.url)

    def rest(self, user: str, method: str, path: str, **kwargs):
        import httpx

        return httpx.request(method, f"{self.url}{path}", auth=(user, self.password(user)), timeout=60, **kwargs)

    def engine(self):
        from sqlalchemy import create_engine

        return create_engine(self.server.cluster.url("mlflow"))

    def env(self, user: str) -> dict[str, str]:
        """Environment for an `llmops` process acting as `user` against the server."""
        return {"MLFLOW_TRACKING_URI": self.url, "MLFLOW_TRACKING_USERNAME": user,
                "MLFLOW_TRACKING_PASSWORD": self.password(user), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                "LLMOPS_REGISTRY__POLICY_FILE": str(self.policy), "LLMOPS_MLFLOW__EXPERIMENT_NAME": "llmops"}

    def snapshot(self, *names: str) -> dict:
        """Everything a bypass could change, read from the database itself: models, aliases, versions (stage,
        source, storage), version and model tags (a prompt's template is a version tag), every artifact
        file's hash, ledger and approval rows."""
        import hashlib

        from sqlalchemy import bindparam, text

        names = list(names or (GUARDED_MODEL, GUARDED_PROMPT))
        queries = {
            "models": "SELECT name FROM registered_models WHERE name IN :n ORDER BY 1",
            "aliases": "SELECT name, alias, version FROM registered_model_aliases WHERE name IN :n ORDER BY 1, 2",
            "versions": "SELECT name, version, current_stage, source, storage_location, run_id FROM model_versions "
                        "WHERE name IN :n ORDER BY 1, 2",
            "version_tags": "SELECT name, version, key, value FROM model_version_tags WHERE name IN :n "
                            "ORDER BY 1, 2, 3",
            # `_mlflow_experiment_ids` is MLflow's own note of which experiments loaded a prompt, written (in a
            # background thread) by every load_prompt: reading is not a change
            "model_tags": "SELECT name, key, value FROM registered_model_tags WHERE name IN :n "
                          "AND key != '_mlflow_experiment_ids' ORDER BY 1, 2",
            "ledger": "SELECT id, model_name, alias, from_version, to_version, actor FROM llmops_alias_moves "
                      "ORDER BY id",
            "approvals": "SELECT model_name, version, approver FROM llmops_approvals ORDER BY id",
        }
        state: dict = {}
        with self.engine().connect() as conn:
            for key, sql in queries.items():
                query = text(sql)
                if ":n" in sql:
                    query = query.bindparams(bindparam("n", expanding=True))
                    state[key] = [tuple(r) for r in conn.execute(query, {"n": names})]
                else:
                    state[key] = [tuple(r) for r in conn.execute(query)]
        state["artifacts"] = {str(p.relative_to(self.artifacts)): hashlib.sha256(p.read_bytes()).hexdigest()
                              for p in sorted(self.artifacts.rglob("*")) if p.is_file()}
        return state

    def log_version(self, name: str, tags: dict[str, str] | None = None) -> str:
        """As admin: a tiny pyfunc logged through the artifact proxy and registered as a new version of `name`."""
        import mlflow

        with self.as_user("admin"):
            mlflow.set_experiment("llmops")
            with mlflow.start_run(run_name="register"):
                info = mlflow.pyfunc.log_model(name="model", python_model=str(self.tiny_model),
                                               pip_requirements=["mlflow"], registered_model_name=name)
            version = str(info.registered_model_version)
            client = self.client()
            for key, value in (tags or {}).items():
                client.set_model_version_tag(name, version, key, value)
        return version

    def bundle(self, eval_run_id: str) -> dict[str, str]:
        from registry.release import BUNDLE_KEYS

        values = {"eval_run_id": eval_run_id, "dataset_digest": "d1", "dataset_lineage": "l1"}
        return {f"llmops.{key}": values.get(key, f"{key}-1") for key in BUNDLE_KEYS}


@pytest.fixture(scope="session")
def team_server(tmp_path_factory: pytest.TempPathFactory):
    """PostgreSQL in a private data dir, the team server on it (2 workers), users in every role, a guarded
    model (production v1, staging v2, with real artifacts), a guarded prompt (production v1) and an
    unrelated model. Shared by every module of this session: tests restore what they change."""
    import tempfile

    from mlflow.server import get_app_client

    from registry.team import _hand_to_pg_user, team

    # PostgreSQL runs as the `postgres` user when we are root: its folder lives outside pytest's private tmp
    data_dir = Path(tempfile.mkdtemp(prefix="llmops-team-"))
    data_dir.chmod(0o755)
    _hand_to_pg_user(data_dir)
    root = tmp_path_factory.mktemp("team")
    policy = _team_policy(root / "policy.yaml")
    tiny = root / "tiny_model.py"
    tiny.write_text(TINY_MODEL, encoding="utf-8")
    server = team(data_dir, port=_free_port(), policy_file=str(policy), workers=2)
    try:
        server.start(log_path=root / "server.log")
        kit = Team(server, data_dir, policy, tiny)
        with kit.as_user("admin"):
            _seed_team(kit, get_app_client("basic-auth", tracking_uri=kit.url))
        yield kit
    finally:
        server.stop()
        server.cluster.stop()
        import shutil

        shutil.rmtree(data_dir, ignore_errors=True)


def _free_port() -> int:
    from registry.team import free_port

    return free_port()


def _seed_team(kit: Team, auth) -> None:
    import mlflow

    client = kit.client()
    experiment = client.create_experiment("llmops")
    eval_run = client.create_run(experiment)
    client.set_tag(eval_run.info.run_id, "llmops.dataset_digest", "d1")
    client.log_param(eval_run.info.run_id, "dataset_digest", "d1")
    client.log_param(eval_run.info.run_id, "dataset_lineage", "l1")
    client.set_terminated(eval_run.info.run_id)
    kit.eval_run_id = eval_run.info.run_id
    client.create_registered_model(GUARDED_MODEL)
    client.create_registered_model(OTHER_MODEL)
    for _ in range(3):
        kit.log_version(GUARDED_MODEL, kit.bundle(eval_run.info.run_id))
    kit.log_version(OTHER_MODEL, kit.bundle(eval_run.info.run_id))
    mlflow.genai.register_prompt(GUARDED_PROMPT, "Answer: {{question}}")
    mlflow.genai.register_prompt(GUARDED_PROMPT, "Answer briefly: {{question}}")
    for user, _role in TEAM_USERS.items():
        auth.create_user(user, PASSWORD)
        if user in ("rm-user", "ml-user"):
            for resource_type, name in (("registered_model", GUARDED_MODEL), ("prompt", GUARDED_PROMPT)):
                auth.grant_user_permission(username=user, resource_type=resource_type, resource_id=name,
                                           permission="MANAGE")
            auth.grant_user_permission(username=user, resource_type="experiment", resource_id=experiment,
                                       permission="MANAGE")
    auth.grant_user_permission(username="outsider", resource_type="registered_model", resource_id=OTHER_MODEL,
                               permission="MANAGE")
    # approvals for production by someone other than the release manager who will move it
    for version in ("1", "2", "3"):
        approved = kit.rest("ml-user", "POST", "/api/2.0/llmops/registry/approvals",
                            json={"name": GUARDED_MODEL, "version": version, "note": "seed"})
        assert approved.status_code == 200, approved.text
    client.set_registered_model_alias(GUARDED_MODEL, "staging", "1")
    client.set_registered_model_alias(GUARDED_MODEL, "production", "1")
    client.set_registered_model_alias(GUARDED_MODEL, "staging", "2")
    mlflow.genai.set_prompt_alias(GUARDED_PROMPT, "production", 1)
