"""Checking a shared secret a caller presents (the admin token, the internal token).

- `same_secret` compares digests, so the comparison takes the same time whatever the guess and
  whatever its length (`hmac.compare_digest` alone returns early on a length mismatch).
- `FailureThrottle` makes guessing slow: after `free_failures` failures from one client, that
  client is answered 429 with `Retry-After` for 1 s, then 2 s, 4 s ... up to 15 min after each
  further failure; a success or an hour without failures forgets it. While a client is blocked its
  attempts are not compared at all, so a right guess and a wrong one get the same 429 (no oracle).

State is per process: with several control-plane replicas a client gets `free_failures` per
replica before the back-off starts, and the back-off then applies on each.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["FailureThrottle", "same_secret"]


def same_secret(given: bytes, expected: bytes) -> bool:
    return hmac.compare_digest(hashlib.sha256(given).digest(), hashlib.sha256(expected).digest())


@dataclass
class _Record:
    failures: int
    blocked_until: float
    last_failure: float


class FailureThrottle:
    def __init__(self, free_failures: int = 10, base_seconds: float = 1.0, max_seconds: float = 900.0,
                 forget_after: float = 3600.0, max_clients: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.free_failures = free_failures
        self.base_seconds = base_seconds
        self.max_seconds = max_seconds
        self.forget_after = forget_after
        self.max_clients = max_clients
        self.clock = clock
        self._clients: OrderedDict[str, _Record] = OrderedDict()

    def retry_after(self, client: str) -> int | None:
        """Whole seconds `client` must wait before an attempt is checked, or None if it may try now."""
        record = self._clients.get(client)
        if record is None:
            return None
        now = self.clock()
        if now - record.last_failure > self.forget_after:
            del self._clients[client]
            return None
        if record.blocked_until > now:
            return max(1, math.ceil(record.blocked_until - now))
        return None

    def failed(self, client: str) -> None:
        now = self.clock()
        record = self._clients.pop(client, None)
        if record is None or now - record.last_failure > self.forget_after:
            record = _Record(0, 0.0, now)
        record.failures += 1
        record.last_failure = now
        over = record.failures - self.free_failures
        if over >= 0:
            record.blocked_until = now + min(self.max_seconds, self.base_seconds * 2.0 ** min(over, 32))
        self._clients[client] = record  # most recent last: the oldest is dropped first when full
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)

    def succeeded(self, client: str) -> None:
        if self._clients:
            self._clients.pop(client, None)
