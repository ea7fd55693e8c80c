"""Metering a Responses stream, whatever its backend protocol and whoever runs it (the adapter
for a waiting client, the worker for a background response).

`Relayed` sees every event before it goes out: it counts output deltas on the request's `Meter`
(meter.py), refusing the delta that would pass the output the hold covers, and keeps the output
items as relayed so far. That record is what a response ends with when the stream is stopped
short (at its hold: `response.incomplete`, reason `max_output_tokens`; or cancelled in the
background): exactly the output that was produced and is charged, items still open marked
`incomplete`.

`bill_terminal` completes a terminal event's usage when the backend did not report it: a stream
that failed after delivering output (or whose chat-only backend sent no usage) is charged the
output it produced and its input as the backend counts it; the client sees the same figures in
the event's `usage` as the ledger charges.
"""

from __future__ import annotations

from typing import Any

import msgspec

from proxy_plugins.adapter.meter import CountInput, Meter
from proxy_plugins.adapter.translate.events import Event
from proxy_plugins.adapter.translate.types import Response, Usage

__all__ = ["DELTAS", "TERMINAL", "Relayed", "bill_terminal", "usage_numbers"]

DELTAS = frozenset({"response.output_text.delta", "response.refusal.delta", "response.function_call_arguments.delta",
                    "response.reasoning_text.delta", "response.reasoning_summary_text.delta",
                    "response.custom_tool_call_input.delta"})
"""Events that carry produced output: one unit each (a token, as backends stream)."""
TERMINAL = ("response.completed", "response.failed", "response.incomplete")


class Relayed:
    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.items: dict[int, dict[str, Any]] = {}
        self.last_seq = -1

    def admit(self, batch: list[Event]) -> list[Event]:
        """The events of `batch` that may go out: all of them, unless one would pass the held
        output (then the meter is `stopped` and the events before it are returned)."""
        for i, event in enumerate(batch):
            if event.get("type") in DELTAS and not self.meter.produce():
                return batch[:i]
            self._apply(event)
        return batch

    def _apply(self, event: Event) -> None:
        seq = event.get("sequence_number")
        if isinstance(seq, int):
            self.last_seq = seq
        kind, index = event.get("type"), event.get("output_index")
        if not isinstance(index, int):
            return
        if kind in ("response.output_item.added", "response.output_item.done"):
            self.items[index] = msgspec.to_builtins(event.get("item") or {})
            return
        item = self.items.get(index)
        if item is None:
            return
        if kind == "response.function_call_arguments.delta":
            item["arguments"] = str(item.get("arguments") or "") + str(event.get("delta") or "")
            return
        parts = item.setdefault("content", [])
        at = event.get("content_index")
        if not isinstance(at, int) or not isinstance(parts, list):
            return
        if kind in ("response.content_part.added", "response.content_part.done"):
            part = msgspec.to_builtins(event.get("part") or {})
            if at < len(parts):
                parts[at] = part
            else:
                parts.append(part)
        elif kind in ("response.output_text.delta", "response.refusal.delta") and at < len(parts):
            key = "text" if kind == "response.output_text.delta" else "refusal"
            parts[at][key] = str(parts[at].get(key) or "") + str(event.get("delta") or "")

    def output(self) -> list[dict[str, Any]]:
        """The output items relayed so far; any still open ends `incomplete`."""
        out = []
        for index in sorted(self.items):
            item = dict(self.items[index])
            if item.get("status") == "in_progress":
                item["status"] = "incomplete"
            out.append(item)
        return out

    def stopped_short(self, base: dict[str, Any], usage: Usage, status: str) -> dict[str, Any]:
        """`base` (the response as built so far) ended with the relayed output and the metered usage."""
        snapshot = {**base, "status": status, "output": self.output(), "usage": msgspec.to_builtins(usage)}
        if status == "incomplete":
            snapshot["incomplete_details"] = {"reason": "max_output_tokens"}
        return snapshot


def usage_numbers(final: dict[str, Any] | Response | None) -> tuple[int, int, int]:
    """(input, cached, output) tokens of a Response (zeros when it has no usage)."""
    if isinstance(final, Response):
        u = final.usage
        if isinstance(u, Usage):
            return u.input_tokens, u.input_tokens_details.cached_tokens, u.output_tokens
        return 0, 0, 0
    usage = (final or {}).get("usage") or {}
    try:
        return (int(usage.get("input_tokens") or 0),
                int((usage.get("input_tokens_details") or {}).get("cached_tokens") or 0),
                int(usage.get("output_tokens") or 0))
    except (TypeError, ValueError, AttributeError):
        return 0, 0, 0


async def bill_terminal(event: Event, meter: Meter, count_input: CountInput) -> None:
    """Complete the usage of a terminal event (see the module docstring)."""
    response = event.get("response")
    if not isinstance(response, dict | Response):
        return
    i, c, o = usage_numbers(response)
    status = response.status if isinstance(response, Response) else response.get("status")
    if status in ("completed", "incomplete") and (i or o):
        meter.reported = True  # the backend's own usage
        return
    if not meter.produced:
        return  # nothing was delivered: a failure costs nothing
    i = i or await count_input()
    usage = Usage.of(i, max(o, meter.produced), cached=min(c, i))
    if isinstance(response, Response):
        response.usage = usage
    else:
        response["usage"] = msgspec.to_builtins(usage)
    meter.reported = True
