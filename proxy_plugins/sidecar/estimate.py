"""Upper bounds on a request's tokens, made before it runs, from its body alone.

They size the money hold and the tokens-per-minute charge, and both are corrected to the actual
usage when the request settles. A settlement above its hold is refused (and would go unbilled), so
these must never be below the truth:
- input: every token covers at least one byte of text, so the body's length in bytes plus an
  allowance for the prompt template the backend adds is an upper bound, capped by the context
  window; a request continuing a stored conversation (`previous_response_id`) may carry far more
  input than its body, so it takes the whole context window;
- output: the request's own cap, else the model's maximum.
"""

from __future__ import annotations

import msgspec

from core.snapshot import ModelRecord

__all__ = ["TEMPLATE_ALLOWANCE", "BodyFields", "Estimate", "EstimateFields", "estimate", "estimate_from"]

TEMPLATE_ALLOWANCE = 256
"""Tokens a backend may add around the messages (role markers, system prompt framing)."""


class EstimateFields(msgspec.Struct):
    """The body fields an estimate reads."""

    max_output_tokens: int | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    previous_response_id: str | None = None


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


def estimate(body: bytes, model: ModelRecord) -> Estimate:
    try:
        fields = msgspec.json.decode(body, type=EstimateFields)
    except msgspec.MsgspecError:
        fields = _NO_FIELDS  # the backend will refuse the body; the estimate only needs to be safe
    return estimate_from(fields, len(body), model)


def estimate_from(fields: EstimateFields, body_bytes: int, model: ModelRecord) -> Estimate:
    """The estimate from a body already decoded (`fields`) and its length in bytes."""
    if model.kind == "embedding":
        return Estimate(body_bytes + TEMPLATE_ALLOWANCE, 0)  # a batch may exceed one text's window
    if fields.previous_response_id:
        input_tokens = model.context_window
    else:
        input_tokens = min(body_bytes + TEMPLATE_ALLOWANCE, model.context_window)
    asked = fields.max_output_tokens or fields.max_completion_tokens or fields.max_tokens
    cap = model.max_output_tokens
    return Estimate(input_tokens, min(asked, cap) if asked and asked > 0 else cap)
