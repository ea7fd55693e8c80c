"""`python -m proxy_plugins.adapter`: the inference adapter on `settings.adapter_port`."""

from __future__ import annotations

import argparse

import uvicorn

from core.datadir import owner_only
from core.migrations import exit_unless_current
from core.settings import SettingsError, load_settings
from core.telemetry import configure
from proxy_plugins.adapter.app import Adapter


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="nx inference adapter")
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise SystemExit(f"nx adapter: {exc}") from None
    owner_only()  # the database, its WAL and anything else it creates: owner-only
    exit_unless_current(settings.effective_database_url, "adapter")  # not on a schema it was not built for
    configure("adapter", settings)  # JSON logs, traces when NX_OTEL_ENDPOINT is set (core/telemetry)
    uvicorn.run(Adapter(settings), host=settings.adapter_host, port=args.port or settings.adapter_port,
                loop="uvloop", http="httptools", lifespan="on", access_log=False, log_level="warning", log_config=None,
                # Nothing here reads the client address: skip the X-Forwarded-For middleware.
                proxy_headers=False,
                timeout_graceful_shutdown=10)


if __name__ == "__main__":
    main()
