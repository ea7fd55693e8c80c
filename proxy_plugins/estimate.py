"""Upper-bound token estimates made before a request runs, from its body alone.

Used for the tokens-per-minute limit and the money hold. It must not under-estimate by much:
input tokens are taken as one per 3 bytes of the body (JSON syntax included), which over-counts
English text (about 4 bytes a token); output is the request's own cap, else the model's maximum.
Both are corrected to the actual usage when the request settles.
"""

from __future__ import annotations

import msgspec

from proxy_plugins.snapshot import ModelRecord

__all__ = ["Estimate", "estimate"]


class _Caps(msgspec.Struct):
    max_output_tokens: int | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None


class Estimate(msgspec.Struct, frozen=True):
    input_tokens: int
    output_tokens: int

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


def estimate(body: bytes, model: ModelRecord) -> Estimate:
    input_tokens = len(body) // 3 + 16
    if model.kind == "embedding":
        return Estimate(input_tokens, 0)
    try:
        caps = msgspec.json.decode(body, type=_Caps)
        asked = caps.max_output_tokens or caps.max_completion_tokens or caps.max_tokens
    except msgspec.MsgspecError:
        asked = None  # the backend will refuse the body; the estimate only needs to be safe
    cap = model.max_output_tokens
    output = min(asked, cap) if asked and asked > 0 else cap
    return Estimate(input_tokens, output)
