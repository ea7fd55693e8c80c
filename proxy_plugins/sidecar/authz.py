"""The pre-request check Envoy calls (ext_authz, HTTP mode) for every /v1 request.

One call carries every check so a request costs one sidecar round trip: path -> endpoint scope,
key (format, checksum, hash lookup, state), client IP range, project, and for inference the model
(alias resolution, allow-list, price card). Order matters: identity first, so an unauthenticated
caller learns nothing about models, projects or scopes.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import msgspec

from core.apikeys import hash_key, is_well_formed
from core.contract import Header, Route
from core.crypto import SIGNING_PURPOSE, unseal
from core.errors import ERRORS, ApiError, error_json
from core.jsonbody import too_deep, utf8_refusal
from core.snapshot import KeyCache, KeyRecord, ModelRecord, Snapshot
from proxy_plugins.sidecar.estimate import BodyFields, Estimate, EstimateFields, check_limits, estimate_from
from proxy_plugins.sidecar.hold import Holds
from proxy_plugins.sidecar.idempotency_gate import Gate, Refusal
from proxy_plugins.sidecar.limits import buckets_for, denial_message, limit_headers
from proxy_plugins.sidecar.ratelimit import Denial, LimitStore, retry_after_seconds
from proxy_plugins.sidecar.replay import SKEW_SECONDS, NonceStore, verify_signature
from proxy_plugins.sidecar.routes import route_plan

__all__ = ["CheckRequest", "Checker", "Decision", "classify"]

INFERENCE = {"/v1/responses": "responses", "/v1/chat/completions": "chat", "/v1/embeddings": "embeddings"}
MAX_PATH = 1024
"""Characters in a `/v1` path (without its query): every resource path is far shorter."""
CONTROL_PREFIXES = (("/v1/models", "models"), ("/v1/usage", "usage"), ("/v1/webhooks", "webhooks"),
                    ("/v1/responses/", "responses"))


def classify(method: str, path: str) -> tuple[str, str] | None:
    """(endpoint scope, upstream) for a /v1 path, or None when the platform has no such path."""
    path = path.split("?", 1)[0]
    if path in INFERENCE:
        return INFERENCE[path], "inference"
    for prefix, scope in CONTROL_PREFIXES:
        if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
            return scope, "control_plane"
    return None


class CheckRequest(msgspec.Struct, kw_only=True):
    request_id: str = ""
    method: str
    path: str
    authorization: str | None
    client_ip: str
    project: str | None
    body: bytes
    idempotency_key: str | None = None
    signature: tuple[str, str, str] = ("", "", "")
    """x-nx-timestamp, x-nx-nonce, x-nx-signature (Envoy forwards them as x-nxsig-*)."""


class Decision(msgspec.Struct, kw_only=True):
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""


class _ModelField(msgspec.Struct):
    model: str | None = None


def _deny(code: str, message: str, param: str | None = None, status: int | None = None) -> Decision:
    return Decision(status=status or ERRORS[code].status, body=error_json(code, message, param),
                    headers=[("content-type", "application/json")])


_SIGNATURE_MESSAGES = {
    "signature_required": "This API key requires signed requests: send x-nx-timestamp, x-nx-nonce and "
                          "x-nx-signature (see nx_client/signing.py).",
    "signature_timestamp_invalid": f"x-nx-timestamp must be unix seconds within {SKEW_SECONDS} s of the "
                                   "server's clock.",
    "signature_nonce_invalid": "x-nx-nonce must be 16-128 characters of [A-Za-z0-9_-].",
    "signature_invalid": "x-nx-signature does not match this request (method, path, timestamp, nonce, body).",
    "nonce_reused": "x-nx-nonce was already used within the replay window; use a fresh nonce per request.",
    "signature_check_unavailable": "Replay protection is temporarily unavailable, so signed requests are "
                                   "refused; please retry.",
}

RateLimited = Callable[[KeyRecord, str, CheckRequest, Denial, str | None], Awaitable[None]]


async def _ignore_rate_limited(*_: object) -> None:
    return None


class Checker:
    def __init__(self, pepper: str, internal_token: str, cache: KeyCache,
                 snapshot: Callable[[], Snapshot],
                 load_key: Callable[[str], Awaitable[KeyRecord | None]],
                 limits: LimitStore, nonces: NonceStore, gate: Gate, holds: Holds,
                 on_rate_limited: RateLimited = _ignore_rate_limited) -> None:
        self.pepper = pepper
        self.internal_token = internal_token
        self.cache = cache
        self.snapshot = snapshot
        self.load_key = load_key
        self.limits = limits
        self.nonces = nonces
        self.gate = gate
        self.holds = holds
        self.on_rate_limited = on_rate_limited

    async def _key(self, authorization: str | None) -> KeyRecord | Decision:
        if not authorization:
            return _deny("missing_api_key", "You didn't provide an API key. Send it as "
                         "'Authorization: Bearer nx_live_...'.")
        scheme, _, secret = authorization.strip().partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            return _deny("invalid_api_key", "Malformed Authorization header: expected 'Bearer <key>'.")
        if not is_well_formed(secret):
            return _deny("invalid_api_key", "Incorrect API key provided.")
        key_hash = hash_key(secret, self.pepper)
        hit, record = self.cache.get(key_hash)
        if not hit:
            record = await self.load_key(key_hash)
            self.cache.put(key_hash, record)
        if record is None:
            return _deny("invalid_api_key", "Incorrect API key provided.")
        if record.revoked:
            return _deny("invalid_api_key", "This API key has been revoked.")
        if record.disabled:
            return _deny("invalid_api_key", "This API key is disabled.")
        if record.expires_at_ms is not None and record.expires_at_ms <= time.time() * 1000:
            return _deny("invalid_api_key", "This API key has expired.")
        return record

    async def check(self, req: CheckRequest) -> Decision:
        route = classify(req.method, req.path)
        key = await self._key(req.authorization)
        if isinstance(key, Decision):
            return key
        if key.signing_secret_enc is not None:
            refused = await self._signature(key, req)
            if refused is not None:
                return refused
        path = req.path.split("?", 1)[0]
        if "\x00" in path or len(path) > MAX_PATH:
            # Refused before anything stores the path (the Idempotency-Key claim): PostgreSQL text
            # cannot hold NUL, and its index entries hold ~2.7 kB at most.
            return _deny("invalid_request_error", f"The request path must be at most {MAX_PATH} characters, "
                         "without NUL (%00).")
        if route is None:
            return _deny("not_found", f"Unknown path {req.method} {_shown(path)}.")
        endpoint, upstream = route
        if endpoint not in key.endpoints:
            return _deny("endpoint_not_allowed",
                         f"This API key is not allowed to use the '{endpoint}' endpoint (scope: endpoints).")
        if not key.allows_ip(req.client_ip):
            return _deny("ip_not_allowed",
                         f"Requests from {req.client_ip} are not allowed for this API key (scope: ip_ranges).")
        snap = self.snapshot()
        project = self._project(key, snap, req.project)
        if isinstance(project, Decision):
            return project
        headers = [(Header.ORG, key.org_id), (Header.PROJECT, project), (Header.KEY, key.id),
                   (Header.ENDPOINT, endpoint), (Header.INTERNAL, self.internal_token),
                   # The client's key never travels further than the sidecar.
                   ("x-envoy-auth-headers-to-remove", "authorization")]
        model: ModelRecord | None = None
        est: Estimate | None = None
        cover = 0
        if upstream == "inference" and req.method == "POST":
            resolved = self._model(key, snap, req.body, endpoint)
            if isinstance(resolved, Decision):
                return resolved
            model, fields, name = resolved
            # An output limit above the model's cap is refused before anything is reserved.
            over = check_limits(fields, model, endpoint, name)
            if over is not None:
                return _deny(over.code, over.message, over.param)
            # One estimate sizes both the tokens-per-minute charge and the money hold.
            est = estimate_from(fields, len(req.body), model, endpoint)
            headers += [(Header.MODEL, model.id), (Header.BACKEND, model.backend_id)]
            routed = route_plan(key, snap, name, model, fields, len(req.body), endpoint)
            if isinstance(routed, ApiError):
                return _deny(routed.code, routed.message, routed.param)
            if routed is not None:
                # The adapter may try each of these; the hold covers the priciest.
                headers.append((Header.PLAN, routed.header))
                cover = routed.cover
        # The gate only acts on a POST with an Idempotency-Key; skip the call (and its coroutine) otherwise.
        ticket = None
        if req.idempotency_key is not None and req.method == "POST":
            ticket = await self.gate.enter(org_id=key.org_id, key_id=key.id, method=req.method, path=req.path,
                                           idem_key=req.idempotency_key, body=req.body,
                                           request_id=req.request_id)
        if isinstance(ticket, Refusal):
            return Decision(status=ticket.status, body=ticket.body,
                            headers=[("content-type", "application/json")])
        if ticket is not None and ticket.mode == "replay":
            # Neither limits nor money: the adapter sends the stored answer.
            return Decision(status=200, headers=[*headers, (Header.ROUTE, Route.ADAPTER),
                                                 (Header.IDEM_REPLAY, ticket.record_id)])
        headers.append((Header.ROUTE, Route.ADAPTER if upstream == "inference" else Route.CONTROL_PLANE))
        if ticket is not None:
            headers.append((Header.IDEM, ticket.record_id))
        # Limits are taken only after authentication and authorization succeeded.
        buckets = buckets_for(key, project, snap, inference=model is not None,
                              tokens=est.total if est is not None else 0)
        verdict = await self.limits.acquire(req.request_id, buckets)
        rl_headers = limit_headers(verdict.usage)
        if verdict.denial is not None:
            if ticket is not None:
                await self.gate.release(ticket)
            await self.on_rate_limited(key, project, req, verdict.denial, model.id if model else None)
            denied = _deny("rate_limit_exceeded", denial_message(verdict.denial))
            denied.headers += [*rl_headers, ("retry-after", str(retry_after_seconds(verdict.denial.retry_after_ms))),
                               ("retry-after-ms", str(verdict.denial.retry_after_ms))]
            return denied
        if model is not None and est is not None:
            unheld = await self.holds.place(
                key=key, project=project, model=model, backend=snap.backends.get(model.backend_id),
                endpoint=endpoint, request_id=req.request_id, client_ip=req.client_ip, est=est, cover=cover)
            if isinstance(unheld, str):
                # The output the hold covers: the adapter asks the backend for no more.
                headers += [(Header.HOLD_PRICE, unheld), (Header.HOLD_OUTPUT, str(est.output_tokens))]
            else:
                await self.limits.refund(req.request_id, buckets)
                if ticket is not None:
                    await self.gate.release(ticket)
                return Decision(status=unheld[0], body=unheld[1],
                                headers=[("content-type", "application/json"), *rl_headers])
        headers += rl_headers
        if buckets:
            # Echoed back by the adapter when the request ends (finish): frees concurrency slots and
            # corrects the token estimate on whichever sidecar replica receives it.
            headers.append((Header.RATE_LIMIT, msgspec.json.encode(buckets).decode()))
        return Decision(status=200, headers=headers)

    async def _signature(self, key: KeyRecord, req: CheckRequest) -> Decision | None:
        assert key.signing_secret_enc is not None
        secret = unseal(key.signing_secret_enc, self.pepper, SIGNING_PURPOSE)
        timestamp, nonce, signature = req.signature
        code = verify_signature(secret, req.method, req.path, req.body, timestamp, nonce, signature, time.time())
        if code is None:
            try:
                if not await self.nonces.first_use(key.id, nonce):
                    code = "nonce_reused"
            except Exception:  # a replay check that cannot run refuses: it never fails open
                code = "signature_check_unavailable"
        return None if code is None else _deny(code, _SIGNATURE_MESSAGES[code])

    def _project(self, key: KeyRecord, snap: Snapshot, asked: str | None) -> str | Decision:
        org_projects = snap.org_projects.get(key.org_id, frozenset())
        if asked:
            # Another tenant's project id and a made-up one get the same answer.
            if asked not in org_projects or (key.projects and asked not in key.projects):
                return _deny("project_not_allowed",
                             f"This API key cannot act for project '{_shown(asked)}' (scope: projects).")
            return asked
        if key.projects:
            return sorted(key.projects & org_projects or key.projects)[0]
        return snap.default_project.get(key.org_id, "")

    def _model(self, key: KeyRecord, snap: Snapshot, body: bytes,
               endpoint: str) -> tuple[ModelRecord, EstimateFields, str] | Decision:
        """The model the body names, with the fields the estimate reads (one decode of the body)."""
        fields: EstimateFields
        bad = utf8_refusal(body)  # the decode below skips most strings, so it would not notice
        if bad is not None:
            return _deny(bad.code, bad.message)
        try:
            name, fields = _model_and_fields(body)
        except msgspec.ValidationError as exc:
            if "`$." not in str(exc):  # msgspec names no path when the top level has the wrong type
                return _deny("invalid_request_error", "The request body must be a JSON object.")
            return _deny("invalid_request_error", "'model' must be a string.", param="model")
        except msgspec.DecodeError:
            return _deny("invalid_json", "We could not parse the JSON body of your request.")
        except RecursionError:  # msgspec's guard against nesting deeper than the stack allows
            return _deny("invalid_json", too_deep().message)
        if not name:
            return _deny("missing_required_parameter", "Missing required parameter: 'model'.", param="model")
        model = snap.resolve(name)
        if model is None:
            return _deny("model_not_found",
                         f"The model '{_shown(name)}' does not exist or you do not have access to it.",
                         param="model")
        if not key.allows_model(name, model.id):
            return _deny("model_not_allowed",
                         f"This API key is not allowed to use model '{_shown(name)}' (scope: models).",
                         param="model")
        wanted_kind = "embedding" if endpoint == "embeddings" else "text"
        if model.kind != wanted_kind:
            return _deny("invalid_request_error",
                         f"The model '{_shown(name)}' is a {model.kind} model and cannot serve /{endpoint}.",
                         param="model")
        return model, fields, name


def _model_and_fields(body: bytes) -> tuple[str | None, EstimateFields]:
    """One decode for both readers; if some field has the wrong type, decode them apart, as each
    alone would: a non-string model raises ValidationError, any other wrong field only gives the
    estimate its defaults."""
    try:
        both = msgspec.json.decode(body or b"{}", type=BodyFields)
        return both.model, both
    except msgspec.ValidationError:
        return msgspec.json.decode(body or b"{}", type=_ModelField).model, _estimate_fields(body)


def _shown(value: str, limit: int = 200) -> str:
    """A client's value as echoed in an error message: bounded, so an answer never grows with it."""
    return value if len(value) <= limit else value[:limit] + "..."


def _estimate_fields(body: bytes) -> EstimateFields:
    try:
        return msgspec.json.decode(body, type=EstimateFields)
    except (msgspec.MsgspecError, RecursionError):
        return EstimateFields()  # the backend will refuse the body; the estimate only needs to be safe
