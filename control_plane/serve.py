"""Run the control plane on its own (production) or under `nx up`."""

from __future__ import annotations

import uvicorn

from control_plane.app import create_app
from core.datadir import owner_only
from core.migrations import exit_unless_current
from core.settings import SettingsError, load_settings
from core.telemetry import configure


def main() -> None:
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise SystemExit(f"nx control-plane: {exc}") from None
    owner_only()  # the database, its WAL and anything else it creates: owner-only
    exit_unless_current(settings.effective_database_url, "control-plane")  # not on a schema it was not built for
    configure("control-plane", settings)  # JSON logs, traces when NX_OTEL_ENDPOINT is set (core/telemetry)
    # proxy_headers=False: the ASGI client is the socket peer, never an X-Forwarded-For entry that
    # uvicorn would believe from loopback; the edge's word on the client is x-nx-client-ip, which
    # api/guards.py believes from NX_TRUSTED_PROXIES only.
    uvicorn.run(create_app(settings), host=settings.control_plane_host, port=settings.control_plane_port,
                loop="uvloop", http="httptools", access_log=False, log_level="warning", log_config=None,
                timeout_graceful_shutdown=15, proxy_headers=False)


if __name__ == "__main__":
    main()
