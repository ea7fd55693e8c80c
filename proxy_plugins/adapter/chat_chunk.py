"""Relay one Chat Completions stream chunk without re-serialising it.

A content chunk needs three things from the adapter: its `model` swapped for the client's name,
none of the nulls the OpenAI schema forbids (`system_fingerprint`, `service_tier`, and any null in
a `delta` other than `content` and `refusal`), and whether it carried content or tool calls
(metering a cut stream). `relay` reads just those fields (one msgspec decode into the Structs
below: everything else is skipped, not built) and then swaps the model name's bytes in place, so
the chunk goes out as the upstream wrote it: key order, unknown fields, number formatting kept.

It answers None, and chat.py takes its full path (decode into dicts, `_tidy`, encode), whenever
the chunk is anything but an ordinary content chunk: usage (metered, and maybe withheld or given
`x_nx`), `error`, any null to drop (the Structs refuse them), a delta key not listed here, a type
not expected, malformed JSON, or a `model` whose place in the bytes is not certain. The fast path
never has to be right about those, only about the chunks it accepts.
"""

from __future__ import annotations

import msgspec
from msgspec import UNSET, UnsetType

__all__ = ["relay"]

_NULL = b"null"
_NO_VALUE = msgspec.Raw(b"")
"""Default of a Raw field: an empty Raw stands for "absent" (a present value is never empty)."""


class _Delta(msgspec.Struct, forbid_unknown_fields=True):
    # Only the keys whose null is allowed may be None; a null `role` or `tool_calls` fails the
    # decode, which sends the chunk to the full path (which drops them).
    role: str | UnsetType = UNSET
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[msgspec.Raw] | UnsetType = UNSET


class _Choice(msgspec.Struct):
    delta: _Delta | UnsetType = UNSET
    message: msgspec.Raw = _NO_VALUE


class _Chunk(msgspec.Struct):
    model: str | UnsetType = UNSET
    choices: list[_Choice] = []
    usage: msgspec.Raw = _NO_VALUE
    error: msgspec.Raw = _NO_VALUE
    system_fingerprint: str | UnsetType = UNSET
    service_tier: str | UnsetType = UNSET


_decoder = msgspec.json.Decoder(_Chunk)
_encode = msgspec.json.encode


def relay(data: bytes, model_json: bytes) -> tuple[bytes, bool] | None:
    """(the SSE event to send, whether the chunk produced content), or None for the full path.
    `model_json` is the client's model name already encoded as a JSON string."""
    try:
        chunk = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if len(chunk.error) or (len(chunk.usage) and bytes(chunk.usage) != _NULL) or chunk.model is UNSET:
        return None
    produced = False
    for choice in chunk.choices:
        if len(choice.message):
            return None
        delta = choice.delta
        if delta is not UNSET and (delta.content or delta.tool_calls):
            produced = True
    # Where the top-level `"model":` is. Without a `\u` escape the top-level key is spelled
    # literally, so if `"model"` occurs exactly once, that occurrence is the key (a quote inside a
    # string is escaped, so a string's text cannot hold another `"model"` unnoticed).
    if b"\\u" in data or data.count(b'"model"') != 1:
        return None
    needle = b'"model":' + _encode(chunk.model)
    start = data.find(needle)
    if start < 0:  # e.g. `"model" : ...` with spaces, or the name escaped differently
        return None
    end = start + len(needle)
    return b"".join((b"data: ", data[:start + 8], model_json, data[end:], b"\n\n")), produced
