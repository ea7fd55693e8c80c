"""The platform's own secrets: the API-key pepper, the internal token (edge -> services) and the
operator's admin token. Taken from the environment, else generated once into
`<data_dir>/secrets.toml` (mode 0600) so that restarts keep verifying the same keys."""

from __future__ import annotations

import os
import secrets
import tomllib
from pathlib import Path

import msgspec

from core.settings import Settings

__all__ = ["Secrets", "load_secrets"]


class Secrets(msgspec.Struct, frozen=True):
    key_pepper: str
    internal_token: str
    """Shared by the sidecar and the control plane: proves a /v1 request came through the edge."""
    admin_token: str
    """Bearer token of the platform operator for the management API (`/api/...`) and the CLI."""


def load_secrets(settings: Settings) -> Secrets:
    path = settings.data_path / "secrets.toml"
    stored: dict[str, str] = {}
    if path.exists():
        stored = {k: str(v) for k, v in tomllib.loads(path.read_text()).items()}
    wanted = {
        "key_pepper": settings.key_pepper or stored.get("key_pepper") or secrets.token_urlsafe(32),
        "internal_token": os.environ.get("NX_INTERNAL_TOKEN") or stored.get("internal_token")
        or secrets.token_urlsafe(32),
        "admin_token": os.environ.get("NX_ADMIN_TOKEN") or stored.get("admin_token")
        or "nxadm_" + secrets.token_urlsafe(32),
    }
    # An empty variable (as in a copied .env.example) means "not set": generate and keep one.
    from_env = {"key_pepper": bool(settings.key_pepper),
                "internal_token": bool(os.environ.get("NX_INTERNAL_TOKEN")),
                "admin_token": bool(os.environ.get("NX_ADMIN_TOKEN"))}
    missing = {k: v for k, v in wanted.items() if k not in stored and not from_env[k]}
    if missing:
        _write_secrets(path, {**stored, **missing})
    return Secrets(**wanted)


def _write_secrets(path: Path, values: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# Generated on first start. Keep private; losing key_pepper invalidates every key.\n")
        for k, v in sorted(values.items()):
            f.write(f'{k} = "{v}"\n')
    tmp.replace(path)
