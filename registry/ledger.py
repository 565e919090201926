"""The alias ledger: an append-only table of every alias move, written in the same transaction as the move.

MLflow keeps no history of aliases, so "what served at time T" needs our own record. Where it lives:

* Embedded (a SQL tracking store used directly: sqlite/postgresql/mysql/mssql; the default): tables beside
  MLflow's own in the tracking database. One transaction takes the per-alias lock row, reads the alias,
  rewrites it through MLflow's own ORM model and inserts the ledger row; it commits both or neither.
* A tracking server (`http(s)://`) running the `llmops-auth` app: the server records every alias move itself,
  whoever makes it, in the same database transaction (`registry.server_ledger`); this process reads the
  ledger and records approvals over the server's REST endpoints (`RemoteLedger`) and never needs database
  credentials. A plain `mlflow server` (no ledger) is refused.

Concurrent moves of one alias serialize on a lock row; a move whose caller saw a different holder than
the one found under the lock is refused (`ConflictError`), so checks are never applied to a stale state.
"""

from __future__ import annotations

import getpass
import json
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError

from llmops.errors import AccessDeniedError, ConfigError, ConflictError, LlmopsError, NotFoundError

metadata = MetaData()

MOVES = Table(
    "llmops_alias_moves", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_name", String(256), nullable=False, index=True),
    Column("alias", String(256), nullable=False),
    Column("from_version", String(32)),
    Column("to_version", String(32)),
    Column("action", String(32), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("moved_at_ms", BigInteger, nullable=False),
    Column("reason", Text),
    Column("eval_run_id", String(64)),
    Column("checks", Text),
)
LOCKS = Table(
    "llmops_alias_locks", metadata,
    Column("model_name", String(256), primary_key=True),
    Column("alias", String(256), primary_key=True),
    Column("generation", Integer, nullable=False, default=0),
)
AUTHORS = Table(  # who created each version (the server records it; used by the self-approval rule)
    "llmops_version_authors", metadata,
    Column("model_name", String(256), primary_key=True),
    Column("version", String(32), primary_key=True),
    Column("author", String(256), nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
)
APPROVALS = Table(
    "llmops_approvals", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_name", String(256), nullable=False, index=True),
    Column("version", String(32), nullable=False),
    Column("approver", String(256), nullable=False),
    Column("note", Text),
    Column("approved_at_ms", BigInteger, nullable=False),
)

ANY = object()  # `expected_from` value meaning "whatever holds the alias now"


@dataclass(frozen=True)
class Move:
    model_name: str
    alias: str
    from_version: str | None
    to_version: str | None
    action: str
    actor: str
    moved_at_ms: int
    reason: str | None = None
    eval_run_id: str | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    id: int | None = None

    @property
    def moved_at(self) -> str:
        return datetime.fromtimestamp(self.moved_at_ms / 1000, tz=UTC).isoformat(timespec="milliseconds")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "moved_at": self.moved_at}

    def line(self) -> str:
        src = f"v{self.from_version}" if self.from_version else "-"
        dst = f"v{self.to_version}" if self.to_version else "-"
        why = f"  reason: {self.reason}" if self.reason else ""
        return f"#{self.id}  {self.moved_at}  @{self.alias}  {src} -> {dst}  {self.action} by {self.actor}{why}"


@dataclass(frozen=True)
class Approval:
    model_name: str
    version: str
    approver: str
    note: str | None
    approved_at_ms: int


def default_actor(configured: str | None = None) -> str:
    """Who is moving the alias: settings, else the tracking user, else the OS user."""
    return configured or os.environ.get("MLFLOW_TRACKING_USERNAME") or getpass.getuser()


def now_ms() -> int:
    return int(time.time() * 1000)


def _row_to_move(row: Any) -> Move:
    return Move(model_name=row.model_name, alias=row.alias, from_version=row.from_version,
                to_version=row.to_version, action=row.action, actor=row.actor, moved_at_ms=row.moved_at_ms,
                reason=row.reason, eval_run_id=row.eval_run_id, checks=json.loads(row.checks or "[]"), id=row.id)


def create_tables(engine: Engine) -> None:
    for attempt in range(3):  # two processes creating at once: the loser sees "already exists"
        try:
            metadata.create_all(engine, checkfirst=True)
            return
        except (OperationalError, IntegrityError, ProgrammingError):
            if attempt == 2:
                raise
            time.sleep(0.2)


class Ledger:
    """Alias moves and approvals in the tracking database this process writes itself (embedded mode)."""

    atomic = True
    remote = False

    def __init__(self, engine: Engine, client: Any, store: Any) -> None:
        self.engine = engine
        self.client = client
        self.store = store
        create_tables(engine)

    # -- moves ---------------------------------------------------------------------------------------
    def move(self, name: str, alias: str, to_version: str | None, *, action: str, actor: str,
             reason: str | None = None, eval_run_id: str | None = None,
             checks: list[dict[str, Any]] | None = None, expected_from: Any = ANY) -> Move:
        """Point `alias` at `to_version` (None deletes it) and append the move; both happen or neither."""
        self._ensure_lock_row(name, alias)
        draft = {"model_name": name, "alias": alias, "to_version": None if to_version is None else str(to_version),
                     "action": action, "actor": actor, "reason": reason, "eval_run_id": eval_run_id,
                     "checks": json.dumps(checks or [])}
        try:
            return self._move_atomic(draft, expected_from)
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", exc)).splitlines()[0]
            raise LlmopsError(f"the ledger could not record {name}@{alias} -> v{to_version}, so the alias was not "
                              f"moved: {reason}") from exc

    def _ensure_lock_row(self, name: str, alias: str) -> None:
        try:
            with self.engine.begin() as conn:
                exists = conn.execute(select(LOCKS.c.generation).where(
                    and_(LOCKS.c.model_name == name, LOCKS.c.alias == alias))).first()
                if exists is None:
                    conn.execute(insert(LOCKS).values(model_name=name, alias=alias, generation=0))
        except IntegrityError:
            pass  # another process created it first

    @staticmethod
    def _check_expected(name: str, alias: str, current: str | None, expected: Any) -> None:
        if expected is ANY or (current or None) == (None if expected is None else str(expected)):
            return
        seen = f"v{expected}" if expected else "nothing"
        now = f"v{current}" if current else "nothing"
        raise ConflictError(f"{name}@{alias} changed while this move was checked (expected {seen}, found {now}): "
                            "nothing moved; re-run to check against the new holder")

    def _lock(self, conn_or_session: Any, name: str, alias: str) -> None:
        """First write of the transaction: a row lock (SQLite: the write lock) held until commit."""
        conn_or_session.execute(update(LOCKS).where(and_(LOCKS.c.model_name == name, LOCKS.c.alias == alias))
                                .values(generation=LOCKS.c.generation + 1))

    def _move_atomic(self, draft: dict[str, Any], expected_from: Any) -> Move:
        from mlflow.exceptions import MlflowException
        from mlflow.store.model_registry.dbmodels.models import SqlRegisteredModelAlias

        name, alias, to_version = draft["model_name"], draft["alias"], draft["to_version"]
        try:
            with self.store.ManagedSessionMaker(read_only=False) as session:
                self._lock(session, name, alias)
                existing = self.store._get_registered_model_alias(session, name, alias)
                current = str(existing.version) if existing is not None else None
                self._check_expected(name, alias, current, expected_from)
                if to_version is None:
                    if existing is not None:
                        session.delete(existing)
                else:
                    version = self.store._get_sql_model_version(session, name, int(to_version))
                    session.merge(SqlRegisteredModelAlias(workspace=version.workspace, name=name, alias=alias,
                                                          version=int(to_version)))
                row = {**draft, "from_version": current, "moved_at_ms": now_ms()}
                row_id = session.execute(insert(MOVES).values(**row)).inserted_primary_key[0]
        except MlflowException as exc:
            if isinstance(exc.__cause__, LlmopsError):  # MLflow's session wraps whatever we raised inside it
                raise exc.__cause__ from None
            if exc.error_code == "TEMPORARILY_UNAVAILABLE" and "locked" in str(exc.message):
                raise ConflictError(f"{name}@{alias} is being moved by another process (database locked); "
                                    "nothing moved; retry") from exc
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise NotFoundError(f"model {name!r} version {to_version} not found") from exc
            if isinstance(exc.__cause__, SQLAlchemyError):
                raise exc.__cause__ from exc
            raise
        return _row_to_move(_Row(**row, id=row_id))

    # -- reads ---------------------------------------------------------------------------------------
    def moves(self, name: str, alias: str | None = None, version: str | None = None) -> list[Move]:
        query = select(MOVES).where(MOVES.c.model_name == name)
        if alias:
            query = query.where(MOVES.c.alias == alias)
        if version:
            query = query.where((MOVES.c.to_version == str(version)) | (MOVES.c.from_version == str(version)))
        with self.engine.connect() as conn:
            return [_row_to_move(row) for row in conn.execute(query.order_by(MOVES.c.id))]

    def held(self, name: str, alias: str, version: str) -> bool:
        """Whether the ledger ever pointed `alias` at `version`."""
        return any(m.to_version == str(version) for m in self.moves(name, alias))

    def at(self, name: str, alias: str, when_ms: int) -> Move | None:
        """The last move of `alias` at or before `when_ms`: its `to_version` is what the alias pointed at."""
        earlier = [m for m in self.moves(name, alias) if m.moved_at_ms <= when_ms]
        return earlier[-1] if earlier else None

    # -- approvals -----------------------------------------------------------------------------------
    def approve(self, name: str, version: str, approver: str | None, note: str | None) -> Approval:
        if not approver or not approver.strip():
            raise ConfigError("an approval needs --by NAME (with a tracking server, the authenticated user)")
        row = {"model_name": name, "version": str(version), "approver": approver, "note": note, "approved_at_ms": now_ms()}
        with self.engine.begin() as conn:
            conn.execute(insert(APPROVALS).values(**row))
        return Approval(**row)

    def approvals(self, name: str, version: str) -> list[Approval]:
        query = (select(APPROVALS).where(and_(APPROVALS.c.model_name == name, APPROVALS.c.version == str(version)))
                 .order_by(APPROVALS.c.id))
        with self.engine.connect() as conn:
            return [Approval(r.model_name, r.version, r.approver, r.note, r.approved_at_ms)
                    for r in conn.execute(query)]


class _Row:
    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


def open_ledger(ledger_uri: str | None, client: Any = None) -> Ledger | RemoteLedger:
    """The ledger beside the registry this process uses (see the module docstring for where)."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore
    from mlflow.tracking import MlflowClient

    client = client or MlflowClient()
    store = client._get_registry_client().store
    registry_uri = client._registry_uri
    if ledger_uri is not None and ledger_uri != registry_uri:
        raise ConfigError(f"registry.ledger_uri ({ledger_uri}) is no longer used: the ledger lives beside the "
                          f"registry ({registry_uri}); with a tracking server the server records it. Unset it.")
    if isinstance(store, SqlAlchemyStore):
        try:
            return Ledger(store.engine, client, store=store)
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", exc)).splitlines()[0]
            raise ConfigError(f"cannot create the alias ledger in {registry_uri}: {reason}") from exc
    if hasattr(store, "get_host_creds"):
        return RemoteLedger(store.get_host_creds, registry_uri)
    raise ConfigError(f"the alias ledger needs a SQL store or an llmops-auth tracking server; the registry "
                      f"{registry_uri} is neither")


def point_new_version(name: str, alias: str, version: str, ledger_uri: str | None = None,
                      actor: str | None = None) -> Move:
    """Registration's first alias (`dev`) goes through the ledger like every other move."""
    return open_ledger(ledger_uri).move(name, alias, str(version), action="register", actor=default_actor(actor),
                                        reason="new version registered")


# -- the ledger of a tracking server -----------------------------------------------------------------------
REASON_HEADER = "X-Llmops-Reason"
ACTION_HEADER = "X-Llmops-Action"
EXPECTED_HEADER = "X-Llmops-Expected-Version"
EVAL_RUN_HEADER = "X-Llmops-Eval-Run-Id"
CHECKS_HEADER = "X-Llmops-Checks"
MOVE_HEADER = "X-Llmops-Move"
MAX_CHECKS_HEADER = 6000  # bytes of base64; the server refuses more (HTTP servers cap header sizes)
API = "/api/2.0/llmops/registry"


def encode_checks(checks: list[dict[str, Any]] | None) -> str:
    """Checks as base64url JSON for a header; details are shortened until it fits."""
    import base64

    items = [dict(c) for c in checks or []]
    limit = 400
    while True:
        raw = json.dumps(items, separators=(",", ":"), default=str).encode()
        encoded = base64.urlsafe_b64encode(raw).decode()
        if len(encoded) <= MAX_CHECKS_HEADER or limit < 20:
            return encoded[:MAX_CHECKS_HEADER] if len(encoded) > MAX_CHECKS_HEADER else encoded
        items = [{**c, "detail": str(c.get("detail", ""))[:limit]} for c in items]
        limit //= 2


def _header_text(value: str | None) -> str | None:
    """Headers are latin-1: non-ASCII text travels percent-encoded (the server decodes it)."""
    from urllib.parse import quote

    return None if value is None else quote(value, safe=" !#$&'()*+,/:;=?@[]~-._")


class RemoteLedger:
    """The ledger a tracking server running `llmops-auth` keeps; read and appended over its REST endpoints.

    Moves go through MLflow's own alias endpoints with the reason, action, expected holder, eval run and checks
    as headers; the server records them with the *authenticated* user in the move's transaction.
    """

    atomic = True
    remote = True

    def __init__(self, get_host_creds: Any, uri: str) -> None:
        self.get_host_creds = get_host_creds
        self.uri = uri
        self._checked = False

    def _call(self, method: str, endpoint: str, *, what: str, headers: dict[str, str] | None = None,
              **kwargs: Any) -> Any:
        from mlflow.exceptions import MlflowException
        from mlflow.utils.rest_utils import http_request

        try:
            response = http_request(self.get_host_creds(), endpoint, method, extra_headers=headers,
                                    raise_on_status=False, **kwargs)
        except MlflowException as exc:
            raise ConfigError(f"cannot reach the tracking server {self.uri}: {exc.message.splitlines()[0]}") from exc
        if response.status_code < 300:
            return response
        try:
            body = response.json()
            message = body.get("message") or response.text
            code = body.get("error_code", "")
        except ValueError:
            message, code = response.text.strip() or response.reason, ""
        message = str(message).splitlines()[0] if message else f"HTTP {response.status_code}"
        if response.status_code in (401, 403):
            raise AccessDeniedError(f"the tracking server refused to {what}: {message}")
        if response.status_code == 409 or code in ("RESOURCE_CONFLICT", "ABORTED"):
            raise ConflictError(message)
        if response.status_code == 404 or code == "RESOURCE_DOES_NOT_EXIST":
            if endpoint.startswith(API) and "llmops" not in message:
                raise ConfigError(f"the tracking server {self.uri} does not run the llmops-auth app (no ledger "
                                  "endpoints): start it with `mlflow server --app-name llmops-auth`")
            raise NotFoundError(message)
        if response.status_code == 400:
            raise ConfigError(f"the tracking server refused to {what}: {message}")
        raise LlmopsError(f"the tracking server failed to {what} (HTTP {response.status_code}): {message}")

    def _ensure_server_ledger(self) -> None:
        if not self._checked:
            self._call("GET", f"{API}/info", what="describe its ledger")
            self._checked = True

    # -- moves ---------------------------------------------------------------------------------------
    def move(self, name: str, alias: str, to_version: str | None, *, action: str, actor: str | None = None,
             reason: str | None = None, eval_run_id: str | None = None,
             checks: list[dict[str, Any]] | None = None, expected_from: Any = ANY) -> Move:
        """Point `alias` at `to_version` (None deletes it); the server records it atomically. `actor` is
        ignored: the server records the authenticated user."""
        self._ensure_server_ledger()
        headers = {ACTION_HEADER: action}
        if reason:
            headers[REASON_HEADER] = _header_text(reason)
        if eval_run_id:
            headers[EVAL_RUN_HEADER] = eval_run_id
        if checks:
            headers[CHECKS_HEADER] = encode_checks(checks)
        if expected_from is not ANY:
            headers[EXPECTED_HEADER] = "none" if expected_from is None else str(expected_from)
        body: dict[str, Any] = {"name": name, "alias": alias}
        what = f"move {name}@{alias}"
        if to_version is None:
            response = self._call("DELETE", "/api/2.0/mlflow/registered-models/alias", what=what, headers=headers,
                                  json=body)
        else:
            body["version"] = str(to_version)
            response = self._call("POST", "/api/2.0/mlflow/registered-models/alias", what=what, headers=headers,
                                  json=body)
        recorded = response.headers.get(MOVE_HEADER)
        if not recorded:
            raise LlmopsError(f"the tracking server moved {name}@{alias} but returned no ledger record: is it "
                              "running the llmops-auth app?")
        return _move_from_dict(json.loads(recorded))

    # -- reads ---------------------------------------------------------------------------------------
    def moves(self, name: str, alias: str | None = None, version: str | None = None) -> list[Move]:
        params = {"name": name, **({"alias": alias} if alias else {}), **({"version": str(version)} if version else {})}
        response = self._call("GET", f"{API}/alias-moves", what=f"read the ledger of {name}", params=params)
        return [_move_from_dict(m) for m in response.json().get("moves", [])]

    def held(self, name: str, alias: str, version: str) -> bool:
        return any(m.to_version == str(version) for m in self.moves(name, alias))

    def at(self, name: str, alias: str, when_ms: int) -> Move | None:
        earlier = [m for m in self.moves(name, alias) if m.moved_at_ms <= when_ms]
        return earlier[-1] if earlier else None

    # -- approvals -----------------------------------------------------------------------------------
    def approve(self, name: str, version: str, approver: str | None, note: str | None) -> Approval:
        """Recorded by the server for the authenticated user; `approver`, when given, must be that user."""
        user = getattr(self.get_host_creds(), "username", None)
        if approver and approver.strip() and user and approver.strip() != user:
            raise ConfigError(f"--by {approver!r} is not you: the server records approvals as the authenticated "
                              f"user ({user!r})")
        response = self._call("POST", f"{API}/approvals", what=f"record an approval of {name} v{version}",
                              json={"name": name, "version": str(version), "note": note or ""})
        approval = _approval_from_dict(response.json()["approval"])
        if approver and approver.strip() and approver.strip() != approval.approver:
            raise ConfigError(f"--by {approver!r} is not you: the server recorded the approval as "
                              f"{approval.approver!r}, the authenticated user")
        return approval

    def approvals(self, name: str, version: str) -> list[Approval]:
        response = self._call("GET", f"{API}/approvals", what=f"read approvals of {name} v{version}",
                              params={"name": name, "version": str(version)})
        return [_approval_from_dict(a) for a in response.json().get("approvals", [])]


def _move_from_dict(data: dict[str, Any]) -> Move:
    fields = {k: data.get(k) for k in ("model_name", "alias", "from_version", "to_version", "action", "actor",
                                       "moved_at_ms", "reason", "eval_run_id", "id")}
    return Move(**fields, checks=list(data.get("checks") or []))


def _approval_from_dict(data: dict[str, Any]) -> Approval:
    return Approval(data["model_name"], data["version"], data["approver"], data.get("note"), data["approved_at_ms"])
