"""A minimal Envoy that only proxies to the simulator: the floor any Envoy-based pipeline pays.

Same binary, same `--concurrency` and the same circuit-breaker limits as the platform's edge
(control_plane/envoy_config.py), no filters but the router, so the difference between this and the
full pipeline is the platform's own work.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx

from control_plane.supervisor import envoy_binary
from tests.harness import free_port

__all__ = ["PlainEnvoy", "render"]

_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def render(listen_port: int, admin_port: int, upstream_port: int) -> dict[str, object]:
    hcm = {
        "@type": _HCM, "stat_prefix": "plain", "codec_type": "AUTO",
        "stream_idle_timeout": "300s", "request_timeout": "0s",
        "route_config": {"name": "plain", "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "sim", "timeout": "0s"}}]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": _ROUTER}}],
    }
    cluster = {
        "name": "sim", "type": "STATIC", "connect_timeout": "1s",
        "circuit_breakers": {"thresholds": [{"max_connections": 100000, "max_pending_requests": 100000,
                                             "max_requests": 100000, "max_retries": 10}]},
        "load_assignment": {"cluster_name": "sim", "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream_port}}}}]}]},
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{"name": "plain", "address": {"socket_address": {
                "address": "127.0.0.1", "port_value": listen_port}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": hcm}]}]}],
            "clusters": [cluster],
        },
    }


class PlainEnvoy:
    def __init__(self, workdir: Path, upstream_port: int) -> None:
        self.workdir = workdir
        self.upstream_port = upstream_port
        self.port = free_port()
        self.admin_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PlainEnvoy:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "plain-envoy.json"
        config.write_text(json.dumps(render(self.port, self.admin_port, self.upstream_port)))
        concurrency = os.environ.get("NX_ENVOY_CONCURRENCY", "2")  # as bench/stack.py's edge
        self.proc = subprocess.Popen(
            [envoy_binary(), "-c", str(config), "--concurrency", concurrency, "--log-level", "warn",
             "--use-dynamic-base-id"], stdout=subprocess.DEVNULL, stderr=(self.workdir / "envoy.log").open("wb"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{self.admin_port}/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"plain Envoy did not start: {(self.workdir / 'envoy.log').read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None
