"""Upper bounds on a request's tokens, made before it runs, from its body alone; and the check
that its output limits fit the model.

They size the money hold and the tokens-per-minute charge, and both are corrected to the actual
usage when the request settles. A settlement above its hold charges only what the hold covers from
the wallet (the rest is booked as owed), so these must never be below the truth:
- input: every token covers at least one byte of text, so the body's length in bytes plus an
  allowance for the prompt template the backend adds is an upper bound, capped by the context
  window; a request continuing a stored conversation (`previous_response_id`) may carry far more
  input than its body, so it takes the whole context window;
- output: the endpoint's own limit (`max_output_tokens` on /v1/responses; `max_tokens` or
  `max_completion_tokens`, times `n` choices, on chat), else the model's maximum. Only the
  endpoint's own fields count: a chat body's `max_output_tokens` limits nothing upstream, so it
  must not shrink the hold. The adapter asks the backend for no more than this (`held_output`)
  and stops a stream that produces more.

`check_limits` refuses (400, before any hold) a limit that is not a positive integer or exceeds
the model's cap, and a chat `n` outside 1-128, as OpenAI does: a backend asked for more than was
held would serve output nobody pays for.
"""

from __future__ import annotations

from typing import Any

import msgspec

from core.contract import output_cap
from core.errors import ApiError
from core.snapshot import ModelRecord

__all__ = ["MAX_CHOICES", "TEMPLATE_ALLOWANCE", "BodyFields", "Estimate", "EstimateFields", "check_limits",
           "estimate", "estimate_from"]

TEMPLATE_ALLOWANCE = 256
"""Tokens a backend may add around the messages (role markers, system prompt framing)."""

MAX_CHOICES = 128
"""OpenAI's bound on a chat request's `n`."""

_LIMITS = {"responses": ("max_output_tokens",), "chat": ("max_tokens", "max_completion_tokens")}


class EstimateFields(msgspec.Struct):
    """The body fields an estimate reads. The limits are decoded untyped: a mistyped one is
    refused by `check_limits` by name instead of failing the whole decode."""

    max_output_tokens: Any = None
    max_tokens: Any = None
    max_completion_tokens: Any = None
    n: Any = None
    previous_response_id: str | None = None
    models: Any = None
    """The request's own fallback models (OpenRouter's `models`), checked by routes.py."""
    provider: Any = None
    """OpenRouter's provider preferences (order, only, ignore, allow_fallbacks, sort, max_price)."""


class BodyFields(EstimateFields):
    """Everything the check reads from an inference body, so that it decodes the body once (model
    and estimate together) rather than once per reader."""

    model: str | None = None


_NO_FIELDS = EstimateFields()


class Estimate(msgspec.Struct, frozen=True):
    input_tokens: int
    output_tokens: int

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


def _count(value: Any) -> int | None:
    """A positive integer, else None (JSON `true` is not a count)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def check_limits(fields: EstimateFields, model: ModelRecord, endpoint: str, name: str) -> ApiError | None:
    """The refusal for an output limit the request may not have, or None. `name`: the model as the
    client named it (for the message)."""
    for field in _LIMITS.get(endpoint, ()):
        value = getattr(fields, field)
        if value is None:
            continue
        if _count(value) is None:
            return ApiError("invalid_request_error", f"'{field}' must be a positive integer.", field)
        if value > output_cap(model):
            return ApiError("invalid_request_error", f"'{field}' is too large: the model '{name}' produces at "
                            f"most {output_cap(model)} tokens.", field)
    if endpoint == "chat" and fields.n is not None and (_count(fields.n) is None or fields.n > MAX_CHOICES):
        return ApiError("invalid_request_error", f"'n' must be an integer from 1 to {MAX_CHOICES}.", "n")
    return None


def estimate(body: bytes, model: ModelRecord, endpoint: str = "chat") -> Estimate:
    try:
        fields = msgspec.json.decode(body, type=EstimateFields)
    except msgspec.MsgspecError:
        fields = _NO_FIELDS  # the backend will refuse the body; the estimate only needs to be safe
    return estimate_from(fields, len(body), model, endpoint)


def estimate_from(fields: EstimateFields, body_bytes: int, model: ModelRecord, endpoint: str = "chat") -> Estimate:
    """The estimate from a body already decoded (`fields`) and its length in bytes."""
    if model.kind == "embedding":
        return Estimate(body_bytes + TEMPLATE_ALLOWANCE, 0)  # a batch may exceed one text's window
    if fields.previous_response_id:
        input_tokens = model.context_window
    else:
        input_tokens = min(body_bytes + TEMPLATE_ALLOWANCE, model.context_window)
    cap = output_cap(model)
    asked = [c for c in (_count(getattr(fields, f)) for f in _LIMITS.get(endpoint, ())) if c is not None]
    # Both chat fields given: a backend may honour either, so the larger one is held.
    per_choice = min(max(asked), cap) if asked else cap
    choices = (_count(fields.n) or 1) if endpoint == "chat" else 1
    return Estimate(input_tokens, per_choice * min(choices, MAX_CHOICES))
