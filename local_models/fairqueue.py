"""Each model runs one job at a time on its own thread; the jobs waiting for it are ordered fairly
between tenants (the platform's organizations, named by the adapter in ``x-nx-tenant``), not
first come, first served.

Why: with one FIFO queue, one organization's large request held the model for everyone queued
behind it (a 2,048-input embeddings call ran 105 s, and a one-line request waited 103 s for it).

**Order: self-clocked fair queueing.** A job carries a cost (the tokens it will process). Tenant
``t``'s job is tagged ``start = max(V, last_finish[t])``, ``finish = start + cost / weight[t]``;
the waiting job with the smallest finish tag runs next (ties: arrival order), and ``V`` becomes
its finish tag. A tenant's jobs queue back to back in its own virtual time, so another tenant's
job, tagged from the current ``V``, overtakes them: it waits for the job in progress and for at
most its own share of the others. An idle tenant gains no credit (``max`` with ``V``). Embedding
requests are cut into jobs of a few thousand tokens for this reason (api.py); a text generation
is one job (llama.cpp keeps one KV cache), bounded by the output cap.

**Admission, per request** (a request may be several jobs):

- at most ``max_per_tenant`` requests of one tenant admitted (waiting or running) per model; past
  that, 429 ``rate_limit_exceeded`` with ``Retry-After``: that tenant's share is used up, the
  others are unaffected;
- at most ``max_queue`` requests waiting beyond the running one, all tenants together; past that,
  503 ``server_busy`` at once, which lets the edge retry elsewhere instead of piling up latency.

A request's slot is released when its last job really ends in the thread, or is dropped before it
started, never merely when the awaiting request gives up: otherwise a disconnected client's
generation would still be running while a new one was admitted, and the bounds would lie.

Everything but the job itself runs on the event loop thread, so no lock is needed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import heapq
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from local_models.errors import ApiError

__all__ = ["FairOrder", "FairQueue", "Ticket"]

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 - the queued item


class FairOrder(Generic[I]):
    """The ordering alone (no threads, no clock): push items with their tenant and cost, pop the
    next to run. Deterministic, so its fairness is tested directly."""

    def __init__(self, weights: dict[str, float] | None = None) -> None:
        self.weights = dict(weights or {})
        self.virtual = 0.0
        self._last_finish: dict[str, float] = {}
        self._heap: list[tuple[float, int, I]] = []
        self._seq = itertools.count()

    def push(self, tenant: str, cost: float, item: I) -> float:
        """Queue `item`; returns its finish tag."""
        start = max(self.virtual, self._last_finish.get(tenant, 0.0))
        finish = start + max(cost, 1.0) / self.weights.get(tenant, 1.0)
        self._last_finish[tenant] = finish
        heapq.heappush(self._heap, (finish, next(self._seq), item))
        return finish

    def pop(self) -> I | None:
        if not self._heap:
            return None
        finish, _, item = heapq.heappop(self._heap)
        self.virtual = max(self.virtual, finish)
        return item

    def waiting(self) -> list[tuple[float, I]]:
        """(finish tag, item) of every queued item, in the order they would run."""
        return [(f, item) for f, _, item in sorted(self._heap)]

    def __len__(self) -> int:
        return len(self._heap)


@dataclass(eq=False, slots=True)
class _Job:
    ticket: Ticket
    fn: Callable[[], Any]
    cost: float
    future: asyncio.Future[Any]
    started: bool = False
    dropped: bool = False


@dataclass(eq=False, slots=True)
class Ticket:
    """One admitted request: it submits its jobs, then `close()`s; its slot is freed once every job
    it submitted has ended (or was dropped before starting)."""

    queue: FairQueue
    tenant: str
    pending: int = 0
    closed: bool = False
    released: bool = False
    jobs: list[_Job] = field(default_factory=list)

    def submit(self, fn: Callable[[], T], cost: float) -> asyncio.Future[T]:
        """Queue `fn` to run on the model's thread. Cancelling the returned future drops the job if
        it has not started; a started job has to watch its own cancellation flag."""
        assert not self.closed, "a closed ticket takes no more jobs"
        return self.queue._submit(self, fn, cost)

    def close(self) -> None:
        self.closed = True
        self.queue._maybe_release(self)

    def cancel(self) -> None:
        """Drop every job of this request that has not started, and close it."""
        for job in self.jobs:
            if not job.started:
                job.future.cancel()
        self.close()


class FairQueue:
    def __init__(self, name: str, max_queue: int, max_per_tenant: int,
                 weights: dict[str, float] | None = None) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._capacity = max_queue + 1  # the running request plus the waiting ones
        self.max_per_tenant = max_per_tenant
        self._order: FairOrder[_Job] = FairOrder(weights)
        self._admitted: dict[str, int] = {}
        self._running: _Job | None = None
        self._run_started = 0.0
        self.seconds_per_cost = 0.0
        """Measured (moving average) seconds per unit of cost: the Retry-After estimate."""

    @property
    def admitted(self) -> int:
        return sum(self._admitted.values())

    def admitted_for(self, tenant: str) -> int:
        return self._admitted.get(tenant, 0)

    def stats(self) -> dict[str, int]:
        return {"admitted": self.admitted, "tenants": len(self._admitted),
                "waiting_jobs": sum(1 for _, job in self._order.waiting() if not job.dropped)}

    def admit(self, tenant: str) -> Ticket:
        """Admit one request of `tenant`, or raise 429 (its share is used up) or 503 (full)."""
        if self._admitted.get(tenant, 0) >= self.max_per_tenant:
            retry = self.retry_after(tenant)
            raise ApiError(
                429,
                f"This organization already has {self.max_per_tenant} requests queued or running on this "
                f"local model (its fair share); retry after {retry} s.",
                type="rate_limit_error", code="rate_limit_exceeded", headers={"retry-after": str(retry)})
        if self.admitted >= self._capacity:
            raise ApiError(503, "The local model server is at capacity (queue full); retry later.",
                           type="server_error", code="server_busy")
        self._admitted[tenant] = self._admitted.get(tenant, 0) + 1
        return Ticket(self, tenant)

    def retry_after(self, tenant: str) -> int:
        """Seconds until one of `tenant`'s requests is likely done: the work ordered before its
        first-to-finish job, at the measured speed (at least 1)."""
        ahead = self._running.cost if self._running is not None else 0.0
        for _, job in self._order.waiting():
            if job.dropped:
                continue
            ahead += job.cost
            if job.ticket.tenant == tenant:
                break
        return max(1, math.ceil(ahead * (self.seconds_per_cost or 0.001)))

    def _submit(self, ticket: Ticket, fn: Callable[[], T], cost: float) -> asyncio.Future[T]:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        job = _Job(ticket, fn, cost, future)
        ticket.jobs.append(job)
        ticket.pending += 1
        future.add_done_callback(lambda _: self._on_future_done(job))
        self._order.push(ticket.tenant, cost, job)
        self._dispatch()
        return future

    def _on_future_done(self, job: _Job) -> None:
        if job.future.cancelled() and not job.started and not job.dropped:
            job.dropped = True  # skipped when popped; its slot share is given back now
            self._job_ended(job)

    def _dispatch(self) -> None:
        if self._running is not None:
            return
        while (job := self._order.pop()) is not None:
            if job.dropped:
                continue
            job.started = True
            self._running = job
            self._run_started = time.monotonic()
            done = self._executor.submit(job.fn)
            done.add_done_callback(functools.partial(self._from_thread, asyncio.get_running_loop(), job))
            return

    def _from_thread(self, loop: asyncio.AbstractEventLoop, job: _Job, done: concurrent.futures.Future[Any]) -> None:
        # RuntimeError: the loop is already closed at shutdown, and nobody is counting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._finished, job, done)

    def _finished(self, job: _Job, done: concurrent.futures.Future[Any]) -> None:
        elapsed = time.monotonic() - self._run_started
        rate = elapsed / max(job.cost, 1.0)
        self.seconds_per_cost = rate if not self.seconds_per_cost else 0.8 * self.seconds_per_cost + 0.2 * rate
        self._running = None
        if not job.future.done():
            if done.cancelled():
                job.future.cancel()
            elif (exc := done.exception()) is not None:
                job.future.set_exception(exc)
            else:
                job.future.set_result(done.result())
        self._job_ended(job)
        self._dispatch()

    def _job_ended(self, job: _Job) -> None:
        job.ticket.pending -= 1
        self._maybe_release(job.ticket)

    def _maybe_release(self, ticket: Ticket) -> None:
        if ticket.closed and ticket.pending == 0 and not ticket.released:
            ticket.released = True
            self._admitted[ticket.tenant] -= 1
            if not self._admitted[ticket.tenant]:
                del self._admitted[ticket.tenant]

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
