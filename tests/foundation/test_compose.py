"""compose.yaml cannot run here (no container engine), so check that it agrees with the code:
service names, ports, every NX_* variable, the Envoy bootstrap rendered from each service's
environment, the compose catalog, and that .env.example lists every setting."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest
import yaml  # type: ignore[import-untyped]

from control_plane.domain.catalog import load_catalog
from control_plane.envoy_config import render_bootstrap
from core.secrets import load_secrets
from core.settings import Settings, env_name, load_settings
from tests.harness import ROOT

ALL = "0.0.0.0"  # noqa: S104 - containers bind every interface of their own network namespace
SERVICES = {"envoy", "sidecar", "adapter", "control-plane", "worker", "local-models", "postgres", "redis"}
OBSERVABILITY = {"prometheus", "grafana", "otel-collector"}
"""The `observability` profile's services (docs/observability.md)."""
SECRETS = {"NX_INTERNAL_TOKEN", "NX_ADMIN_TOKEN"}  # read by bootstrap.load_secrets, not Settings
# DATABASE_URL and REDIS_URL go by their conventional names (NX_DATABASE_URL works too).
SETTING_VARS = {"DATABASE_URL", "REDIS_URL"} | {
    env_name(f.name) for f in msgspec.structs.fields(Settings) if f.name not in ("database_url", "redis_url")}
FAKE_SECRETS = {"POSTGRES_PASSWORD": "pw", "NX_KEY_PEPPER": "pepper", "NX_INTERNAL_TOKEN": "internal",
                "NX_ADMIN_TOKEN": "admin"}


def _interpolate(value: str) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?message}, with test values for the secrets."""
    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2) or "", m.group(3) or ""
        if name in FAKE_SECRETS:
            return FAKE_SECRETS[name]
        return arg if op == ":-" else ""
    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)(:-|:\?)?([^}]*)\}", sub, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())  # type: ignore[no-any-return]


def _env(compose: dict[str, Any], service: str) -> dict[str, str]:
    raw = compose["services"][service].get("environment") or {}
    assert isinstance(raw, dict), f"{service}: use the mapping form for environment"
    return {k: _interpolate(str(v)) for k, v in raw.items()}


def _settings(compose: dict[str, Any], service: str, tmp: Path) -> Settings:
    env = _env(compose, service)
    env["NX_DATA_DIR"] = str(tmp / service)  # /data is the container's; render into a temp dir
    return load_settings(env)


def _ports(compose: dict[str, Any], service: str) -> set[int]:
    spec = compose["services"][service]
    ports = {int(str(p)) for p in spec.get("expose", [])}
    for mapping in spec.get("ports", []):
        ports.add(int(_interpolate(str(mapping)).rsplit(":", 1)[-1]))
    return ports


def test_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES | OBSERVABILITY
    for name in OBSERVABILITY:
        assert compose["services"][name].get("profiles") == ["observability"], name
    app_services = SERVICES - {"postgres", "redis"}
    for name in app_services:
        spec = compose["services"][name]
        assert spec.get("build") == "." and spec.get("restart") == "unless-stopped", name
    for name, spec in compose["services"].items():  # issue 12, finding 10: every service
        assert spec.get("restart") == "unless-stopped" and spec.get("healthcheck", {}).get("test"), name
    assert (ROOT / "Dockerfile").exists()
    for name, spec in compose["services"].items():
        for dep in spec.get("depends_on", {}):
            assert dep in SERVICES | OBSERVABILITY, (name, dep)


def test_observability_profile_scrapes_every_process(compose: dict[str, Any], tmp_path: Path) -> None:
    """Prometheus's targets are the services' metrics ports; its files are the repository's."""
    prometheus = yaml.safe_load((ROOT / "deploy" / "observability" / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"][0] for job in prometheus["scrape_configs"]}
    assert set(targets) == {f"nx-{name}" for name in SERVICES - {"postgres", "redis"}}
    for job, target in targets.items():
        host, port = target.rsplit(":", 1)
        assert host == job.removeprefix("nx-") and int(port) in _ports(compose, host), job
    worker = _settings(compose, "worker", tmp_path)
    assert worker.worker_metrics_host == ALL and targets["nx-worker"].endswith(f":{worker.worker_metrics_port}")
    envoy = _settings(compose, "envoy", tmp_path)
    assert targets["nx-envoy"].endswith(f":{envoy.operator_port}")  # /stats/prometheus on the operator listener
    for service in OBSERVABILITY:
        for volume in compose["services"][service].get("volumes", []):
            if volume.startswith("./"):
                assert (ROOT / volume.split(":", 1)[0]).exists(), volume

def test_every_nx_variable_is_a_setting(compose: dict[str, Any], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SERVICES - {"postgres", "redis"}:
        env = _env(compose, name)
        unknown = {k for k in env if (k.startswith("NX_") or k in ("DATABASE_URL", "REDIS_URL"))
                   and k not in SETTING_VARS | SECRETS}
        assert not unknown, (name, unknown)
        settings = _settings(compose, name, tmp_path)  # validates every value
        assert not settings.is_sqlite and settings.redis_url
        assert urlsplit(settings.database_url).hostname == "postgres"
        assert urlsplit(settings.redis_url).hostname == "redis"
        assert urlsplit(settings.database_url).port in _ports(compose, "postgres")
        assert urlsplit(settings.redis_url).port in _ports(compose, "redis")
        # All processes share the same secrets, or keys and edge tokens would not verify.
        for var in SECRETS:  # load_secrets reads these from the process environment
            monkeypatch.setenv(var, env[var])
        secrets = load_secrets(settings)
        assert (secrets.key_pepper, secrets.internal_token, secrets.admin_token) == ("pepper", "internal",
                                                                                     "admin")


def test_envoy_bootstrap_points_at_the_services(compose: dict[str, Any], tmp_path: Path) -> None:
    s = _settings(compose, "envoy", tmp_path)
    boot = render_bootstrap(s)
    edge, operator = (listener["address"]["socket_address"] for listener in boot["static_resources"]["listeners"])
    assert edge["address"] == ALL and operator["address"] == ALL
    assert edge["port_value"] in _ports(compose, "envoy") and operator["port_value"] in _ports(compose, "envoy")
    # The operator API is published on the host's loopback only, the edge on every interface.
    published = {int(_interpolate(str(m)).rsplit(":", 1)[-1]): _interpolate(str(m))
                 for m in compose["services"]["envoy"]["ports"]}
    assert published[operator["port_value"]].startswith("127.0.0.1:")
    assert not published[edge["port_value"]].startswith("127.0.0.1:")
    clusters = {c["name"]: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["socket_address"] for c in boot["static_resources"]["clusters"]}
    expected = {"sidecar": ("sidecar", "sidecar"), "control_plane": ("control-plane", "control-plane"),
                "adapter": ("adapter", "adapter"), "sidecar_log": ("sidecar", "sidecar")}
    for cluster, (host, service) in expected.items():
        assert clusters[cluster]["address"] == host, cluster
        assert clusters[cluster]["port_value"] in _ports(compose, service), cluster
    # each service listens where Envoy dials it: its own setting, bound on all interfaces
    sidecar, cp = _settings(compose, "sidecar", tmp_path), _settings(compose, "control-plane", tmp_path)
    adapter = _settings(compose, "adapter", tmp_path)
    assert sidecar.sidecar_host == ALL and sidecar.sidecar_port == clusters["sidecar"]["port_value"]
    assert sidecar.sidecar_log_port == clusters["sidecar_log"]["port_value"]  # Envoy's access log
    assert adapter.adapter_host == ALL and adapter.adapter_port == clusters["adapter"]["port_value"]
    assert cp.control_plane_host == ALL
    assert cp.control_plane_port == clusters["control_plane"]["port_value"]
    assert "--port 9300" in " ".join(compose["services"]["local-models"]["command"])
    # the control plane reaches this node's sidecar to apply revocations at once
    assert _settings(compose, "control-plane", tmp_path).sidecar_url == "http://sidecar:9100"


def test_envoy_and_worker_share_the_dynamic_config(compose: dict[str, Any], tmp_path: Path) -> None:
    envoy, worker = compose["services"]["envoy"], compose["services"]["worker"]
    s = load_settings({**_env(compose, "envoy")})
    mount = str(s.envoy_dir)
    assert any(v.endswith(f":{mount}") for v in envoy["volumes"])
    assert set(envoy["volumes"]) & set(worker["volumes"])
    assert f"{mount}/bootstrap.json" in " ".join(envoy["command"])


def test_compose_catalog_matches_default(compose: dict[str, Any], tmp_path: Path) -> None:
    s = _settings(compose, "control-plane", tmp_path)
    assert s.catalog_path == "/app/config/catalog.compose.toml"
    ours = load_catalog(ROOT / "config" / "catalog.compose.toml", s)
    default = load_catalog(ROOT / "config" / "catalog.toml", s)
    assert msgspec.to_builtins(ours.models) == msgspec.to_builtins(default.models), \
        "config/catalog.compose.toml drifted from config/catalog.toml"
    for mine, theirs in zip(ours.backends, default.backends, strict=True):
        if mine.id == "local":
            assert urlsplit(mine.base_url).hostname == "local-models"
            assert urlsplit(mine.base_url).port in _ports(compose, "local-models")
            mine.base_url = theirs.base_url
        assert mine == theirs


def test_env_example_lists_every_setting() -> None:
    text = (ROOT / ".env.example").read_text()
    listed = dict(re.findall(r"^([A-Z_][A-Z0-9_]*)=(.*)$", text, flags=re.M))
    missing = SETTING_VARS - set(listed)
    assert not missing, f".env.example lacks {sorted(missing)}"
    assert set(listed) >= SECRETS
    unknown = {k for k in listed if k.startswith("NX_")} - SETTING_VARS - SECRETS - {"NX_CONFIG_FILE"}
    assert not unknown, unknown
    # every line is preceded by a comment, and its value is the default
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[A-Z_]+=", line):
            assert lines[i - 1].startswith("#"), line
    settings_vars = {k: v for k, v in listed.items() if k in SETTING_VARS}
    assert load_settings(settings_vars) == load_settings({}), "a value in .env.example is not the default"
