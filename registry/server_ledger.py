"""The ledger kept by the `llmops-auth` server: every alias move, whoever makes it, in the move's own transaction.

MLflow's handlers all reach the registry through one store object (`handlers._get_model_registry_store()`).
The server puts `LedgeredRegistry` in front of that store's class: setting or deleting an alias, deleting a
version or a model (which removes its aliases) and renaming a model (which carries them away) each run in one
database transaction that

1. locks the model's row in `llmops_alias_locks` (PostgreSQL: a row lock; SQLite: the write lock), so moves of
   one model serialize across threads, workers and server replicas;
2. reads the aliases as they are under the lock; refuses (409) a move whose client said it expected another
   holder (`X-Llmops-Expected-Version`), and re-checks the policy's delete right for every alias a cascade
   would remove (a guard check before the transaction could race with a move onto that version);
3. lets MLflow's own method do the change in the same session (the store's session maker is made re-entrant
   for the duration, so MLflow's code joins our transaction instead of opening its own);
4. inserts one ledger row per alias that changed: authenticated user, server time, from/to version, and what
   the client declared (reason, action, eval run, checks) from the `X-Llmops-*` headers.

Commit takes both or neither, so a client killed at any moment, a raw `MlflowClient`, a `curl` or the UI
cannot move an alias without its row. The REST endpoints below serve the ledger and record approvals for the
authenticated user only.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from sqlalchemy import and_, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from registry.ledger import (
    ACTION_HEADER,
    API,
    APPROVALS,
    AUTHORS,
    CHECKS_HEADER,
    EVAL_RUN_HEADER,
    EXPECTED_HEADER,
    LOCKS,
    MAX_CHECKS_HEADER,
    MOVE_HEADER,
    MOVES,
    REASON_HEADER,
    Move,
    create_tables,
    now_ms,
)

MODEL_LOCK = "*"  # the lock row's alias column: one lock per registered model
DECLARED_ACTIONS = frozenset({"promote", "rollback", "register"})


@dataclass(frozen=True)
class MoveContext:
    """Who moves (the authenticated user, from MLflow's auth hook) and what the client declared."""

    actor: str = "server"
    admin: bool = False
    action: str | None = None
    reason: str | None = None
    expected: str | None = None  # None: no expectation; "none": nothing may hold the alias
    eval_run_id: str | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)


def _bad(message: str) -> Exception:
    from mlflow.exceptions import MlflowException

    return MlflowException.invalid_parameter_value(message)


def current_context() -> MoveContext:
    """The move context of the Flask request being served (outside a request: the server itself)."""
    from flask import g, has_request_context, request

    if not has_request_context():
        return MoveContext()
    actor = getattr(g, "mlflow_authenticated_user", None) or "anonymous"
    from mlflow.server import auth

    admin = bool(getattr(g, "mlflow_authenticated_user", None)) and bool(auth.sender_is_admin())
    headers = request.headers
    action = headers.get(ACTION_HEADER)
    if action is not None and action not in DECLARED_ACTIONS:
        raise _bad(f"{ACTION_HEADER} must be one of {', '.join(sorted(DECLARED_ACTIONS))}, got {action!r}")
    reason = headers.get(REASON_HEADER)
    reason = unquote(reason)[:2000] if reason else None
    expected = headers.get(EXPECTED_HEADER)
    if expected is not None and expected != "none" and not expected.isdigit():
        raise _bad(f"{EXPECTED_HEADER} must be a version number or 'none', got {expected!r}")
    checks: list[dict[str, Any]] = []
    if headers.get(CHECKS_HEADER):
        raw = headers[CHECKS_HEADER]
        try:
            if len(raw) > MAX_CHECKS_HEADER:
                raise ValueError("too long")
            checks = json.loads(base64.urlsafe_b64decode(raw.encode()))
            if not isinstance(checks, list) or not all(isinstance(c, dict) for c in checks):
                raise ValueError("not a list of objects")
        except ValueError as exc:
            raise _bad(f"{CHECKS_HEADER} must be base64url JSON (a list of checks): {exc}") from exc
    eval_run_id = headers.get(EVAL_RUN_HEADER)
    return MoveContext(actor=str(actor), admin=admin, action=action, reason=reason, expected=expected,
                       eval_run_id=eval_run_id[:64] if eval_run_id else None, checks=checks)


def _actor_only() -> MoveContext:
    from flask import g, has_request_context

    if not has_request_context():
        return MoveContext()
    return MoveContext(actor=str(getattr(g, "mlflow_authenticated_user", None) or "anonymous"))


# -- the store in front of MLflow's ------------------------------------------------------------------------
_SESSION: contextvars.ContextVar[Any] = contextvars.ContextVar("llmops_registry_session", default=None)


def reentrant(maker: Any) -> Any:
    """MLflow's session maker, but a use inside one of *our* transactions (`LedgeredRegistry._transaction`)
    joins it; every other use opens its own session as before."""

    @contextlib.contextmanager
    def managed(read_only: bool = True) -> Iterator[Any]:
        current = _SESSION.get()
        if current is not None:
            yield current
            return
        with maker(read_only=read_only) as session:
            yield session

    managed.llmops_base = maker
    return managed


class LedgeredRegistry:
    """Placed before MLflow's SqlAlchemyStore class in the server's registry store (see `install`)."""

    llmops_rights: Any = None

    # -- plumbing ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        """One write transaction that MLflow's own method calls inside it join."""
        with self.ManagedSessionMaker.llmops_base(read_only=False) as session:
            token = _SESSION.set(session)
            try:
                yield session
            finally:
                _SESSION.reset(token)

    def _ensure_lock(self, name: str) -> None:
        try:
            with self.engine.begin() as conn:
                found = conn.execute(select(LOCKS.c.generation).where(
                    and_(LOCKS.c.model_name == name, LOCKS.c.alias == MODEL_LOCK))).first()
                if found is None:
                    conn.execute(insert(LOCKS).values(model_name=name, alias=MODEL_LOCK, generation=0))
        except IntegrityError:
            pass  # created by a concurrent request

    @staticmethod
    def _lock(session: Any, *names: str) -> None:
        for name in sorted(set(names)):  # one order everywhere: no deadlock between two models' locks
            session.execute(update(LOCKS).where(and_(LOCKS.c.model_name == name, LOCKS.c.alias == MODEL_LOCK))
                            .values(generation=LOCKS.c.generation + 1))

    def _aliases(self, session: Any, name: str, version: int | None = None) -> dict[str, str]:
        from mlflow.store.model_registry.dbmodels.models import SqlRegisteredModelAlias

        query = self._get_query(session, SqlRegisteredModelAlias).filter(SqlRegisteredModelAlias.name == name)
        if version is not None:
            query = query.filter(SqlRegisteredModelAlias.version == int(version))
        return {row.alias: str(row.version) for row in query.all()}

    def _is_prompt(self, session: Any, name: str) -> bool:
        from mlflow.prompt.constants import IS_PROMPT_TAG_KEY

        try:
            model = self._get_registered_model(session, name)
        except Exception:  # noqa: BLE001 - MLflow's own call reports a missing model
            return False
        return any(t.key == IS_PROMPT_TAG_KEY and str(t.value).lower() == "true" for t in model.registered_model_tags)

    def _check_cascade(self, session: Any, ctx: MoveContext, name: str, held: dict[str, str], verb: str) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

        if ctx.admin or self.llmops_rights is None or not held:
            return
        kind = "prompt" if self._is_prompt(session, name) else "model"
        for alias in sorted(held):
            allowed, rule = self.llmops_rights.decide(ctx.actor, kind, alias, "delete")
            if not allowed:
                raise MlflowException(f"alias rule: {rule}; user {ctx.actor!r} may not {verb} what holds "
                                      f"{name}@{alias}", PERMISSION_DENIED)

    @staticmethod
    def _check_expected(name: str, alias: str, current: str | None, ctx: MoveContext) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import RESOURCE_CONFLICT

        if ctx.expected is None:
            return
        expected = None if ctx.expected == "none" else ctx.expected
        if current != expected:
            seen = f"v{expected}" if expected else "nothing"
            now = f"v{current}" if current else "nothing"
            raise MlflowException(f"{name}@{alias} changed while this move was checked (expected {seen}, found "
                                  f"{now}): nothing moved; re-run to check against the new holder",
                                  RESOURCE_CONFLICT)

    def _record(self, session: Any, ctx: MoveContext, name: str, alias: str, from_version: str | None,
                to_version: str | None, action: str, reason: str | None = None) -> Move:
        row = {"model_name": name, "alias": alias, "from_version": from_version, "to_version": to_version,
               "action": action, "actor": ctx.actor, "moved_at_ms": now_ms(), "reason": reason or ctx.reason,
               "eval_run_id": ctx.eval_run_id, "checks": json.dumps(ctx.checks)}
        row_id = session.execute(insert(MOVES).values(**row)).inserted_primary_key[0]
        move = Move(**{**row, "checks": ctx.checks}, id=row_id)
        _remember(move)
        return move

    # -- the alias endpoints ---------------------------------------------------------------------------
    def set_registered_model_alias(self, name: str, alias: str, version: Any) -> None:
        ctx = current_context()
        self._ensure_lock(name)
        with self._transaction() as session:
            self._lock(session, name)
            current = self._aliases(session, name).get(alias)
            self._check_expected(name, alias, current, ctx)
            super().set_registered_model_alias(name, alias, version)
            self._record(session, ctx, name, alias, current, str(int(version)), ctx.action or "set")

    def delete_registered_model_alias(self, name: str, alias: str) -> None:
        ctx = current_context()
        self._ensure_lock(name)
        with self._transaction() as session:
            self._lock(session, name)
            current = self._aliases(session, name).get(alias)
            self._check_expected(name, alias, current, ctx)
            super().delete_registered_model_alias(name, alias)
            if current is not None:
                self._record(session, ctx, name, alias, current, None, ctx.action or "delete")

    # -- cascades: what removes aliases as a side effect -----------------------------------------------------
    def delete_model_version(self, name: str, version: Any) -> None:
        ctx = current_context()
        self._ensure_lock(name)
        with self._transaction() as session:
            self._lock(session, name)
            held = self._aliases(session, name, int(version)) if str(version).isdigit() else {}
            self._check_cascade(session, ctx, name, held, "delete")
            super().delete_model_version(name, version)
            for alias, holder in sorted(held.items()):
                self._record(session, ctx, name, alias, holder, None, "delete-version",
                             ctx.reason or f"version {version} deleted")

    def delete_registered_model(self, name: str) -> None:
        ctx = current_context()
        self._ensure_lock(name)
        with self._transaction() as session:
            self._lock(session, name)
            held = self._aliases(session, name)
            self._check_cascade(session, ctx, name, held, "delete")
            super().delete_registered_model(name)
            for alias, holder in sorted(held.items()):
                self._record(session, ctx, name, alias, holder, None, "delete-model",
                             ctx.reason or "registered model deleted")

    def rename_registered_model(self, name: str, new_name: str) -> Any:
        ctx = current_context()
        self._ensure_lock(name)
        self._ensure_lock(new_name)
        with self._transaction() as session:
            self._lock(session, name, new_name)
            held = self._aliases(session, name)
            self._check_cascade(session, ctx, name, held, "rename")
            renamed = super().rename_registered_model(name, new_name)
            for alias, holder in sorted(held.items()):
                self._record(session, ctx, name, alias, holder, None, "rename", f"renamed to {new_name}")
                self._record(session, ctx, new_name, alias, None, holder, "rename", f"renamed from {name}")
            return renamed

    def create_model_version(self, *args: Any, **kwargs: Any) -> Any:
        created = super().create_model_version(*args, **kwargs)
        ctx = _actor_only()
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(AUTHORS).values(model_name=created.name, version=str(created.version),
                                                    author=ctx.actor, created_at_ms=now_ms()))
        except IntegrityError:
            pass
        return created


def install(store: Any, rights: Any) -> Any:
    """Put `LedgeredRegistry` in front of the store's own class; create the ledger tables."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    from llmops.errors import ConfigError

    if not isinstance(store, SqlAlchemyStore):
        raise ConfigError(f"llmops-auth keeps the alias ledger in the registry database; the registry store is "
                          f"{type(store).__name__}, not a SQL store (use --backend-store-uri postgresql://...)")
    if not isinstance(store, LedgeredRegistry):
        base = type(store)
        store.__class__ = type(f"Ledgered{base.__name__}", (LedgeredRegistry, base), {})
        store.ManagedSessionMaker = reentrant(store.ManagedSessionMaker)
    store.llmops_rights = rights
    create_tables(store.engine)
    return store


# -- what the response tells the client ------------------------------------------------------------------
def _remember(move: Move) -> None:
    from flask import g, has_request_context

    if has_request_context():
        g.llmops_moves = [*getattr(g, "llmops_moves", []), move]


def add_move_header(response: Any) -> Any:
    """after_request: the ledger row of the request's own alias move (the CLI prints its id)."""
    from flask import g, request

    moves = [m for m in getattr(g, "llmops_moves", [])]
    if moves and response.status_code < 300 and request.endpoint in ("_set_registered_model_alias",
                                                                      "_delete_registered_model_alias"):
        move = moves[-1]
        summary = {k: v for k, v in move.as_dict().items() if k not in ("checks", "reason", "moved_at")}
        response.headers[MOVE_HEADER] = json.dumps(summary, ensure_ascii=True)
    return response


# -- reads for the REST endpoints ----------------------------------------------------------------------------
def moves_of(engine: Engine, name: str, alias: str | None = None, version: str | None = None) -> list[dict]:
    query = select(MOVES).where(MOVES.c.model_name == name)
    if alias:
        query = query.where(MOVES.c.alias == alias)
    if version:
        query = query.where((MOVES.c.to_version == str(version)) | (MOVES.c.from_version == str(version)))
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(MOVES.c.id)).fetchall()
    return [{"id": r.id, "model_name": r.model_name, "alias": r.alias, "from_version": r.from_version,
             "to_version": r.to_version, "action": r.action, "actor": r.actor, "moved_at_ms": r.moved_at_ms,
             "reason": r.reason, "eval_run_id": r.eval_run_id, "checks": json.loads(r.checks or "[]")}
            for r in rows]


def held_before(engine: Engine, name: str, alias: str, version: str) -> bool:
    query = select(MOVES.c.id).where(and_(MOVES.c.model_name == name, MOVES.c.alias == alias,
                                          MOVES.c.to_version == str(version))).limit(1)
    with engine.connect() as conn:
        return conn.execute(query).first() is not None


def approvals_of(engine: Engine, name: str, version: str) -> list[str]:
    return [a["approver"] for a in approval_rows(engine, name, version)]


def approval_rows(engine: Engine, name: str, version: str) -> list[dict]:
    query = (select(APPROVALS).where(and_(APPROVALS.c.model_name == name, APPROVALS.c.version == str(version)))
             .order_by(APPROVALS.c.id))
    with engine.connect() as conn:
        return [{"model_name": r.model_name, "version": r.version, "approver": r.approver, "note": r.note,
                 "approved_at_ms": r.approved_at_ms} for r in conn.execute(query)]


def author_of(engine: Engine, name: str, version: str) -> str | None:
    query = select(AUTHORS.c.author).where(and_(AUTHORS.c.model_name == name, AUTHORS.c.version == str(version)))
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return row.author if row else None


# -- the REST endpoints -------------------------------------------------------------------------------------
def register_endpoints(flask_app: Any, judge: Any) -> None:
    """`GET {API}/info|alias-moves|approvals`, `POST {API}/approvals`, `GET /api/2.0/llmops/server/routes`."""
    from flask import g, jsonify, request

    from mlflow.server import auth

    def store() -> Any:
        return judge.registry()

    def error(status: int, code: str, message: str) -> Any:
        response = jsonify({"error_code": code, "message": message})
        response.status_code = status
        return response

    def readable(name: str) -> Any:
        """None when the user may read `name` (MLflow's own permission), else the refusal."""
        if not name:
            return error(400, "INVALID_PARAMETER_VALUE", "parameter 'name' is required")
        if judge.registered_model(name) is None:
            return error(404, "RESOURCE_DOES_NOT_EXIST", f"registered model {name!r} not found")
        if auth.sender_is_admin() or auth._get_registered_model_or_prompt_permission(name).can_read:
            return None
        return error(403, "PERMISSION_DENIED", f"user {g.mlflow_authenticated_user!r} may not read {name!r}")

    def info() -> Any:
        return jsonify({"ledger": "server", "policy_file": judge.policy_file,
                        "aliases": sorted(judge.policy.aliases), "self_approval": judge.rights.self_approval})

    def alias_moves() -> Any:
        name = request.args.get("name", "")
        refused = readable(name)
        if refused is not None:
            return refused
        return jsonify({"moves": moves_of(store().engine, name, request.args.get("alias") or None,
                                          request.args.get("version") or None)})

    def approvals() -> Any:
        if request.method == "GET":
            name = request.args.get("name", "")
            refused = readable(name)
            if refused is not None:
                return refused
            return jsonify({"approvals": approval_rows(store().engine, name, request.args.get("version", ""))})
        return approve()

    def approve() -> Any:
        from llmops.errors import LlmopsError
        from registry.guard import BadRequest, request_json_object

        try:
            body = request_json_object()
        except BadRequest as exc:
            return error(400, "INVALID_PARAMETER_VALUE", str(exc))
        unknown = sorted(set(body) - {"name", "version", "note"})
        if unknown or request.query_string:
            return error(400, "INVALID_PARAMETER_VALUE", f"unknown field(s): {', '.join(unknown) or 'query'}")
        name, version = str(body.get("name") or ""), str(body.get("version") or "")
        note = body.get("note")
        if not isinstance(note, (str, type(None))) or not version.isdigit():
            return error(400, "INVALID_PARAMETER_VALUE", "an approval needs a name, a numeric version and an "
                                                         "optional note string")
        refused = readable(name)
        if refused is not None:
            return refused
        if judge.model_version(name, version) is None:
            return error(404, "RESOURCE_DOES_NOT_EXIST", f"model {name!r} version {version} not found")
        user = str(g.mlflow_authenticated_user)
        allowed, why = judge.rights.may_approve(user)
        if not allowed:
            return error(403, "PERMISSION_DENIED", f"user {user!r} may not approve: {why}")
        author = author_of(store().engine, name, version)
        if judge.rights.self_approval == "forbid" and author == user:
            return error(403, "PERMISSION_DENIED", f"user {user!r} registered {name} v{version} and may not "
                                                   "approve it (rights.self_approval: forbid)")
        row = {"model_name": name, "version": version, "approver": user, "note": (note or "")[:2000] or None,
               "approved_at_ms": now_ms()}
        try:
            with store().engine.begin() as conn:
                conn.execute(insert(APPROVALS).values(**row))
        except (LlmopsError, IntegrityError) as exc:
            return error(500, "INTERNAL_ERROR", str(exc))
        return jsonify({"approval": row})

    def routes() -> Any:
        if not auth.sender_is_admin():
            return error(403, "PERMISSION_DENIED", "admins only")
        from registry.guard import FLASK_RULES, MUTATING, NATIVE_RULES, OWN_ENDPOINTS

        listed = []
        for rule in flask_app.url_map.iter_rules():
            methods = sorted((rule.methods or set()) & MUTATING)
            if methods:
                judged = FLASK_RULES.get(rule.endpoint) is not None or rule.endpoint in OWN_ENDPOINTS
                listed.append({"kind": "flask", "path": rule.rule, "methods": methods, "endpoint": rule.endpoint,
                               "known": judged})
        for _regex, methods, route_name, template in getattr(judge, "native", []):
            mutating = sorted(set(methods) & MUTATING)
            if mutating:
                listed.append({"kind": "native", "path": template, "methods": mutating, "endpoint": route_name,
                               "known": route_name in NATIVE_RULES})
        return jsonify({"routes": listed})

    for path, view, methods, endpoint in (
        (f"{API}/info", info, ["GET"], "llmops_info"),
        (f"{API}/alias-moves", alias_moves, ["GET"], "llmops_alias_moves"),
        (f"{API}/approvals", approvals, ["GET", "POST"], "llmops_approve"),
        ("/api/2.0/llmops/server/routes", routes, ["GET"], "llmops_routes"),
    ):
        flask_app.add_url_rule(path, endpoint, view, methods=methods)
        for method in methods:  # MLflow fails closed on routes it has no validator for; ours judge themselves
            auth.BEFORE_REQUEST_VALIDATORS[(path, method)] = auth._allow_authenticated
