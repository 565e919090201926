"""The alias ledger: an append-only table of every alias move, written in the same operation as the move.

MLflow keeps no history of aliases, so "what served at time T" needs our own record. Where it lives:

* SQL tracking store (sqlite/postgresql/mysql/mssql, the default): tables beside MLflow's own in the tracking
  database. One transaction takes the per-alias lock row, reads the alias, rewrites it through MLflow's own
  ORM model and inserts the ledger row; it commits both or neither.
* Any other store (an MLflow server over http): `registry.ledger_uri` must name a database. The lock row is
  held in that database while the alias is set through the REST API; the ledger row is committed after; if
  that commit fails the alias is set back. A crash between the two is the only window (documented).

Concurrent moves of one alias serialize on the lock row; a move whose caller saw a different holder than
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
    create_engine,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from llmops.errors import ConfigError, ConflictError, LlmopsError, NotFoundError

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
DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


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


def _is_db_uri(uri: str | None) -> bool:
    return bool(uri) and uri.split(":", 1)[0].split("+", 1)[0] in DB_SCHEMES


def _row_to_move(row: Any) -> Move:
    return Move(model_name=row.model_name, alias=row.alias, from_version=row.from_version,
                to_version=row.to_version, action=row.action, actor=row.actor, moved_at_ms=row.moved_at_ms,
                reason=row.reason, eval_run_id=row.eval_run_id, checks=json.loads(row.checks or "[]"), id=row.id)


class Ledger:
    """Alias moves and approvals. `store` set: atomic mode in the tracking DB; else compensating mode."""

    def __init__(self, engine: Engine, client: Any, store: Any = None) -> None:
        self.engine = engine
        self.client = client
        self.store = store
        self._create_tables()

    @property
    def atomic(self) -> bool:
        return self.store is not None

    def _create_tables(self) -> None:
        for attempt in range(3):  # two processes creating at once: the loser sees "already exists"
            try:
                metadata.create_all(self.engine, checkfirst=True)
                return
            except OperationalError:
                if attempt == 2:
                    raise
                time.sleep(0.2)

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
            if self.atomic:
                return self._move_atomic(draft, expected_from)
            return self._move_compensating(draft, expected_from)
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

    def _current_via_client(self, name: str, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException as exc:
            if "not found" in str(exc.message).lower() or exc.error_code in ("INVALID_PARAMETER_VALUE",
                                                                              "RESOURCE_DOES_NOT_EXIST"):
                return None
            raise

    def _point(self, name: str, alias: str, version: str | None) -> None:
        if version is None:
            self.client.delete_registered_model_alias(name, alias)
        else:
            self.client.set_registered_model_alias(name, alias, str(version))

    def _move_compensating(self, draft: dict[str, Any], expected_from: Any) -> Move:
        name, alias, to_version = draft["model_name"], draft["alias"], draft["to_version"]
        with self.engine.connect() as conn:
            tx = conn.begin()
            try:
                self._lock(conn, name, alias)
                current = self._current_via_client(name, alias)
                self._check_expected(name, alias, current, expected_from)
                if to_version is not None or current is not None:
                    self._point(name, alias, to_version)  # refused -> rollback below, nothing moved
            except BaseException:
                tx.rollback()
                raise
            row = {**draft, "from_version": current, "moved_at_ms": now_ms()}
            try:
                row_id = conn.execute(insert(MOVES).values(**row)).inserted_primary_key[0]
                tx.commit()
            except BaseException:
                tx.rollback()
                self._point(name, alias, current)  # the ledger could not record it: undo the move
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
    def approve(self, name: str, version: str, approver: str, note: str | None) -> Approval:
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


def open_ledger(ledger_uri: str | None, client: Any = None) -> Ledger:
    """The ledger beside the registry this process uses (see the module docstring for where)."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore
    from mlflow.tracking import MlflowClient

    client = client or MlflowClient()
    store = client._get_registry_client().store
    registry_uri = client._registry_uri
    if isinstance(store, SqlAlchemyStore) and (ledger_uri is None or ledger_uri == registry_uri):
        return Ledger(store.engine, client, store=store)
    if ledger_uri is None:
        raise ConfigError(f"the alias ledger needs a database: the registry {registry_uri} is not one; "
                          "set registry.ledger_uri (e.g. LLMOPS_REGISTRY__LEDGER_URI=sqlite:////path/ledger.db)")
    if not _is_db_uri(ledger_uri):
        raise ConfigError(f"registry.ledger_uri must be a database URL (sqlite:///..., postgresql://...), "
                          f"got {ledger_uri!r}")
    return Ledger(create_engine(ledger_uri), client)


def point_new_version(name: str, alias: str, version: str, ledger_uri: str | None = None,
                      actor: str | None = None) -> Move:
    """Registration's first alias (`dev`) goes through the ledger like every other move."""
    return open_ledger(ledger_uri).move(name, alias, str(version), action="register", actor=default_actor(actor),
                                        reason="new version registered")
