"""Rate limits: requests per minute, tokens per minute and concurrent requests.

Algorithm: an exact sliding log. Each admitted request leaves an entry (weight 1 for requests, its
estimated tokens for tokens, 1 for a concurrency slot) that expires one window later (concurrency:
when the request finishes, or when its short lease runs out unrenewed). A request is admitted only if
every bucket it touches has room for it; all buckets are then taken together, so a request refused
by one limit consumes none of the others. Unlike fixed windows or GCRA with a burst allowance, no
60-second interval ever admits more than the limit, so nothing bursts through at a boundary.

Stores: `MemoryStore` (one process, the default) and `RedisStore` (one Lua script per check, shared
by every sidecar replica, Redis's own clock so replicas agree on time).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Literal, Protocol

import msgspec

from core.contract import SLOT_LEASE_MS

__all__ = ["LEASE_MS", "WINDOW_MS", "Bucket", "Denial", "Finished", "LimitStore", "MemoryStore", "Verdict"]

WINDOW_MS = 60_000
LEASE_MS = SLOT_LEASE_MS
"""A concurrency slot frees itself this long after it was taken or last renewed (`renew`): the
adapter renews its running requests, so only a request nobody reported on waits this long."""

Kind = Literal["requests", "tokens", "concurrent"]


class Bucket(msgspec.Struct, frozen=True):
    key: str
    """Store key, e.g. `rl:key:key_123:requests`."""
    kind: Kind
    scope: str
    """`key`, `project` or `organization`: named in the refusal."""
    limit: int
    weight: int

    @property
    def ttl_ms(self) -> int:
        return LEASE_MS if self.kind == "concurrent" else WINDOW_MS


class Denial(msgspec.Struct, frozen=True):
    bucket: Bucket
    retry_after_ms: int


class Usage(msgspec.Struct, frozen=True):
    bucket: Bucket
    remaining: int
    reset_ms: int


class Verdict(msgspec.Struct, frozen=True):
    denial: Denial | None
    usage: list[Usage]

    @property
    def allowed(self) -> bool:
        return self.denial is None


Finished = tuple[str, list[Bucket], int | None]
"""A request that ended: its id, the buckets it was admitted with, its actual tokens if known."""


class LimitStore(Protocol):
    async def acquire(self, request_id: str, buckets: list[Bucket]) -> Verdict: ...

    async def release(self, request_id: str, buckets: list[Bucket]) -> None:
        """Free concurrency slots; give back tokens that were estimated but not used."""

    async def adjust(self, request_id: str, bucket: Bucket, actual_weight: int) -> None: ...

    async def refund(self, request_id: str, buckets: list[Bucket]) -> None:
        """Give everything back: the request was admitted by the limits but refused afterwards."""

    async def finish(self, finished: Sequence[Finished]) -> None:
        """For each: `release`, then `adjust` its tokens buckets to the actual tokens (one call for a
        whole batch of reports, so a store can do it in one pass or one round trip)."""

    async def renew(self, running: Sequence[tuple[str, list[Bucket]]]) -> None:
        """Extend the concurrency slots of requests still running by a lease from now; a slot
        already released stays released (a renewal never takes one back)."""


class _Log:
    """Entries of one bucket in expiry order, with their running total."""

    __slots__ = ("entries", "total")

    def __init__(self) -> None:
        self.entries: OrderedDict[str, tuple[int, int]] = OrderedDict()  # id -> (expires_ms, weight)
        self.total = 0

    def expire(self, now: int) -> None:
        while self.entries:
            rid, (expires, weight) = next(iter(self.entries.items()))
            if expires > now:
                break
            del self.entries[rid]
            self.total -= weight

    def oldest_expiry(self, now: int) -> int:
        return next(iter(self.entries.values()))[0] if self.entries else now


class MemoryStore:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._logs: dict[str, _Log] = {}
        self._clock = clock

    def _now(self) -> int:
        return int(self._clock() * 1000)

    async def acquire(self, request_id: str, buckets: list[Bucket]) -> Verdict:
        # No await between checking and taking: on one event loop this is atomic.
        now = self._now()
        logs: list[_Log] = []
        for b in buckets:
            log = self._logs.get(b.key)
            if log is None:  # get first: setdefault would build a _Log on every call
                log = self._logs[b.key] = _Log()
            log.expire(now)
            logs.append(log)
            if log.total + b.weight > b.limit:
                retry = _retry_after(log, b, now)
                logs += [self._logs.setdefault(rest.key, _Log()) for rest in buckets[len(logs):]]
                return Verdict(denial=Denial(b, retry), usage=_usage(buckets, logs, now))
        for b, log in zip(buckets, logs, strict=True):
            log.entries[request_id] = (now + b.ttl_ms, b.weight)
            log.total += b.weight
        return Verdict(denial=None, usage=_usage(buckets, logs, now))

    async def release(self, request_id: str, buckets: list[Bucket]) -> None:
        for b in buckets:
            if b.kind == "concurrent" and (log := self._logs.get(b.key)) is not None:
                entry = log.entries.pop(request_id, None)
                if entry is not None:
                    log.total -= entry[1]

    async def refund(self, request_id: str, buckets: list[Bucket]) -> None:
        for b in buckets:
            if (log := self._logs.get(b.key)) is not None and (entry := log.entries.pop(request_id, None)):
                log.total -= entry[1]

    async def finish(self, finished: Sequence[Finished]) -> None:
        logs = self._logs
        for request_id, buckets, actual in finished:
            for b in buckets:
                log = logs.get(b.key)
                if log is None:
                    continue
                if b.kind == "concurrent":
                    entry = log.entries.pop(request_id, None)
                    if entry is not None:
                        log.total -= entry[1]
                elif b.kind == "tokens" and actual is not None:
                    entry = log.entries.get(request_id)
                    if entry is not None:  # else already expired out of the window
                        log.entries[request_id] = (entry[0], actual)
                        log.total += actual - entry[1]

    async def renew(self, running: Sequence[tuple[str, list[Bucket]]]) -> None:
        until = self._now() + LEASE_MS
        for request_id, buckets in running:
            for b in buckets:
                if b.kind == "concurrent" and (log := self._logs.get(b.key)) is not None:
                    entry = log.entries.get(request_id)
                    if entry is not None:
                        # Every slot's lease has the same length, so the renewed one expires last:
                        # moved to the end, the log stays in expiry order.
                        log.entries[request_id] = (until, entry[1])
                        log.entries.move_to_end(request_id)

    async def adjust(self, request_id: str, bucket: Bucket, actual_weight: int) -> None:
        log = self._logs.get(bucket.key)
        if log is None or request_id not in log.entries:
            return  # already expired out of the window: nothing left to correct
        expires, weight = log.entries[request_id]
        log.entries[request_id] = (expires, actual_weight)
        log.total += actual_weight - weight


def _retry_after(log: _Log, b: Bucket, now: int) -> int:
    """Milliseconds until enough entries expire for this request to fit (at least 1 ms)."""
    if b.weight > b.limit:
        return WINDOW_MS  # can never fit; the message says so, retrying later is the honest advice
    need = log.total + b.weight - b.limit
    freed = 0
    for expires, weight in log.entries.values():
        freed += weight
        if freed >= need:
            return max(1, expires - now)
    return max(1, log.oldest_expiry(now) - now)


def _usage(buckets: list[Bucket], logs: list[_Log], now: int) -> list[Usage]:
    return [Usage(b, max(0, b.limit - log.total), max(0, log.oldest_expiry(now) - now))
            for b, log in zip(buckets, logs, strict=True)]


def retry_after_seconds(ms: int) -> int:
    return max(1, math.ceil(ms / 1000))
