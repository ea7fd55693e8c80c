"""Renders Envoy's configuration: a static bootstrap plus file-based dynamic clusters and routes.

Why file-based xDS rather than a gRPC xDS server: it needs no extra process or gRPC stack, and
Envoy 1.40 applies a renamed-in file in under 0.1 s without a restart (measured in
`envoy-sidecar-probe.md`). Files are written to a temp name and renamed into the watched
directory, because Envoy does not notice a file rewritten in place.

Request path: header_mutation (strip client-sent `x-nx-*`, stamp `x-nx-client-ip` from the socket
or trusted X-Forwarded-For hops, prefix the request id with `req_`) -> ext_authz (HTTP, sidecar;
one call does every check and names the route in `x-nx-route`) -> router (routes match that header).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.contract import SIDECAR_REFUSAL_503
from core.errors import ERRORS
from core.settings import Settings

__all__ = ["BackendRow", "render_bootstrap", "render_dynamic", "write_bootstrap", "write_dynamic"]

Json = dict[str, Any]
ROUTE_HEADER = "x-nx-route"
SIDECAR_ERROR_STATUS = 511
_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


class BackendRow(msgspec.Struct, frozen=True):
    id: str
    base_url: str
    timeout_ms: int
    connect_timeout_ms: int


def _cluster(name: str, host: str, port: int | list[int], *, tls: bool = False, connect_ms: int = 1000,
             http2: bool = False) -> Json:
    ports = port if isinstance(port, list) else [port]
    cluster: Json = {
        "name": name, "type": "STRICT_DNS" if not _is_ip(host) else "STATIC",
        "connect_timeout": f"{connect_ms / 1000:.3f}s", "dns_lookup_family": "V4_PREFERRED",
        # Each in-flight LLM stream holds a request slot; Envoy's default of 1,024 would cap them.
        "circuit_breakers": {"thresholds": [{"max_connections": 100000, "max_pending_requests": 100000,
                                             "max_requests": 100000, "max_retries": 10}]},
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": host, "port_value": p}}}} for p in ports]}]},
    }
    if http2:
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}}
    if tls:
        cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": host}}
    return cluster


def _is_ip(host: str) -> bool:
    return all(part.isdigit() for part in host.split(".")) and host.count(".") == 3


def _error_mapper(flags: list[str] | None, status: int | None, code: str, message: str) -> Json:
    filters: list[Json] = []
    if flags:
        filters.append({"response_flag_filter": {"flags": flags}})
    if status is not None:
        filters.append({"status_code_filter": {"comparison": {
            "op": "EQ", "value": {"default_value": status, "runtime_key": f"nx.local_reply.{code}"}}}})
    spec = ERRORS[code]
    return {
        "filter": filters[0] if len(filters) == 1 else {"and_filter": {"filters": filters}},
        "status_code": spec.status,
        "body_format_override": {"json_format": {"error": {
            "message": message, "type": spec.type, "param": None, "code": code}}},
    }


def _local_reply_config() -> Json:
    # Envoy's own replies get the OpenAI error shape from the same table as the services'.
    return {"mappers": [
        # Envoy treats any 5xx from the authorization service as its failure, so the sidecar sends its
        # own 503 refusals (billing or replay check unavailable) as 418, restored to 503 here with
        # the sidecar's body; a sidecar that cannot be reached surfaces as 511 (status_on_error)
        # and gets 503 sidecar_unavailable.
        {"filter": {"and_filter": {"filters": [
            {"response_flag_filter": {"flags": ["UAEX"]}},
            {"status_code_filter": {"comparison": {"op": "EQ", "value": {
                "default_value": SIDECAR_REFUSAL_503, "runtime_key": "nx.local_reply.sidecar_503"}}}}]}},
         "status_code": 503},
        _error_mapper(["UAEX"], SIDECAR_ERROR_STATUS, "sidecar_unavailable",
                      "The request could not be authorized right now; please retry."),
        _error_mapper(["NR"], None, "not_found", "Unknown path."),
        _error_mapper(None, 413, "request_too_large", "Request body is too large."),
        _error_mapper(["UT"], None, "upstream_timeout", "The upstream model backend timed out."),
        _error_mapper(["UF", "UH", "URX", "UO", "NC", "UC"], None, "upstream_unavailable",
                      "The upstream service is unavailable; please retry."),
    ]}


def render_bootstrap(settings: Settings) -> Json:
    d = settings.envoy_dir
    watched = {"path": str(d)}
    hcm: Json = {
        "@type": _HCM, "stat_prefix": "edge", "codec_type": "AUTO",
        "use_remote_address": True, "xff_num_trusted_hops": settings.xff_trusted_hops,
        "generate_request_id": True, "preserve_external_request_id": False,
        "always_set_request_id_in_response": True,
        "request_id_extension": {"typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig",
            "pack_trace_reason": False, "use_request_id_for_trace_sampling": False}},
        "stream_idle_timeout": "300s", "request_timeout": "0s",
        "rds": {"route_config_name": "edge_routes", "config_source": {
            "resource_api_version": "V3",
            "path_config_source": {"path": str(d / "rds.json"), "watched_directory": watched}}},
        "http_filters": [_header_mutation(), _ext_authz(settings),
                         {"name": "envoy.filters.http.router", "typed_config": {
                             "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        "local_reply_config": _local_reply_config(),
    }
    return {
        "node": {"id": "nx-edge", "cluster": "nx"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                 "port_value": settings.envoy_admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "edge", "address": {"socket_address": {"address": settings.edge_host,
                                                               "port_value": settings.edge_port}},
                "per_connection_buffer_limit_bytes": 1024 * 1024,
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": hcm}]}],
            }],
            "clusters": [
                # One endpoint per sidecar process: Envoy balances checks across them per request.
                _cluster("sidecar", settings.sidecar_host, settings.sidecar_ports),
                _cluster("control_plane", settings.control_plane_host, settings.control_plane_port),
                _cluster("adapter", settings.adapter_host, settings.adapter_ports),
            ],
        },
        "dynamic_resources": {"cds_config": {"resource_api_version": "V3", "path_config_source": {
            "path": str(d / "cds.json"), "watched_directory": watched}}},
        "overload_manager": {"resource_monitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3."
                         "DownstreamConnectionsConfig",
                "max_active_downstream_connections": 50000}}]},
    }


def _header_mutation() -> Json:
    def put(key: str, value: str) -> Json:
        return {"append": {"header": {"key": key, "value": value},
                           "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}}

    return {"name": "envoy.filters.http.header_mutation", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
        "mutations": {"request_mutations": [
            # The client's own replay-protection headers survive the strip below under x-nxsig-*.
            put("x-nxsig-timestamp", "%REQ(x-nx-timestamp)%"),
            put("x-nxsig-nonce", "%REQ(x-nx-nonce)%"),
            put("x-nxsig-signature", "%REQ(x-nx-signature)%"),
            # Clients can never inject the headers the sidecar adds.
            {"remove_on_match": {"key_matcher": {"prefix": "x-nx-"}}},
            {"remove": "x-envoy-auth-headers-to-remove"},
            put("x-nx-client-ip", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
            put("x-request-id", "req_%REQ(x-request-id)%"),
        ]}}}


def _ext_authz(settings: Settings) -> Json:
    def exact(*names: str) -> Json:
        return {"patterns": [{"exact": n} for n in names]}

    return {"name": "envoy.filters.http.ext_authz", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        "transport_api_version": "V3", "failure_mode_allow": False,
        "status_on_error": {"code": SIDECAR_ERROR_STATUS}, "clear_route_cache": True,
        "with_request_body": {"max_request_bytes": settings.max_body_bytes, "allow_partial_message": False},
        "allowed_headers": exact("authorization", "openai-project", "x-nx-client-ip", "content-type",
                                 "x-request-id", "idempotency-key", "openai-organization",
                                 "x-nxsig-timestamp", "x-nxsig-nonce", "x-nxsig-signature"),
        "http_service": {
            "server_uri": {"uri": settings.sidecar_url, "cluster": "sidecar", "timeout": "2s"},
            "path_prefix": "/authz",
            "authorization_response": {
                "allowed_upstream_headers": {"patterns": [{"prefix": "x-nx-"}]},
                "allowed_client_headers": {"patterns": [{"exact": "content-type"}, {"prefix": "x-ratelimit-"},
                                                        {"exact": "retry-after"}, {"exact": "retry-after-ms"}]},
                "allowed_client_headers_on_success": {"patterns": [{"prefix": "x-ratelimit-"}]},
            },
        },
    }}


def _no_authz() -> Json:
    return {"envoy.filters.http.ext_authz": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
        "disabled": True}}


def _header_route(value: str, cluster: str, timeout_ms: int, prefix_rewrite: str | None = None,
                  host: str | None = None) -> Json:
    action: Json = {"cluster": cluster, "timeout": f"{timeout_ms / 1000:.3f}s", "idle_timeout": "300s"}
    if prefix_rewrite is not None:
        action["prefix_rewrite"] = prefix_rewrite
    if host:
        action["host_rewrite_literal"] = host
    return {"match": {"prefix": "/v1/", "headers": [{"name": ROUTE_HEADER, "string_match": {"exact": value}}]},
            "route": action}


def render_dynamic(settings: Settings, backends: list[BackendRow]) -> tuple[Json, Json]:
    """(CDS, RDS) documents for the backends in the database."""
    clusters, routes = [], []
    for b in backends:
        url = urlsplit(b.base_url)
        tls = url.scheme == "https"
        port = url.port or (443 if tls else 80)
        name = f"backend_{b.id}"
        clusters.append(_cluster(name, url.hostname or "", port, tls=tls, connect_ms=b.connect_timeout_ms))
        base = url.path.rstrip("/")
        # Clients call /v1/...; a backend at https://host/openai/v1 gets /openai/v1/...
        routes.append(_header_route(f"backend.{b.id}", name, b.timeout_ms,
                                    prefix_rewrite=(base[: -len("/v1")] if base.endswith("/v1") else base) + "/v1/",
                                    host=url.netloc))
    routes += [
        _header_route("control_plane", "control_plane", 60_000),
        _header_route("adapter", "adapter", 600_000),
        {"match": {"prefix": "/v1/"}, "direct_response": {"status": 404}},
        {"match": {"path": "/healthz"}, "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}},
         "typed_per_filter_config": _no_authz()},
        # Everything outside /v1 is the control plane's own (web app, management API); it checks
        # its own credentials.
        {"match": {"prefix": "/"}, "route": {"cluster": "control_plane", "timeout": "60s"},
         "typed_per_filter_config": _no_authz()},
    ]
    cds = {"resources": [{"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", **c} for c in clusters]}
    rds = {"resources": [{
        "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration", "name": "edge_routes",
        "virtual_hosts": [{"name": "edge", "domains": ["*"], "routes": routes}]}]}
    return cds, rds


def _write_atomic(path: Path, doc: Json) -> None:
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    tmp.write_bytes(msgspec.json.encode(doc))
    tmp.replace(path)  # a rename is what Envoy's directory watch notices


def write_bootstrap(settings: Settings) -> Path:
    settings.envoy_dir.mkdir(parents=True, exist_ok=True)
    path = settings.envoy_dir / "bootstrap.json"
    _write_atomic(path, render_bootstrap(settings))
    return path


async def load_backends(conn: AsyncConnection) -> list[BackendRow]:
    rows = await conn.execute(text(
        "SELECT id, base_url, timeout_ms, connect_timeout_ms FROM backends WHERE enabled = 1 ORDER BY id"))
    return [BackendRow(str(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows]


async def write_dynamic(settings: Settings, conn: AsyncConnection) -> None:
    settings.envoy_dir.mkdir(parents=True, exist_ok=True)
    cds, rds = render_dynamic(settings, await load_backends(conn))
    # Clusters first so that a route never points at a cluster Envoy has not seen yet.
    _write_atomic(settings.envoy_dir / "cds.json", cds)
    _write_atomic(settings.envoy_dir / "rds.json", rds)
