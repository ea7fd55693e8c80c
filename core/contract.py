"""The contract between Envoy, the sidecar and the adapter, in one place."""

from __future__ import annotations

SIDECAR_REFUSAL_503 = 418


HOLD_MARGIN_MS = 5 * 60 * 1000
"""A hold outlives its backend's timeout by this much, so a slow answer still settles; the worker
expires it only when the process carrying the request is gone."""
