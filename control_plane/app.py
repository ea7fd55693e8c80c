"""The Litestar control plane: `/v1` routes behind the edge and the operator's management API.

Two doors:
- `/v1/...` arrives only through Envoy after the sidecar's check; the sidecar's `x-nx-internal`
  token proves it (compared in constant time) and `x-nx-org`/`x-nx-key` say who is calling.
- `/api/...` is the management API for operators and the CLI, authenticated with the admin token.
- `/v1/organization/...` is the customer REST API: Envoy passes it without the sidecar's check and
  the control plane authenticates an admin key or a session (control_plane/identity/principal.py).
- `/auth/...` is where customers sign up and in (control_plane/api/auth.py): no API key, a session
  cookie afterwards.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response, get
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController

from control_plane.api.auth import AuthController
from control_plane.api.client_input import ClientRequest, guard_url, openai_errors
from control_plane.api.exports import ExportsController
from control_plane.api.health import HealthController
from control_plane.api.idempotent import idempotent_answers
from control_plane.api.keys import KeysController
from control_plane.api.ledger import LedgerController
from control_plane.api.models import ModelCache, ModelsController
from control_plane.api.openapi import openapi_config, reference_routes
from control_plane.api.org_admin import AdminKeysController, AuditLogsController, SettingsController
from control_plane.api.org_deps import record_origin
from control_plane.api.org_people import InviteAcceptController, InvitesController
from control_plane.api.org_people import UsersController as OrgUsersController
from control_plane.api.org_projects import ProjectKeysController, ProjectsController
from control_plane.api.orgs import OrgsController, UsersController
from control_plane.api.responses import ResponsesController
from control_plane.api.routing import ModelAdminController, RoutingController
from control_plane.api.usage import UsageController
from control_plane.api.webhooks import WebhooksController
from core.auth_attempts import FailureThrottle
from core.db import make_engine
from core.errors import ApiError, error_body, refusal
from core.ledger import LedgerError
from core.notify import Notifier
from core.secrets import load_secrets
from core.settings import Settings

__all__ = ["create_app"]

# The customer REST API (`/v1/organization/...`): admin keys or sessions, checked by the control plane.
CUSTOMER_API = [ProjectsController, ProjectKeysController, OrgUsersController, InvitesController,
                InviteAcceptController, AdminKeysController, AuditLogsController, SettingsController]

log = logging.getLogger("nx.control_plane")


def _api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[Any]:
    return Response(content=exc.body(), status_code=exc.status, headers=exc.headers)


def _ledger_error(request: Request[Any, Any, Any], exc: LedgerError) -> Response[Any]:
    return _api_error(request, refusal(exc))


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    if isinstance(exc, ValidationException):
        extra = exc.extra if isinstance(exc.extra, list) else []
        param = None
        if extra and isinstance(extra[0], dict):
            param = str(extra[0].get("key") or "") or None
            message = str(extra[0].get("message") or exc.detail)
        else:
            message = str(exc.detail)
        code = "invalid_json" if "JSON is malformed" in message else "invalid_request_error"
        return Response(content=error_body(code, message, param), status_code=400)
    if status == 400 and "JSON is malformed" in str(exc.detail):  # a ClientException, not a validation one
        return Response(content=error_body("invalid_json", str(exc.detail)), status_code=400)
    code = {401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed", 413: "request_too_large",
            409: "conflict"}.get(status, "internal_error" if status >= 500 else "invalid_request_error")
    if isinstance(exc, NotAuthorizedException):
        code = "invalid_api_key"
    return Response(content=error_body(code, str(exc.detail)), status_code=status)


def _unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error", exc_info=exc)
    return Response(content=error_body("internal_error", "The server had an error processing your request."),
                    status_code=500)


@get("/healthz", sync_to_thread=False)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


class MetricsController(PrometheusController):
    """`GET /metrics` on the control plane's own port (the edge answers 404 for it: routes.yaml)."""

    include_in_schema = False


# Litestar's Prometheus middleware (prometheus-client): requests by method, route template (never
# the raw path: ids would grow the series without bound) and status.
PROMETHEUS = PrometheusConfig(app_name="control_plane", prefix="nx_control_plane", group_path=True,
                              exclude_unhandled_paths=True, exclude=["/metrics", "/healthz"])


def create_app(settings: Settings) -> Litestar:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.secrets = load_secrets(settings)
        app.state.trusted_proxies = settings.trusted_proxy_networks  # guards.client_address
        app.state.engine = make_engine(settings)
        app.state.notifier = Notifier(settings, app.state.secrets.internal_token)
        app.state.model_cache = ModelCache()
        app.state.admin_throttle = FailureThrottle()
        app.state.edge_throttle = FailureThrottle()
        app.state.org_throttle = FailureThrottle()
        try:
            yield
        finally:
            await app.state.notifier.close()
            await app.state.engine.dispose()

    return Litestar(
        # The refusals run inside idempotent_answers, so a claimed Idempotency-Key stores them.
        middleware=[PROMETHEUS.middleware, idempotent_answers, guard_url, openai_errors, record_origin],
        request_class=ClientRequest,
        route_handlers=[healthz, MetricsController, LedgerController, ModelsController, KeysController,
                        RoutingController, ModelAdminController, HealthController,
                        OrgsController, UsersController, WebhooksController, ResponsesController,
                        UsageController, ExportsController, AuthController, *CUSTOMER_API,
                        *reference_routes()],
        lifespan=[lifespan],
        exception_handlers={ApiError: _api_error, LedgerError: _ledger_error, HTTPException: _http_error,
                            Exception: _unexpected},
        request_max_body_size=settings.max_body_bytes,
        # Published at /openapi.json with a reference page at /docs (control_plane/api/openapi.py).
        openapi_config=openapi_config(importlib.metadata.version("nx-platform")),
        debug=False,
        # Logging is core/telemetry's (JSON lines, keys masked): Litestar must not replace the handlers.
        logging_config=None,
    )
