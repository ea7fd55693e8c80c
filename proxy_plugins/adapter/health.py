"""Passive outlier detection for route targets: eject a failing target, readmit it later.

A target (a catalog model: one backend and upstream model) that fails `eject_after` times in a
row (connect errors, timeouts, 429, 5xx except 501, the backend refusing the platform's
credentials) is ejected for `eject_s`, then twice as long at each further ejection, up to 60
times `eject_s`; a 429's `Retry-After` ejects it at once, for at least that long (bounded the same way),
which is how the platform honours it: no request of any client calls that target before then.
After the cool-down the target is tried again ("half-open"): one more failure ejects it again
for the doubled time, a success readmits it and resets the count of ejections.

Ejection only reorders: the adapter tries ejected targets after every healthy one, so the last
healthy target of a group is never taken out of service, and with all of them failing each is
still tried (within the request's attempt budget) rather than refused from memory.

The state lives in this process, or in Redis (`REDIS_URL`) so that every adapter shares it:
each change is one hash write (`nx:route-health`), and every process reloads the hash each
second. `/api/routes/health` and `nx routes health` show it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import msgspec

__all__ = ["Health", "TargetHealth"]

log = logging.getLogger("nx.adapter.health")

REDIS_KEY = "nx:route-health"
MAX_FACTOR = 60
KEEP_S = 86_400


class TargetHealth(msgspec.Struct, kw_only=True):
    target: str
    failures: int = 0
    """Consecutive failures."""
    ejections: int = 0
    """Ejections since the target last succeeded."""
    ejected_until: float = 0.0
    """Unix seconds; in the past (or 0) when the target is admitted."""
    last_error: str | None = None
    updated_at: float = 0.0


class Health:
    def __init__(self, eject_after: int = 3, eject_s: float = 5.0, redis: Any = None) -> None:
        self.eject_after = eject_after
        self.eject_s = eject_s
        self.redis = redis
        self.state: dict[str, TargetHealth] = {}
        self._task: asyncio.Task[None] | None = None

    def ejected(self, target: str, now: float | None = None) -> bool:
        h = self.state.get(target)
        return h is not None and h.ejected_until > (time.time() if now is None else now)

    def readmits_at(self, target: str) -> float:
        h = self.state.get(target)
        return 0.0 if h is None else h.ejected_until

    def success(self, target: str) -> None:
        h = self.state.get(target)
        if h is None or (h.failures == 0 and h.ejections == 0):
            return  # the usual case: nothing to write
        self._put(TargetHealth(target=target, updated_at=time.time()))

    def failure(self, target: str, error: str, retry_after_s: float | None = None) -> None:
        now = time.time()
        h = self.state.get(target) or TargetHealth(target=target)
        failures = h.failures + 1
        half_open = h.ejections > 0 and h.ejected_until <= now
        until, ejections = h.ejected_until, h.ejections
        told = retry_after_s is not None and retry_after_s > 0
        if told:
            until = max(until, now + min(retry_after_s or 0.0, self.eject_s * MAX_FACTOR))
        if failures >= self.eject_after or half_open or told:
            ejections += 1
            until = max(until, now + self.eject_s * min(2 ** (ejections - 1), MAX_FACTOR))
            failures = 0
            log.warning("route target %s ejected until %.1f s from now (ejection %d): %s",
                        target, until - now, ejections, error)
        self._put(TargetHealth(target=target, failures=failures, ejections=ejections, ejected_until=until,
                               last_error=error, updated_at=now))

    def _put(self, h: TargetHealth) -> None:
        self.state[h.target] = h
        if self.redis is not None:
            task = asyncio.ensure_future(self._write(h))
            task.add_done_callback(_quiet)

    async def _write(self, h: TargetHealth) -> None:
        await self.redis.hset(REDIS_KEY, h.target, msgspec.json.encode(h))
        await self.redis.expire(REDIS_KEY, KEEP_S)  # targets nobody routes to any more fade away

    async def load(self) -> None:
        """Replace this process's view with the shared one (Redis only)."""
        if self.redis is None:
            return
        raw = await self.redis.hgetall(REDIS_KEY)
        state = {}
        for k, v in raw.items():
            with contextlib.suppress(msgspec.MsgspecError):
                h = msgspec.json.decode(v, type=TargetHealth)
                state[k.decode() if isinstance(k, bytes) else str(k)] = h
        self.state = state

    def start(self) -> None:
        if self.redis is not None:
            self._task = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            try:
                await self.load()
            except Exception:  # keep the last view through a Redis hiccup
                log.warning("route health: could not read Redis", exc_info=True)
            await asyncio.sleep(1.0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.redis is not None:
            await self.redis.aclose()

    def view(self) -> list[TargetHealth]:
        return sorted(self.state.values(), key=lambda h: h.target)


def _quiet(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("route health: could not write Redis: %r", task.exception())
