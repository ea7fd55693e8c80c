"""One settings object for every process, read from the environment and an optional TOML file.

Precedence: environment > file > defaults. Every field has an environment variable `NX_<FIELD>`
(upper case); `DATABASE_URL` and `REDIS_URL` are also read under their conventional names.
A missing or malformed value stops the process with a message naming the variable.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from core.ipnet import Network, canonical_network

__all__ = ["Settings", "SettingsError", "load_settings"]

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Platform configuration. Defaults start the whole platform on one machine with no services."""

    data_dir: str = "./data"
    """Where SQLite, rendered Envoy configuration, generated secrets and model weights live."""
    database_url: str = ""
    """Empty: SQLite at `<data_dir>/nx.db`. Otherwise `postgresql://...` or `sqlite:///path`."""
    database_pool_size: Annotated[int, msgspec.Meta(ge=1, le=100)] = 5
    """PostgreSQL connections each process keeps (and may add as many again under a burst)."""
    redis_url: str = ""
    """Empty: in-process stores (single node). Set to share limits and revocations across replicas."""
    catalog_path: str = "config/catalog.toml"
    """Backends and models, synced into the database at start."""

    edge_host: str = "127.0.0.1"
    edge_port: Port = 8080
    operator_host: str = "127.0.0.1"
    """Where Envoy serves the operator API (`/api/...`, admin token): loopback by default; the
    public edge port never serves it. Bind it wider only behind a firewall (docs/security.md)."""
    operator_port: Port = 8081
    envoy_admin_port: Port = 9901
    envoy_concurrency: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2
    sidecar_host: str = "127.0.0.1"
    sidecar_port: Port = 9100
    sidecar_processes: Annotated[int, msgspec.Meta(ge=1, le=16)] = 1
    """Sidecar processes on consecutive ports from sidecar_port; more than one needs REDIS_URL so
    that rate limits and nonces are shared instead of multiplied by the process count."""
    sidecar_log_port: Port = 9150
    """Envoy's access log (Fluentd forward protocol) reaches sidecar processes on consecutive
    ports from this one: how the sidecar learns that a request ended (proxy_plugins/sidecar/ended.py)."""
    adapter_host: str = "127.0.0.1"
    adapter_port: Port = 9200
    adapter_processes: Annotated[int, msgspec.Meta(ge=1, le=16)] = 1
    """Adapter processes on consecutive ports from adapter_port; Envoy balances inference across
    them (each settles through its own group commit, so no shared in-process state is needed)."""
    """The inference adapter (protocol translation, stored responses) behind the edge."""
    control_plane_host: str = "127.0.0.1"
    control_plane_port: Port = 8000
    local_models_enabled: bool = True
    local_models_port: Port = 9300
    local_models_backends: str = "local"
    """Catalog backends (comma-separated ids) that are this platform's local model servers: only
    they are told the organization of each call (`x-nx-tenant`), which their queue shares fairly."""

    bootstrap_credit_nanos: Annotated[int, msgspec.Meta(ge=0)] = 10 * 10**9
    """Promotional credit granted to the first organization on first start (nano-dollars), so the
    printed key can make paid calls at once; 0 grants nothing."""
    key_pepper: str = ""
    """HMAC pepper for API-key hashes. Empty: generated once into `<data_dir>/secrets.toml`."""
    trusted_proxies: str = "127.0.0.0/8,::1/128"
    """Comma-separated CIDR ranges whose connections to the control plane may name the client in
    `x-nx-client-ip` (Envoy stamps it from the socket). Any other caller is known by its own socket
    address, so one that reaches the control plane's port directly cannot pick a fresh address per
    attempt to dodge the sign-in and admin-token throttles. compose.yaml sets its private network."""
    xff_trusted_hops: Annotated[int, msgspec.Meta(ge=0, le=10)] = 0
    """How many proxies in front of Envoy append to X-Forwarded-For; 0 trusts only the socket peer."""
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024, le=64 * 1024 * 1024)] = 8 * 1024 * 1024
    key_cache_ttl_seconds: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 10.0
    hold_grace_seconds: Annotated[float, msgspec.Meta(ge=0.1, le=86400)] = 300.0
    """A hold expires this long after its backend's timeout (the worker then gives it back); the
    adapter renews the hold of a live stream to this far past its backend's timeout, every
    `hold_renew_seconds` (a stream's timeout is between chunks, so it may outlive the first expiry)."""
    hold_renew_seconds: Annotated[float, msgspec.Meta(ge=0.05, le=3600)] = 30.0
    route_eject_after: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 3
    """Consecutive failures after which a route target is ejected (docs/routing.md, "Health")."""
    route_eject_seconds: Annotated[float, msgspec.Meta(ge=0.1, le=3600)] = 5.0
    """A target's first ejection lasts this long; each further one twice the last, up to 60 times it."""
    journal_settle_seconds: Annotated[float, msgspec.Meta(ge=0.05, le=3600)] = 5.0
    """How often each adapter retries settlements the database refused and settles the journals of
    adapters that died (proxy_plugins/adapter/settler.py)."""
    journal_fsync_ms: Annotated[int, msgspec.Meta(ge=1, le=60000)] = 200
    """The served-output journal is written before the bytes go out, fsync'd at most this late."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"
    """JSON lines (request id, trace id, organization per line; docs/observability.md) or plain text."""
    log_content: bool = False
    """Log prompts and answers where the code offers to (debugging only: they are customers' data)."""
    metrics_enabled: bool = True
    """Count and time the hot path for /metrics. Off only to measure what metrics cost (bench/'s
    observability lane): /metrics still answers, without the request metrics."""
    metrics_organization_label: bool = False
    """Label request, token and spend metrics with the organization id. Off: the label is empty, so
    the number of series does not grow with customers (each organization adds ~100 series)."""
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: Port = 9400
    """The worker serves no HTTP of its own: its Prometheus `/metrics` listens here."""
    otel_endpoint: str = ""
    """OTLP/HTTP receiver for traces (`http://collector:4318`); empty: tracing off."""
    trace_sample_ratio: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.05
    """Share of traces started here that are kept; a request arriving with a `traceparent` follows
    the caller's decision. 5 %: a sampled request costs ~0.4 ms of CPU in the Python processes,
    an unsampled one ~3 us, so 5 % keeps tracing within 5 % of throughput (docs/observability.md)."""
    public_base_url: str = ""
    """Base URL printed in examples; empty means http://<edge_host>:<edge_port>."""
    webhooks_allow_http: bool = False
    """Development only: accept `http://` webhook URLs (production requires https)."""
    webhooks_allow_private: bool = False
    """Development only: let webhooks reach loopback/private addresses (never cloud metadata)."""

    # Customer identity (control_plane/identity/, docs/identity.md).
    identity_provider: Literal["local", "clerk", "authjs"] = "local"
    """Who signs customers in: `local` (email and password here), `clerk` or `authjs`."""
    signup_credit_nanos: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Promotional credit for an organization created by sign-up, granted once when its owner's
    email is verified; 0 (the default) grants nothing, so sign-up cannot mint money."""
    session_idle_seconds: Annotated[int, msgspec.Meta(ge=60)] = 3 * 86400
    session_absolute_seconds: Annotated[int, msgspec.Meta(ge=300)] = 30 * 86400
    smtp_host: str = ""
    """Empty: mail stays in the outbox table, read with `nx mail` (the embedded default)."""
    smtp_port: Port = 587
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = True
    mail_from: str = "Open Ai platform <no-reply@localhost>"
    clerk_issuer: str = ""
    """Clerk's Frontend API URL (`https://<app>.clerk.accounts.dev`): the session JWT's `iss`."""
    clerk_jwks_url: str = ""
    """Empty: `<clerk_issuer>/.well-known/jwks.json`."""
    clerk_audience: str = ""
    """When set, the session JWT's `aud` must contain it (a custom session-token template)."""
    clerk_authorized_parties: str = ""
    """Comma-separated origins accepted in the session JWT's `azp` (Clerk's audience check)."""
    clerk_webhook_secret: str = ""
    """The Svix signing secret (`whsec_...`) of the Clerk webhook endpoint `/auth/webhooks/clerk`."""
    authjs_secret: str = ""
    """The Auth.js app's secret, verifying the HS256 JWTs it issues (`authjs` provider)."""
    authjs_issuer: str = ""
    """When set, an Auth.js JWT's `iss` must equal it."""

    @property
    def trusted_proxy_networks(self) -> tuple[Network, ...]:
        return tuple(canonical_network(part.strip()) for part in self.trusted_proxies.split(",") if part.strip())

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).resolve()

    @property
    def effective_database_url(self) -> str:
        """SQLAlchemy async URL for the configured database."""
        url = self.database_url or f"sqlite:///{self.data_path / 'nx.db'}"
        if url.startswith("postgres://"):
            url = "postgresql://" + url.removeprefix("postgres://")
        if url.startswith("postgresql://"):
            return "postgresql+asyncpg://" + url.removeprefix("postgresql://")
        if url.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @property
    def edge_url(self) -> str:
        return self.public_base_url or f"http://{self.edge_host}:{self.edge_port}"

    @property
    def operator_url(self) -> str:
        return f"http://{self.operator_host}:{self.operator_port}"

    @property
    def local_backend_ids(self) -> frozenset[str]:
        return frozenset(b.strip() for b in self.local_models_backends.split(",") if b.strip())

    @property
    def sidecar_url(self) -> str:
        return f"http://{self.sidecar_host}:{self.sidecar_port}"

    @property
    def adapter_ports(self) -> list[int]:
        return [self.adapter_port + i for i in range(self.adapter_processes)]

    @property
    def sidecar_ports(self) -> list[int]:
        return [self.sidecar_port + i for i in range(self.sidecar_processes)]

    @property
    def sidecar_log_ports(self) -> list[int]:
        return [self.sidecar_log_port + i for i in range(self.sidecar_processes)]

    @property
    def envoy_dir(self) -> Path:
        return self.data_path / "envoy"

    @property
    def control_plane_url(self) -> str:
        return f"http://{self.control_plane_host}:{self.control_plane_port}"


class SettingsError(Exception):
    """A setting is missing or malformed; the message names the variable."""


_FIELDS = {f.name: f for f in msgspec.structs.fields(Settings)}
_ALIASES = {"database_url": "DATABASE_URL", "redis_url": "REDIS_URL"}


def env_name(field: str) -> str:
    return f"NX_{field.upper()}"


def _from_env(environ: dict[str, str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in _FIELDS:
        alias = _ALIASES.get(name)
        if alias and alias in environ:
            found[name] = environ[alias]
        if env_name(name) in environ:
            found[name] = environ[env_name(name)]
    return found


def load_settings(environ: dict[str, str] | None = None, file: str | None = None) -> Settings:
    """Build and validate settings; raise SettingsError naming the bad variable."""
    env = dict(os.environ if environ is None else environ)
    raw: dict[str, Any] = {}
    path = file or env.get("NX_CONFIG_FILE")
    if path:
        try:
            raw.update(tomllib.loads(Path(path).read_text()))
        except FileNotFoundError as exc:
            raise SettingsError(f"NX_CONFIG_FILE: no such file {path!r}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"NX_CONFIG_FILE: {path}: {exc}") from exc
        unknown = sorted(set(raw) - set(_FIELDS))
        if unknown:
            raise SettingsError(f"{path}: unknown setting {unknown[0]!r}")
    from_env = _from_env(env)
    raw.update(from_env)
    try:
        # strict=False lets "8080" and "true" from the environment become int and bool.
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(_explain(exc, from_env)) from exc
    _check_urls(settings)
    return settings


def _explain(exc: msgspec.ValidationError, from_env: dict[str, str]) -> str:
    message = str(exc)
    for name in _FIELDS:
        if f"`$.{name}`" in message:
            source = env_name(name) if name in from_env else f"setting {name!r}"
            if name in _ALIASES and _ALIASES[name] in os.environ:
                source = _ALIASES[name]
            return f"{source}: {message.split(' - at ')[0]}"
    return message


def _check_urls(settings: Settings) -> None:
    url = settings.effective_database_url
    if not (url.startswith("sqlite+aiosqlite:///") or url.startswith("postgresql+asyncpg://")):
        raise SettingsError(
            "DATABASE_URL: expected postgresql://... or sqlite:///..., got "
            f"{settings.database_url.split('@')[-1]!r}"
        )
    if settings.redis_url and not settings.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise SettingsError("REDIS_URL: expected redis://, rediss:// or unix:// URL")
    if settings.sidecar_processes > 1 and not settings.redis_url:
        raise SettingsError("NX_SIDECAR_PROCESSES: more than one sidecar process needs REDIS_URL "
                            "(rate limits and replay nonces must be shared)")
    if settings.identity_provider == "clerk" and not settings.clerk_issuer.startswith("https://"):
        raise SettingsError("NX_CLERK_ISSUER: the clerk identity provider needs the instance's Frontend API URL "
                            "(https://...), the session tokens' issuer")
    try:
        settings.trusted_proxy_networks  # noqa: B018 (parsed here to refuse a bad range at start)
    except ValueError as exc:
        raise SettingsError(f"NX_TRUSTED_PROXIES: expected comma-separated CIDR ranges: {exc}") from exc
    if settings.session_idle_seconds > settings.session_absolute_seconds:
        raise SettingsError("NX_SESSION_IDLE_SECONDS: cannot exceed NX_SESSION_ABSOLUTE_SECONDS")
