"""The control plane's published API description: OpenAPI 3.1 at `/openapi.json`, a reference page
at `/docs`.

Litestar generates the document from the handlers and their msgspec types; `publish` then adds
what the handlers cannot say: each operation's id, summary and description (`openapi_ops.py`), the
errors it can answer in OpenAI's shape (`{"error": {message, type, param, code}}`, every code and
status drawn from core/errors.py, per door and per operation), the two credentials, and the
bodies the handlers build by hand (stored Response objects, streamed exports).

The reference page is Swagger UI 5 (it renders OpenAPI 3.1) served from the pinned
`swagger-ui-bundle-v2` package's files under `/docs/assets`: nothing is loaded from a CDN, so it
renders offline. Both are public (the document holds no secrets) and are served wherever the
control plane is reached; see docs/api.md for the ports.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import msgspec
import swagger_ui_bundle  # type: ignore[import-untyped]
from litestar import Litestar, Request, Response, get
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

from control_plane.api.openapi_ops import OPERATIONS
from control_plane.usage.model import FILTERS, GROUPS, WIDTH_MS
from core.errors import ERRORS

__all__ = ["ASSETS_PATH", "DOCUMENT_PATH", "PAGE_PATH", "openapi_config", "publish", "reference_routes"]

DOCUMENT_PATH = "/openapi.json"
PAGE_PATH = "/docs"
ASSETS_PATH = "/docs/assets"
METHODS = ("get", "put", "post", "delete", "patch")

DESCRIPTION = """\
The platform's own REST API, beside the OpenAI-compatible inference endpoints (`/v1/responses`,
`/v1/chat/completions`, `/v1/embeddings`, which follow OpenAI's API reference).

* `/v1/...` is for customers, through the API edge, with an API key (`Authorization: Bearer nx-...`)
  whose scopes allow the endpoint.
* `/v1/organization/...` is the organization's own REST API (projects, keys, members, invitations,
  admin keys, audit log), with an admin key (`nx_admin_...`) or a signed-in session.
* `/api/...` is the operator's management API, with the admin token.
* `/auth/...` is where customers sign up and in, through the edge without an API key; a session
  cookie afterwards, and `X-CSRF-Token` on the writes that use it.

Every error has OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`; the codes each
operation can answer are listed under its error responses. Money is integer nano-dollars
(1 USD = 10^9), times are Unix seconds unless a field says otherwise.
"""

# Codes any operation behind one door can answer (the edge's own checks come first for /v1).
EDGE_CODES = ("invalid_request_error", "missing_api_key", "invalid_api_key", "signature_required",
              "signature_timestamp_invalid", "signature_nonce_invalid", "signature_invalid", "nonce_reused",
              "scope_denied", "ip_not_allowed", "endpoint_not_allowed", "project_not_allowed",
              "rate_limit_exceeded", "internal_error", "sidecar_unavailable", "signature_check_unavailable")
ADMIN_CODES = ("invalid_request_error", "invalid_api_key", "internal_error")
ORG_CODES = ("invalid_request_error", "missing_required_parameter", "missing_api_key", "invalid_api_key",
             "permission_denied", "rate_limit_exceeded", "internal_error")
AUTH_CODES = ("invalid_request_error", "internal_error")
BODY_CODES = ("invalid_json", "request_too_large")

_RESPONSE_OBJECT = {
    "type": "object", "required": ["id", "object", "status"],
    "description": "OpenAI's Response object as stored (see OpenAI's API reference for every field).",
    "properties": {
        "id": {"type": "string"}, "object": {"const": "response"}, "model": {"type": "string"},
        "created_at": {"type": "integer"},
        "status": {"enum": ["queued", "in_progress", "completed", "failed", "cancelled", "incomplete"]},
    },
}
_PERIOD = [
    {"name": "from", "in": "query", "required": True, "schema": {"type": "string"},
     "description": "Start (inclusive): Unix seconds, a UTC date or an ISO 8601 date-time."},
    {"name": "to", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "End (exclusive), same forms; default now."},
]
_FORMAT = {"name": "format", "in": "query", "required": False,
           "schema": {"enum": ["csv", "jsonl"], "default": "csv"}}
_ACCOUNT = {"name": "account", "in": "query", "required": False,
            "schema": {"enum": ["all", "wallet", "promo"], "default": "all"}}
_USAGE = [
    {"name": "start_time", "in": "query", "required": True, "schema": {"type": "integer", "minimum": 0},
     "description": "Unix seconds, inclusive."},
    {"name": "end_time", "in": "query", "required": False, "schema": {"type": "integer"},
     "description": "Unix seconds, exclusive; default the end of the bucket holding now."},
    {"name": "bucket_width", "in": "query", "required": False, "schema": {"enum": list(WIDTH_MS), "default": "1d"}},
    {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1},
     "description": "Buckets per page."},
    {"name": "page", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "The previous answer's `next_page`."},
    {"name": "group_by", "in": "query", "required": False, "explode": True,
     "schema": {"type": "array", "items": {"enum": list(GROUPS)}},
     "description": "Repeated, bracketed (`group_by[]=`) or comma-separated."},
    *({"name": name, "in": "query", "required": False, "explode": True,
       "schema": {"type": "array", "items": {"type": "string"}}} for name in FILTERS),
]
_EXPORT = {"text/csv": {"schema": {"type": "string"}}, "application/x-ndjson": {"schema": {"type": "string"}}}


class ReferencePage(SwaggerRenderPlugin):
    """Swagger UI from local files, showing the published document (not Litestar's raw one)."""

    def __init__(self) -> None:
        super().__init__(
            path="/", js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js", css_url=f"{ASSETS_PATH}/swagger-ui.css",
            standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
            favicon=f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>")

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, published(request.app))


def openapi_config(version: str) -> OpenAPIConfig:
    return OpenAPIConfig(title="Open Ai platform: control-plane API", version=version, description=DESCRIPTION,
                         path=PAGE_PATH, render_plugins=[ReferencePage()], use_handler_docstrings=True)


@get(DOCUMENT_PATH, include_in_schema=False, sync_to_thread=False, media_type="application/json")
def openapi_document(request: Request[Any, Any, Any]) -> Response[bytes]:
    return Response(content=msgspec.json.encode(published(request.app)), media_type="application/json",
                    headers={"cache-control": "public, max-age=300"})


def reference_routes() -> list[ControllerRouterHandler]:
    assets = create_static_files_router(path=ASSETS_PATH, directories=[swagger_ui_bundle.swagger_ui_path],
                                        include_in_schema=False, send_as_attachment=False)
    return [openapi_document, assets]


def published(app: Litestar) -> dict[str, Any]:
    doc: dict[str, Any] | None = getattr(app.state, "openapi_published", None)
    if doc is None:
        doc = publish(app.openapi_schema.to_schema())
        app.state.openapi_published = doc
    return doc


def publish(raw: dict[str, Any]) -> dict[str, Any]:
    """Litestar's generated document plus ids, descriptions, errors and credentials."""
    doc: dict[str, Any] = _renamed(copy.deepcopy(raw))
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.update(_error_schemas(), ResponseObject=_RESPONSE_OBJECT)
    components["securitySchemes"] = {
        "apiKey": {"type": "http", "scheme": "bearer", "description": "An API key (`nx-...`), through the edge."},
        "adminToken": {"type": "http", "scheme": "bearer", "description": "The operator's admin token."},
        "adminKey": {"type": "http", "scheme": "bearer",
                     "description": "An organization's admin key (`nx_admin_...`), for `/v1/organization/...`."},
        "session": {"type": "apiKey", "in": "cookie", "name": "__Host-nx_session",
                    "description": "A signed-in session, with the organization in `OpenAI-Organization`; "
                                   "writes need the CSRF token."},
    }
    for path, item in doc.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                _operation(f"{method.upper()} {path}", path, item[method])
    return doc


def _operation(key: str, path: str, op: dict[str, Any]) -> None:
    spec = OPERATIONS.get(key)
    if spec is not None:
        op["operationId"], op["summary"] = spec.id, spec.summary
        if spec.description:
            op["description"] = spec.description
    op["tags"] = [_tag(path)]
    door = "organization" if path.startswith("/v1/organization") else path.split("/")[1]
    codes = list({"v1": EDGE_CODES, "api": ADMIN_CODES, "organization": ORG_CODES, "auth": AUTH_CODES}.get(door, ()))
    if door in ("v1", "api", "organization"):
        op["security"] = {"v1": [{"apiKey": []}], "api": [{"adminToken": []}],
                          "organization": [{"adminKey": []}, {"session": []}]}[door]
        codes += ["not_found"] if "{" in path else []
        codes += list(BODY_CODES) if "requestBody" in op else []
    elif door == "auth":
        op["security"] = [{}, {"session": []}]
        codes += list(BODY_CODES) if "requestBody" in op or path.endswith("/clerk") else []
    codes += list(spec.errors if spec is not None else ())
    ok = {status: r for status, r in op.get("responses", {}).items() if status.startswith("2")}
    op["responses"] = {**ok, **_error_responses(codes)}
    _special(key, op)


def _special(key: str, op: dict[str, Any]) -> None:
    """Answers a handler builds by hand, and query parameters it reads itself."""
    ok = next(iter(op["responses"].values()))
    if key in ("GET /v1/responses/{response_id}", "POST /v1/responses/{response_id}/cancel"):
        ok["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/ResponseObject"}}}
        if key.startswith("GET"):
            ok["content"]["text/event-stream"] = {"schema": {"type": "string"}}
    elif key == "GET /v1/usage":
        op["parameters"] = [*op.get("parameters", []), *_USAGE]
    elif key.startswith("GET /api/orgs/{org_id}/exports/"):
        ledger = "/exports/ledger" in key
        op["parameters"] = [*op.get("parameters", []), *_PERIOD, *([_ACCOUNT] if ledger else [])]
        if not key.endswith("/totals"):
            op["parameters"].append(_FORMAT)
            ok["content"] = _EXPORT


def _error_responses(codes: list[str]) -> dict[str, Any]:
    by_status: dict[int, list[str]] = {}
    for code in dict.fromkeys(codes):
        by_status.setdefault(ERRORS[code].status, []).append(code)
    out: dict[str, Any] = {}
    for status, listed in sorted(by_status.items()):
        schema = {"allOf": [{"$ref": "#/components/schemas/Error"}],
                  "properties": {"error": {"properties": {"code": {"enum": listed}}}}}
        out[str(status)] = {"description": "Error codes: " + ", ".join(f"`{c}`" for c in listed),
                            "content": {"application/json": {"schema": schema}}}
    return out


def _error_schemas() -> dict[str, Any]:
    detail = {"type": "object", "required": ["message", "type", "param", "code"], "properties": {
        "message": {"type": "string"},
        "type": {"enum": sorted({spec.type for spec in ERRORS.values()})},
        "param": {"type": ["string", "null"], "description": "The parameter at fault, if one is."},
        "code": {"enum": sorted(ERRORS)},
    }}
    return {"ErrorDetail": detail, "Error": {
        "type": "object", "required": ["error"], "properties": {"error": {"$ref": "#/components/schemas/ErrorDetail"}},
        "description": "OpenAI's error shape; `code` is one of the platform's codes (core/errors.py)."}}


def _tag(path: str) -> str:
    parts = [p for p in path.split("/") if p and not p.startswith("{")]
    if parts[:1] == ["api"]:
        name = parts[2] if parts[1:2] == ["orgs"] and len(parts) > 2 else parts[1]
        return f"operator: {name}"
    if parts[:2] == ["v1", "organization"] and len(parts) > 2:
        return f"organization: {parts[2]}"
    return parts[1] if len(parts) > 1 else parts[0]


def _renamed(doc: dict[str, Any]) -> dict[str, Any]:
    """Readable names for generic types: `ListOf[KeyView]` -> `KeyViewList`, `Page[X]` -> `XPage`."""
    schemas: dict[str, Any] = doc.get("components", {}).get("schemas", {})
    names: dict[str, str] = {}
    for name, schema in schemas.items():
        match = re.fullmatch(r"(\w+)\[(\w+)\]", str(schema.get("title", "")))
        if match and not re.fullmatch(r"\w+", name):
            base, arg = match.groups()
            names[name] = f"{arg}{'List' if base == 'ListOf' else base}"
    if not names:
        return doc
    refs = {f"#/components/schemas/{old}": f"#/components/schemas/{new}" for old, new in names.items()}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: refs.get(v, v) if k == "$ref" else walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    out: dict[str, Any] = walk(doc)
    out["components"]["schemas"] = {names.get(k, k): v for k, v in out["components"]["schemas"].items()}
    return out
