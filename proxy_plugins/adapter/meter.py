"""Output counted as it is produced: the one meter of every endpoint and mode.

Chat streams (OpenAI-protocol chunks and Anthropic events), Responses streams (passed through or
translated, run by the adapter or by the worker in the background) all count what they relay with
`Meter.produce`: one unit per content-carrying event (a text, refusal, reasoning or tool-argument
delta), which is one token as OpenAI-compatible servers stream. Two things follow from the count:

- a request is never served beyond its hold: `limit` is the output the sidecar's hold covers
  (`x-nx-hold-output`); the backend is asked for no more, and `produce` refuses the event that
  would exceed it, so a backend that ignores the limit is stopped there (the answer ends as cut
  at its length limit, as if the backend had stopped);
- whatever was produced is charged: a stream that ends before the backend reported its usage (cut
  by the client, failed upstream, cancelled, stopped at the hold) is billed `produced` output
  tokens and its input as the backend counts it (`count_input`, see counting.py), or as the
  backend reported it before the cut.

`reported` is set when the backend's own final usage arrived; it then wins over the count.

`journal` (journal.py) is told each count before the event is relayed, so what a client was sent
is on disk before it was sent: if this process dies or the database is unreachable at the end,
the settler (settler.py) still charges it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

__all__ = ["CountInput", "Meter", "Served"]

CountInput = Callable[[], Awaitable[int]]
"""Asks the backend how many input tokens the request had (the model's own tokenizer)."""


class Served(Protocol):
    """The journal's entry for one request (journal.py)."""

    def served(self, produced: int) -> None: ...


class Meter:
    __slots__ = ("journal", "limit", "produced", "reported", "stopped")

    def __init__(self, limit: int = 0) -> None:
        self.limit = limit
        """Output units the hold covers; 0 when no hold bounds the request."""
        self.produced = 0
        self.reported = False
        self.stopped = False
        """`produce` refused an event: the backend went past the held output."""
        self.journal: Served | None = None

    def produce(self, units: int = 1) -> bool:
        """Count an event about to be relayed; False (not counted: do not relay it, end the answer)
        when it would take the output past what was held."""
        if self.limit and self.produced + units > self.limit:
            self.stopped = True
            return False
        self.produced += units
        if self.journal is not None:
            self.journal.served(self.produced)
        return True

    def per_choice(self, choices: int) -> int:
        """The output limit to ask the backend for, per choice (0: none known)."""
        return max(1, self.limit // max(1, choices)) if self.limit else 0
