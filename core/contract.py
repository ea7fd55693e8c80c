"""The contract between Envoy, the sidecar and the adapter, in one place."""

from __future__ import annotations

from core.snapshot import ModelRecord

SIDECAR_REFUSAL_503 = 418


HOLD_MARGIN_MS = 5 * 60 * 1000
"""A hold outlives its backend's timeout by this much, so a slow answer still settles; the worker
expires it only when the process carrying the request is gone."""


def output_cap(model: ModelRecord) -> int:
    """The most output one choice may have: the catalog's `max_output_tokens`, or (0: not stated)
    the context window, which no output can outgrow. The sidecar holds at most this and refuses a
    request asking for more; the adapter never asks a backend for more than was held
    (`x-nx-hold-output`)."""
    return model.max_output_tokens or model.context_window
