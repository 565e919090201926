"""The request judge of the `llmops-auth` server app: every mutating request, judged on what MLflow will execute.

MLflow 3.17 reads a request in two places that can disagree: its auth layer (`auth._request_params`: the JSON
body only when the content type says JSON, else the query string) and its handlers (`_get_request_message`:
for anything but a GET with a query string, the body parsed as JSON whatever the content type). A request
whose query names one model and whose body names another was authorised on the first and executed on the
second. So this judge

* parses with the handler's own function (`handlers._get_request_message` on the same proto class), so the
  rule sees exactly the name/alias/version/key the handler will act on;
* refuses (400) what the two readers could read differently: a query string on a mutating API request (MLflow's
  handlers never read it), a body that is not `application/json`, a body that is not a JSON object (MLflow
  decodes double-encoded strings), keys that are not the message's own field names (camelCase twins, typos),
  and a GET that carries a body;
* knows every mutating route of MLflow 3.17 (`FLASK_RULES`, `NATIVE_RULES`) and refuses (403) any other one
  (deny by default: a route a new MLflow adds must be classified here first).

What is protected, for whom:

| state | rule | who is bound |
|---|---|---|
| aliases named in `rights` | set/delete only by the roles listed; deleting the version or model that holds one, or renaming that model, needs the delete right for each alias it holds | everyone but MLflow admins |
| look-alikes of the policy's aliases | `Production`, `pr0duction`-style case/separator variants and any non-ASCII alias name: refused | everyone |
| artifacts of a registered model version | no PUT / DELETE / multipart / presigned upload at or under (or above) its storage location; no deletion of its logged model | everyone |
| release tags | `llmops.*` and `mlflow.*` tags of versions and models are write-once (set when absent, never changed or deleted); every tag of a prompt version (its template is the tag `mlflow.prompt.text`) likewise | everyone |
| deprecated stages | `transition-stage` refused: `models:/NAME/Production` never means anything here | everyone |
| approvals for an alias whose rule needs them | the move is refused until enough distinct approvers other than the mover (and, with `self_approval: forbid`, the version's author) approved; a version that held the alias before may return without | everyone but MLflow admins |

Every judged response carries `X-Llmops-Guard: <rule>`; an admin may send `X-Llmops-Explain: 1` to get the
verdict without anything being executed (the route-coverage test uses it).
"""

from __future__ import annotations

import json
import posixpath
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
GUARD_HEADER = "X-Llmops-Guard"
EXPLAIN_HEADER = "X-Llmops-Explain"
API_PATH = re.compile(r"^/(?:ajax-)?api/")
REPO_POLICY = str(__import__("pathlib").Path(__file__).with_name("policy.yaml"))


@dataclass(frozen=True)
class Verdict:
    """`status` None: let MLflow handle it; else the refusal (400 bad request, 403 forbidden)."""

    rule: str
    status: int | None = None
    message: str = ""

    @property
    def allowed(self) -> bool:
        return self.status is None


def allow(rule: str) -> Verdict:
    return Verdict(rule)


def refuse(rule: str, status: int, message: str) -> Verdict:
    return Verdict(rule, status, message)


class BadRequest(Exception):
    """The request cannot be read unambiguously: 400."""


# -- alias names -------------------------------------------------------------------------------------------
def alias_skeleton(alias: str) -> str:
    """What a reader sees: NFKC, case-folded, without separators (`Prod-uction` ~ `production`)."""
    return re.sub(r"[\s_\-]", "", unicodedata.normalize("NFKC", alias).casefold())


def look_alike(alias: str, namespace: Iterable[str]) -> str | None:
    """The policy alias `alias` imitates (None: it is one of them exactly, or unrelated)."""
    if alias in namespace:
        return None
    skeleton = alias_skeleton(alias)
    for known in namespace:
        if alias_skeleton(known) == skeleton:
            return known
    return None


# -- artifact locations ------------------------------------------------------------------------------------
def location_key(uri: str, destination: str | None) -> str | None:
    """A comparable form of an artifact location: the artifact proxy's paths and `mlflow-artifacts:` URIs are
    resolved against the server's artifacts destination; local paths become absolute `file:` paths."""
    if not uri:
        return None
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme == "mlflow-artifacts" or scheme == "proxy":
        if destination is None:
            return "mlflow-artifacts:" + _norm(unquote(parsed.path))
        return location_key(_join(destination, unquote(parsed.path)), None)
    if scheme in ("", "file") or (len(scheme) == 1 and uri[1:3] == ":\\"):
        path = unquote(parsed.path) if scheme == "file" else uri
        return "file:" + _norm(path)
    return f"{scheme}://{parsed.netloc}" + _norm(unquote(parsed.path))


def _norm(path: str) -> str:
    """An absolute POSIX path without `.`, `..`, repeated or trailing slashes ('' for the root)."""
    return posixpath.normpath("/" + path.lstrip("/")).rstrip("/")


def _join(base: str, relative: str) -> str:
    relative = relative.lstrip("/")
    return base.rstrip("/") + ("/" + relative if relative else "")


def overlaps(target: str, protected: str) -> bool:
    """True when writing or deleting `target` touches `protected`: same, below it, or a folder above it."""
    return (target == protected or target.startswith(protected + "/") or protected.startswith(target + "/")
            or target.endswith(":"))  # the whole store


# -- the judge ---------------------------------------------------------------------------------------------
class Judge:
    """Decides one request. Built once per worker from the policy; reads the registry through MLflow's stores."""

    def __init__(self, policy: Any, policy_file: str) -> None:
        self.policy = policy
        self.rights = policy.rights
        self.policy_file = policy_file
        self.namespace = sorted({*policy.aliases, *self.rights.models, *self.rights.prompts})
        self.native: list = []
        self._resolved: dict[str, str] = {}  # a version's source resolves to the same location forever

    # stores, resolved lazily (the server process configures them from its environment)
    @staticmethod
    def registry() -> Any:
        from mlflow.server.handlers import _get_model_registry_store

        return _get_model_registry_store()

    @staticmethod
    def tracking() -> Any:
        from mlflow.server.handlers import _get_tracking_store

        return _get_tracking_store()

    @staticmethod
    def destination() -> str | None:
        import os

        from mlflow.server.constants import ARTIFACTS_DESTINATION_ENV_VAR

        return os.environ.get(ARTIFACTS_DESTINATION_ENV_VAR)

    def _rule_words(self, rule: str) -> str:
        return f"alias rule ({self.policy_file}): {rule}"

    # -- registry reads --------------------------------------------------------------------------------
    def registered_model(self, name: str) -> Any | None:
        from mlflow.exceptions import MlflowException

        try:
            return self.registry().get_registered_model(name)
        except MlflowException:
            return None

    def model_version(self, name: str, version: str) -> Any | None:
        from mlflow.exceptions import MlflowException

        try:
            return self.registry().get_model_version(name, str(version))
        except MlflowException:
            return None

    def kind(self, name: str) -> str:
        model = self.registered_model(name)
        return "prompt" if model is not None and model._is_prompt() else "model"

    def protected_locations(self) -> list[tuple[str, str]]:
        """(location key, 'NAME vN') for the artifacts of every live registered version (prompts have none)."""
        from mlflow.store.model_registry.dbmodels.models import SqlModelVersion

        store = self.registry()
        destination = self.destination()
        found: list[tuple[str, str]] = []
        with store.ManagedSessionMaker() as session:
            rows = (session.query(SqlModelVersion.name, SqlModelVersion.version, SqlModelVersion.source,
                                  SqlModelVersion.storage_location)
                    .filter(SqlModelVersion.current_stage != "Deleted_Internal").all())
        for name, version, source, storage in rows:
            for uri in {storage, source} - {None, ""}:
                key = location_key(self._resolve(uri), destination)
                if key:
                    found.append((key, f"{name} v{version}"))
        return found

    def _resolve(self, uri: str) -> str:
        """runs:/ and models:/m-... sources -> the artifact location they name (memoized per worker)."""
        if uri in self._resolved:
            return self._resolved[uri]
        resolved = self._resolve_now(uri)
        if resolved != uri:  # a lookup that failed is tried again next time
            if len(self._resolved) > 100_000:
                self._resolved.clear()
            self._resolved[uri] = resolved
        return resolved

    def _resolve_now(self, uri: str) -> str:
        from mlflow.exceptions import MlflowException

        try:
            if uri.startswith("runs:/"):
                run_id, _, path = uri.removeprefix("runs:/").partition("/")
                return _join(self.tracking().get_run(run_id).info.artifact_uri, path)
            if uri.startswith("models:/m-"):
                return self.tracking().get_logged_model(uri.removeprefix("models:/").split("/")[0]).artifact_location
        except MlflowException:
            return uri
        return uri

    def artifact_write(self, target_uri: str, what: str) -> Verdict:
        key = location_key(target_uri, self.destination())
        if key is None:
            return allow("artifact-write")
        for protected, owner in self.protected_locations():
            if overlaps(key, protected):
                return refuse("artifact-immutable", 403,
                              f"the artifacts of registered model version {owner} are immutable: {what} refused")
        return allow("artifact-write")

    # -- rights ----------------------------------------------------------------------------------------
    def alias_right(self, user: str, admin: bool, kind: str, name: str, alias: str, action: str) -> Verdict:
        if admin:
            return allow(f"alias-{action}")
        allowed, rule = self.rights.decide(user, kind, alias, action)
        if allowed:
            return allow(f"alias-{action}")
        return refuse(f"alias-{action}", 403, f"{self._rule_words(rule)}; user {user!r} may not {action} "
                                             f"{name}@{alias}")

    def held_aliases(self, name: str, version: str | None) -> list[str]:
        if version is None:
            model = self.registered_model(name)
            return sorted(model.aliases) if model is not None else []
        mv = self.model_version(name, version)
        return sorted(mv.aliases) if mv is not None else []

    def cascade_right(self, user: str, admin: bool, name: str, version: str | None, verb: str) -> Verdict:
        """Deleting a version or model, or renaming a model, removes the aliases it holds from NAME."""
        kind = self.kind(name)
        target = f"{name} v{version}" if version is not None else name
        for alias in self.held_aliases(name, version):
            verdict = self.alias_right(user, admin, kind, name, alias, "delete")
            if not verdict.allowed:
                return refuse(f"{verb}-holder", 403,
                              f"{verdict.message.split('; user')[0]}; user {user!r} may not {verb} {target}, "
                              f"which holds {name}@{alias}")
        return allow(verb)

    def approvals_for_move(self, user: str, admin: bool, name: str, alias: str, version: str) -> Verdict:
        """Server-side approvals: counted from the server's own table, never from what a client says."""
        rule = self.policy.aliases.get(alias)
        if admin or rule is None or rule.approvals <= 0 or self.kind(name) != "model":
            return allow("alias-set")
        from registry.server_ledger import approvals_of, author_of, held_before

        store = self.registry()
        if held_before(store.engine, name, alias, version):
            return allow("alias-set")  # a return to a version that held it (rollback) needs no new approval
        excluded = {user}
        author = author_of(store.engine, name, version)
        if self.rights.self_approval == "forbid" and author:
            excluded.add(author)
        approvers = sorted({a for a in approvals_of(store.engine, name, version)} - excluded)
        if len(approvers) >= rule.approvals:
            return allow("alias-set")
        others = "the mover" + (f" and the author {author!r}" if author in excluded and author != user else "")
        return refuse("approvals", 403, f"{name} v{version} -> @{alias} needs {rule.approvals} approval(s) by "
                                        f"someone other than {others}; has {len(approvers)}"
                                        + (f" ({', '.join(approvers)})" if approvers else ""))

    # -- tags --------------------------------------------------------------------------------------------
    @staticmethod
    def _release_key(key: str) -> bool:
        return key.startswith(("llmops.", "mlflow."))

    def version_tag(self, name: str, version: str, key: str, value: str | None, deleting: bool) -> Verdict:
        mv = self.model_version(name, version)
        if mv is None:
            return allow("version-tag")  # MLflow answers 404 itself
        prompt = self.kind(name) == "prompt"
        if not (prompt or self._release_key(key)):
            return allow("version-tag")
        what = "prompt version tags" if prompt else f"release tag {key!r}"
        if deleting:
            return refuse("release-tag", 403, f"{what} of {name} v{version} are write-once: delete refused")
        if key in mv.tags and mv.tags[key] != value:
            return refuse("release-tag", 403, f"{what} of {name} v{version} are write-once: {key!r} is already "
                                              "set")
        return allow("release-tag")

    def model_tag(self, name: str, key: str, value: str | None, deleting: bool) -> Verdict:
        model = self.registered_model(name)
        if model is None or not self._release_key(key):
            return allow("model-tag")
        if deleting:
            return refuse("release-tag", 403, f"tag {key!r} of {name} is write-once: delete refused")
        if key in model.tags and model.tags[key] != value:
            return refuse("release-tag", 403, f"tag {key!r} of {name} is write-once: it is already set")
        return allow("release-tag")


# -- reading a Flask request exactly as MLflow's handler will ---------------------------------------------
def request_json_object() -> dict[str, Any]:
    """The body as MLflow's handlers read it, refused unless it is unambiguous: JSON content type, an object."""
    from flask import request

    raw = request.get_data(cache=True)
    if not raw:
        return {}
    content_type = (request.content_type or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise BadRequest(f"a request body must be declared as application/json (got {content_type or 'none'!r})")
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise BadRequest("the body must be a JSON object (MLflow would decode a JSON string a second time)")
    return value


def parse_message(proto_class: type) -> Any:
    """`handlers._get_request_message` on a fresh message: what the handler will act on, byte for byte."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.handlers import _get_request_message

    body = request_json_object()
    fields = {f.name for f in proto_class.DESCRIPTOR.fields}
    unknown = sorted(set(body) - fields)
    if unknown:
        raise BadRequest(f"unknown field(s) for {proto_class.__name__}: {', '.join(unknown)} "
                         f"(expected: {', '.join(sorted(fields))})")
    try:
        return _get_request_message(proto_class())
    except MlflowException as exc:
        raise BadRequest(str(exc.message)) from exc


# -- rules per Flask endpoint ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Call:
    judge: Judge
    user: str
    admin: bool


def _msg(name: str) -> type:
    from mlflow.protos import model_registry_pb2 as registry_pb2

    return getattr(registry_pb2, name)


def _set_alias(call: Call) -> Verdict:
    msg = parse_message(_msg("SetRegisteredModelAlias"))
    judge = call.judge
    if not msg.alias.isascii():
        return refuse("alias-look-alike", 400, f"alias {msg.alias!r}: alias names must be ASCII on this server")
    imitated = look_alike(msg.alias, judge.namespace)
    if imitated:
        return refuse("alias-look-alike", 400, f"alias {msg.alias!r} looks like the policy alias {imitated!r}; "
                                               f"use {imitated!r} itself or a name that does not imitate it")
    verdict = judge.alias_right(call.user, call.admin, judge.kind(msg.name), msg.name, msg.alias, "set")
    if not verdict.allowed:
        return verdict
    return judge.approvals_for_move(call.user, call.admin, msg.name, msg.alias, msg.version)


def _delete_alias(call: Call) -> Verdict:
    msg = parse_message(_msg("DeleteRegisteredModelAlias"))
    return call.judge.alias_right(call.user, call.admin, call.judge.kind(msg.name), msg.name, msg.alias, "delete")


def _delete_version(call: Call) -> Verdict:
    msg = parse_message(_msg("DeleteModelVersion"))
    return call.judge.cascade_right(call.user, call.admin, msg.name, msg.version, "delete")


def _delete_model(call: Call) -> Verdict:
    msg = parse_message(_msg("DeleteRegisteredModel"))
    return call.judge.cascade_right(call.user, call.admin, msg.name, None, "delete")


def _rename_model(call: Call) -> Verdict:
    msg = parse_message(_msg("RenameRegisteredModel"))
    return call.judge.cascade_right(call.user, call.admin, msg.name, None, "rename")


def _set_version_tag(call: Call) -> Verdict:
    msg = parse_message(_msg("SetModelVersionTag"))
    return call.judge.version_tag(msg.name, msg.version, msg.key, msg.value, deleting=False)


def _delete_version_tag(call: Call) -> Verdict:
    msg = parse_message(_msg("DeleteModelVersionTag"))
    return call.judge.version_tag(msg.name, msg.version, msg.key, None, deleting=True)


def _set_model_tag(call: Call) -> Verdict:
    msg = parse_message(_msg("SetRegisteredModelTag"))
    return call.judge.model_tag(msg.name, msg.key, msg.value, deleting=False)


def _delete_model_tag(call: Call) -> Verdict:
    msg = parse_message(_msg("DeleteRegisteredModelTag"))
    return call.judge.model_tag(msg.name, msg.key, None, deleting=True)


def _create_version(call: Call) -> Verdict:
    parse_message(_msg("CreateModelVersion"))  # reject ambiguous bodies; tags at creation are the first write
    return allow("create-version")


def _stage(call: Call) -> Verdict:
    msg = parse_message(_msg("TransitionModelVersionStage"))
    return refuse("deprecated-stage", 403, f"model version stages are disabled on this server (asked: "
                                           f"{msg.name} v{msg.version} -> {msg.stage!r}); use aliases")


def _proxy_path() -> str:
    from flask import request

    from mlflow.utils.uri import validate_path_is_safe

    try:
        return validate_path_is_safe((request.view_args or {}).get("artifact_path", ""))
    except Exception as exc:  # noqa: BLE001 - MLflow answers the unsafe path itself; we refuse it first
        raise BadRequest(f"unsafe artifact path: {exc}") from exc


def _artifact_put(call: Call) -> Verdict:
    path = _proxy_path()
    return call.judge.artifact_write(f"mlflow-artifacts:/{path}", f"writing {path}")


def _artifact_delete(call: Call) -> Verdict:
    from mlflow.protos.mlflow_artifacts_pb2 import DeleteArtifact

    parse_message(DeleteArtifact)
    path = _proxy_path()
    return call.judge.artifact_write(f"mlflow-artifacts:/{path}", f"deleting {path}")


def _multipart(proto: str) -> Callable[[Call], Verdict]:
    def rule(call: Call) -> Verdict:
        from mlflow.protos import mlflow_artifacts_pb2

        msg = parse_message(getattr(mlflow_artifacts_pb2, proto))
        path = _proxy_path()
        for target in {path, posixpath.join(path, getattr(msg, "path", "") or "")}:
            verdict = call.judge.artifact_write(f"mlflow-artifacts:/{target}", f"a multipart upload to {target}")
            if not verdict.allowed:
                return verdict
        return allow("artifact-write")

    return rule


def _run_upload(call: Call) -> Verdict:
    """`POST /ajax-api/2.0/mlflow/upload-artifact?run_uuid=&path=` (the UI's small-file upload)."""
    from flask import request

    from mlflow.exceptions import MlflowException

    run_id, path = request.args.get("run_uuid"), request.args.get("path")  # what the handler reads: the first
    if not run_id or not path:
        return allow("artifact-write")  # MLflow refuses a missing parameter itself
    try:
        artifact_uri = call.judge.tracking().get_run(run_id).info.artifact_uri
    except MlflowException:
        return allow("artifact-write")
    return call.judge.artifact_write(_join(artifact_uri, path), f"uploading {path} to run {run_id}")


def _presigned_upload(call: Call) -> Verdict:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.service_pb2 import CreatePresignedUploadUrl

    msg = parse_message(CreatePresignedUploadUrl)
    try:
        if msg.run_id:
            root = call.judge.tracking().get_run(msg.run_id).info.artifact_uri
        elif msg.model_id:
            root = call.judge.tracking().get_logged_model(msg.model_id).artifact_location
        else:
            return allow("artifact-write")
    except MlflowException:
        return allow("artifact-write")
    return call.judge.artifact_write(_join(root, msg.path), f"a presigned upload to {msg.path}")


def _delete_logged_model(call: Call) -> Verdict:
    from flask import request

    from mlflow.exceptions import MlflowException

    model_id = (request.view_args or {}).get("model_id", "")
    try:
        location = call.judge.tracking().get_logged_model(model_id).artifact_location
    except MlflowException:
        return allow("logged-model-delete")
    return call.judge.artifact_write(location, f"deleting logged model {model_id}")


def _signup_form(call: Call) -> Verdict:
    """basic-auth's user sign-up form (`POST /api/2.0/mlflow/users/create-ui`, a lambda view, form data)."""
    from flask import request

    if not request.path.endswith("/mlflow/users/create-ui"):
        return refuse("unknown-endpoint", 403, f"{request.method} {request.path} is not a route this server's "
                                               "policy knows (deny by default)")
    return allow("mlflow-permissions")


def _json_body(rule: str) -> Callable[[Call], Verdict]:
    """Routes MLflow's own permissions decide: only the unambiguous-body rule applies."""

    def judge(call: Call) -> Verdict:
        request_json_object()
        return allow(rule)

    return judge


# Mutating Flask endpoints of MLflow 3.17 (plus basic-auth's own), by endpoint name. Anything else: 403.
_MLFLOW_DECIDES = """
    _add_dataset_to_experiments_handler _add_guardrail_to_endpoint _add_items_to_review_queue
    _attach_model_to_gateway_endpoint _batch_get_trace_infos _calculate_trace_filter_correlation _cancel_job
    _cancel_prompt_optimization_job _create_assessment _create_budget_policy _create_dataset_handler
    _create_experiment _create_gateway_endpoint _create_gateway_endpoint_binding _create_gateway_guardrail
    _create_gateway_model_definition _create_gateway_secret _create_issue _create_label_schema
    _create_logged_model _create_presigned_download_url _create_prompt_optimization_job _create_registered_model
    _create_review_queue _create_run _create_webhook _create_workspace_handler _delete_assessment
    _delete_budget_policy _delete_dataset_handler _delete_dataset_records_handler _delete_dataset_tag_handler
    _delete_demo _delete_experiment _delete_experiment_tag _delete_gateway_endpoint
    _delete_gateway_endpoint_binding _delete_gateway_endpoint_tag _delete_gateway_guardrail
    _delete_gateway_model_definition _delete_gateway_secret _delete_label_schema _delete_logged_model_tag
    _delete_prompt_optimization_job _delete_review_queue _delete_run _delete_scorer _delete_tag _delete_trace_tag
    _delete_trace_tag_v3 _delete_traces _delete_webhook _delete_workspace_handler _deprecated_end_trace_v2
    _deprecated_start_trace_v2 _detach_model_from_gateway_endpoint _finalize_logged_model _generate_demo
    _get_latest_versions _get_or_create_user_queue _invoke_genai_evaluate_handler _invoke_issue_detection_handler
    _invoke_scorer_handler _link_prompts_to_trace _link_traces_to_run _log_batch _log_inputs
    _log_logged_model_params _log_metric _log_model _log_outputs _log_param _not_implemented _query_trace_metrics
    _register_scorer _remove_dataset_from_experiments_handler _remove_guardrail_from_endpoint
    _remove_items_from_review_queue _restore_experiment _restore_run _search_evaluation_datasets_handler
    _search_experiments _search_issues _search_logged_models _search_prompt_optimization_jobs _search_runs
    _search_traces_v3 _set_dataset_tags_handler _set_experiment_tag _set_gateway_endpoint_tag
    _set_logged_model_tags _set_review_queue_item_status _set_tag _set_trace_tag _set_trace_tag_v3 _start_trace_v3
    _test_webhook _update_assessment _update_budget_policy _update_endpoint_guardrail_config _update_experiment
    _update_gateway_endpoint _update_gateway_model_definition _update_gateway_secret _update_issue
    _update_label_schema _update_model_version _update_registered_model _update_review_queue _update_run
    _update_webhook _update_workspace_handler _upsert_dataset_records_handler _upsert_online_scoring_config
    add_role_permission assign_role create_role create_user delete_role delete_user grant_user_permission
    remove_role_permission revoke_user_permission serve_create_promptlab_run serve_gateway_proxy
    serve_post_ui_telemetry serve_search_datasets unassign_role update_role update_role_permission
    update_user_admin update_user_password _graphql
""".split()

FLASK_RULES: dict[str, Callable[[Call], Verdict]] = {
    **{name: _json_body("mlflow-permissions") for name in _MLFLOW_DECIDES},
    "_set_registered_model_alias": _set_alias,
    "_delete_registered_model_alias": _delete_alias,
    "_delete_model_version": _delete_version,
    "_delete_registered_model": _delete_model,
    "_rename_registered_model": _rename_model,
    "_set_model_version_tag": _set_version_tag,
    "_delete_model_version_tag": _delete_version_tag,
    "_set_registered_model_tag": _set_model_tag,
    "_delete_registered_model_tag": _delete_model_tag,
    "_create_model_version": _create_version,
    "_transition_stage": _stage,
    "_upload_artifact": _artifact_put,
    "_delete_artifact_mlflow_artifacts": _artifact_delete,
    "_create_multipart_upload_artifact": _multipart("CreateMultipartUpload"),
    "_complete_multipart_upload_artifact": _multipart("CompleteMultipartUpload"),
    "_abort_multipart_upload_artifact": _multipart("AbortMultipartUpload"),
    "serve_upload_artifact": _run_upload,
    "_create_presigned_upload_url": _presigned_upload,
    "_delete_logged_model": _delete_logged_model,
    "<lambda>": _signup_form,
}
# Endpoints whose handler reads the query string (or a raw, non-JSON body) by design.
QUERY_READERS = frozenset({"serve_upload_artifact"})

# Mutating native FastAPI routes (served beside the Flask app, outside its hooks), by route name.
NATIVE_RULES: dict[str, str] = {
    **{name: "mlflow-permissions" for name in """
        export_traces submit_job cancel_job search_jobs invocations chat_completions openai_passthrough_chat
        openai_passthrough_embeddings typesafe_passthrough_system_one openai_passthrough_responses
        openai_passthrough_responses_compact anthropic_passthrough_messages gemini_passthrough_generate_content
        gemini_passthrough_stream_generate_content raw_proxy send_message patch_session resolve_permission
        resolve_client_tool_result update_config install_skills_endpoint create_mcp_server
        set_mcp_server_version_tag delete_mcp_server_version_tag update_mcp_server_version
        delete_mcp_server_version create_mcp_server_version create_mcp_access_endpoint update_mcp_access_endpoint
        delete_mcp_access_endpoint set_mcp_server_tag delete_mcp_server_tag set_mcp_server_alias
        delete_mcp_server_alias update_mcp_server delete_mcp_server
    """.split()},
    "upload_artifact": "artifact-write",
}
# Our own endpoints (registry.server_ledger): they judge their caller themselves.
OWN_ENDPOINTS = frozenset({"llmops_approve"})


def judge_flask_request(judge: Judge) -> Verdict | None:
    """The verdict for the current Flask request; None for requests nobody needs to judge (safe reads)."""
    from flask import g, request

    from mlflow.server import auth

    if request.method not in MUTATING:
        if request.method == "GET" and API_PATH.match(request.path) and request.get_data(cache=True):
            return refuse("ambiguous-request", 400, "a GET request must not carry a body: MLflow's handler "
                                                    "reads the body when the query string is empty")
        return None
    endpoint = request.endpoint
    if endpoint in OWN_ENDPOINTS:
        return allow("llmops-api")  # the view judges its caller itself
    rule = FLASK_RULES.get(endpoint or "")
    if rule is None:
        return refuse("unknown-endpoint", 403, f"{request.method} {request.path} is not a route this server's "
                                               "policy knows (deny by default)")
    if request.query_string and endpoint not in QUERY_READERS:
        return refuse("ambiguous-request", 400, "a mutating request must not carry a query string: MLflow's "
                                                "handler reads only the body, its permission check may read "
                                                "the query")
    user = getattr(g, "mlflow_authenticated_user", None)
    if user is None:
        return refuse("unauthenticated", 401, "authentication required")
    try:
        return rule(Call(judge, str(user), bool(auth.sender_is_admin())))
    except BadRequest as exc:
        return refuse("ambiguous-request", 400, str(exc))


def flask_hooks(judge: Judge) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
    """(before_request, after_request) for the Flask app; the first runs after MLflow's authentication."""
    from flask import g, jsonify, request

    def before() -> Any:
        verdict = judge_flask_request(judge)
        if verdict is None:
            return None
        g.llmops_verdict = verdict
        explain = request.headers.get(EXPLAIN_HEADER) and _is_admin()
        if verdict.allowed and not explain:
            return None
        code = {400: "INVALID_PARAMETER_VALUE", 401: "UNAUTHENTICATED"}.get(verdict.status or 0,
                                                                           "PERMISSION_DENIED")
        body = {"error_code": code if not verdict.allowed else "OK", "message": verdict.message or "allowed",
                "rule": verdict.rule}
        response = jsonify(body)
        response.status_code = verdict.status or 200
        return response

    def after(response: Any) -> Any:
        verdict = getattr(g, "llmops_verdict", None)
        if verdict is not None:
            response.headers[GUARD_HEADER] = verdict.rule
        return response

    return before, after


def _is_admin() -> bool:
    from flask import g

    from mlflow.server import auth

    return getattr(g, "mlflow_authenticated_user", None) is not None and bool(auth.sender_is_admin())


# -- the native FastAPI routes -----------------------------------------------------------------------------
def native_routes(fastapi_app: Any) -> list[tuple[re.Pattern, frozenset[str], str, str]]:
    """(path regex, methods, route name, path template) for every native route of the FastAPI app."""
    from starlette.routing import Mount, compile_path

    found = []

    def walk(routes: Iterable[Any]) -> None:
        for route in routes:
            if isinstance(route, Mount):
                continue
            if hasattr(route, "effective_route_contexts"):  # FastAPI >= 0.16x: included routers, lazily
                contexts = route.effective_route_contexts()
            else:
                contexts = [route]
            for ctx in contexts:
                path = getattr(ctx, "path", None)
                if path:
                    regex, _, _ = compile_path(path)
                    found.append((regex, frozenset(getattr(ctx, "methods", None) or ()), ctx.name, path))

    walk(fastapi_app.routes)
    return found


class NativeRouteGuard:
    """Pure ASGI middleware in front of MLflow's FastAPI app: judges mutating requests to native routes (the
    artifact proxy's PUT is served there, not through Flask). Flask-mounted paths pass to the Flask hooks."""

    def __init__(self, app: Any, judge: Judge, routes: list[tuple[re.Pattern, frozenset[str], str, str]]) -> None:
        self.app = app
        self.judge = judge
        self.routes = routes

    def match(self, path: str, method: str) -> tuple[str, dict[str, str]] | None:
        for regex, methods, name, _template in self.routes:
            found = regex.match(path)
            if found and method in methods:
                return name, found.groupdict()
        return None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATING:
            await self.app(scope, receive, send)
            return
        path = scope["path"][len(scope.get("root_path", "")):] if scope.get("root_path") else scope["path"]
        matched = self.match(path, scope["method"])
        if matched is None:
            await self.app(scope, receive, send)  # the Flask app's hooks judge it
            return
        name, params = matched
        import anyio

        verdict = await anyio.to_thread.run_sync(self.decide, name, params, scope)
        explain = any(k.lower() == EXPLAIN_HEADER.lower().encode() for k, _ in scope.get("headers", [])) and \
            await anyio.to_thread.run_sync(_basic_admin, scope)
        if verdict.allowed and not explain:
            await self.app(scope, receive, _with_header(send, verdict.rule))
            return
        status = verdict.status or 200
        body = json.dumps({"error_code": "OK" if verdict.allowed else (
            "INVALID_PARAMETER_VALUE" if status == 400 else "PERMISSION_DENIED"),
            "message": verdict.message or "allowed", "rule": verdict.rule}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (GUARD_HEADER.lower().encode(),
                                                                         verdict.rule.encode())]})
        await send({"type": "http.response.body", "body": body})

    def decide(self, name: str, params: dict[str, str], scope: dict) -> Verdict:
        rule = NATIVE_RULES.get(name)
        if rule is None:
            return refuse("unknown-endpoint", 403, f"{scope['method']} {scope['path']} is not a route this "
                                                   "server's policy knows (deny by default)")
        if rule == "artifact-write":
            if scope.get("query_string"):
                return refuse("ambiguous-request", 400, "an artifact upload must not carry a query string")
            from mlflow.utils.uri import validate_path_is_safe

            try:
                path = validate_path_is_safe(params.get("artifact_path", ""))
            except Exception as exc:  # noqa: BLE001
                return refuse("ambiguous-request", 400, f"unsafe artifact path: {exc}")
            return self.judge.artifact_write(f"mlflow-artifacts:/{path}", f"writing {path}")
        return allow(rule)


def _with_header(send: Any, rule: str) -> Any:
    async def wrapped(message: dict) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []),
                                              (GUARD_HEADER.lower().encode(), rule.encode())]}
        await send(message)

    return wrapped


def _basic_admin(scope: dict) -> bool:
    """Is the request's Basic user an MLflow admin with the right password (for the explain header only)."""
    import base64

    from mlflow.server.auth import store

    header = dict(scope.get("headers", [])).get(b"authorization", b"")
    if not header.lower().startswith(b"basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return bool(store.authenticate_user(user, password)) and store.get_user(user).is_admin
    except Exception:  # noqa: BLE001 - malformed credentials are simply not an admin
        return False
