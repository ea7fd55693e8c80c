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

from control_plane.envoy_templates import OMIT, render
from core.contract import ACCESS_LOG_TAG, SIDECAR_ERROR_STATUS, SIDECAR_REFUSAL_503, Header, Route
from core.errors import ERRORS, error_json
from core.rows import columns, rows_as
from core.settings import Settings

__all__ = ["BackendRow", "render_bootstrap", "render_dynamic", "write_bootstrap", "write_dynamic"]

Json = dict[str, Any]


class BackendRow(msgspec.Struct, frozen=True):
    id: str
    base_url: str
    timeout_ms: int
    connect_timeout_ms: int


def _cluster(name: str, host: str, port: int | list[int], *, tls: bool = False, connect_ms: int = 1000,
             http2: bool = False) -> Json:
    ports = port if isinstance(port, list) else [port]
    return render("cluster.yaml", {  # type: ignore[no-any-return]
        "name": name, "discovery": "STATIC" if _is_ip(host) else "STRICT_DNS",
        "connect_timeout": f"{connect_ms / 1000:.3f}s",
        "endpoints": [{"endpoint": {"address": {"socket_address": {"address": host, "port_value": p}}}}
                      for p in ports],
        "http2": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}} if http2 else OMIT,
        "tls": {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": host}} if tls else OMIT,
    })


def _is_ip(host: str) -> bool:
    return all(part.isdigit() for part in host.split(".")) and host.count(".") == 3


_CONTRACT = {f"{kind.__name__.lower()}.{name.lower()}": value for kind in (Header, Route)
             for name, value in vars(kind).items() if name.isupper()}
"""`${header.client_ip}`, `${route.adapter}`, ...: the contract's names for the templates."""


def _common(settings: Settings) -> dict[str, Any]:
    """What every template may name: the settings Envoy needs, the contract, the error table."""
    values: dict[str, Any] = {
        "envoy_dir": str(settings.envoy_dir), "envoy_admin_port": settings.envoy_admin_port,
        "edge_host": settings.edge_host, "edge_port": settings.edge_port,
        "operator_host": settings.operator_host, "operator_port": settings.operator_port,
        "xff_trusted_hops": settings.xff_trusted_hops, "max_body_bytes": settings.max_body_bytes,
        "sidecar_url": settings.sidecar_url,
        "status.sidecar_error": SIDECAR_ERROR_STATUS, "status.sidecar_refusal_503": SIDECAR_REFUSAL_503,
        "no_authz": {"envoy.filters.http.ext_authz": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
            "disabled": True}},
    }
    values.update(_CONTRACT)
    for code, spec in ERRORS.items():
        values[f"error.{code}.status"] = spec.status
        values[f"error.{code}.type"] = spec.type
    values["error.not_found.json"] = error_json("not_found", "Unknown path.").decode()
    return values


def _tracing(settings: Settings) -> tuple[Any, list[Json]]:
    """Envoy's OpenTelemetry tracer and the cluster of its OTLP receiver, or nothing (tracing off)."""
    if not settings.otel_endpoint:
        return OMIT, []
    url = urlsplit(settings.otel_endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    tracing = render("tracing.yaml", {"otel_traces_url": settings.otel_endpoint.rstrip("/") + "/v1/traces",
                                      "trace_sample_percent": settings.trace_sample_ratio * 100})
    return tracing, [_cluster("otel_collector", url.hostname or "127.0.0.1", port, tls=url.scheme == "https")]


def render_bootstrap(settings: Settings) -> Json:
    values = _common(settings)
    values["local_reply"] = render("local-reply.yaml", values)
    values["ended_log"] = render("ended-log.yaml", {**values, "ended_log_tag": ACCESS_LOG_TAG})
    values["tracing"], values["otel_cluster"] = _tracing(settings)
    values["edge_listener"] = render("edge-listener.yaml", values)
    values["operator_listener"] = render("operator-listener.yaml", values)
    values["sidecar_cluster"] = _cluster("sidecar", settings.sidecar_host, settings.sidecar_ports)
    values["control_plane_cluster"] = _cluster("control_plane", settings.control_plane_host,
                                               settings.control_plane_port)
    values["adapter_cluster"] = _cluster("adapter", settings.adapter_host, settings.adapter_ports)
    values["sidecar_log_cluster"] = _cluster("sidecar_log", settings.sidecar_host, settings.sidecar_log_ports)
    values["envoy_admin_cluster"] = _cluster("envoy_admin", "127.0.0.1", settings.envoy_admin_port)
    return render("bootstrap.yaml", values)  # type: ignore[no-any-return]


def render_dynamic(settings: Settings, backends: list[BackendRow]) -> tuple[Json, Json]:
    """(CDS, RDS) documents for the backends in the database."""
    clusters, routes = [], []
    for b in backends:
        url = urlsplit(b.base_url)
        tls = url.scheme == "https"
        port = url.port or (443 if tls else 80)
        clusters.append(_cluster(f"backend_{b.id}", url.hostname or "", port, tls=tls,
                                 connect_ms=b.connect_timeout_ms))
        base = url.path.rstrip("/")
        routes.append(render("backend-route.yaml", {
            **_CONTRACT, "id": b.id, "timeout": f"{b.timeout_ms / 1000:.3f}s", "host": url.netloc or OMIT,
            "prefix_rewrite": (base[: -len("/v1")] if base.endswith("/v1") else base) + "/v1/"}))
    values = _common(settings)
    values["backend_routes"] = routes
    cds = {"resources": [{"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", **c} for c in clusters]}
    rds = {"resources": [render("routes.yaml", values)]}
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
    return rows_as(BackendRow, await conn.execute(text(
        f"SELECT {columns(BackendRow)} FROM backends WHERE enabled = 1 ORDER BY id")))


async def write_dynamic(settings: Settings, conn: AsyncConnection) -> None:
    settings.envoy_dir.mkdir(parents=True, exist_ok=True)
    cds, rds = render_dynamic(settings, await load_backends(conn))
    # Clusters first so that a route never points at a cluster Envoy has not seen yet.
    _write_atomic(settings.envoy_dir / "cds.json", cds)
    _write_atomic(settings.envoy_dir / "rds.json", rds)
