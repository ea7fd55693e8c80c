"""A single worker thread per model behind a bounded admission count.

llama.cpp holds one KV cache per context, so text generation must run one request at a time; the
machines have two cores, so running more at once would not be faster anyway. Requests beyond the
running one wait in a queue of at most ``max_queue``; past that the server answers 503
``server_busy`` at once, which lets the edge retry on another replica instead of piling up latency.

A slot is released when the job really ends in its thread (or is dropped before starting), never
merely when the awaiting request gives up: otherwise a disconnected client's generation would still
be running while a new one was admitted, and the queue bound would lie.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable
from typing import TypeVar

from local_models.errors import ApiError

__all__ = ["BoundedWorker"]

T = TypeVar("T")


class BoundedWorker:
    def __init__(self, name: str, max_queue: int) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._capacity = max_queue + 1  # the running job plus the waiting ones
        self._admitted = 0

    @property
    def admitted(self) -> int:
        return self._admitted

    def submit(self, job: Callable[[], T]) -> asyncio.Future[T]:
        """Queue ``job``; raise 503 ``server_busy`` when the queue is full.

        Must be called on the event loop thread (the count is only touched there). Cancelling the
        returned future drops the job if it has not started; a started job has to watch its own
        cancellation flag.
        """
        if self._admitted >= self._capacity:
            raise ApiError(
                503,
                "The local model server is at capacity (queue full); retry later.",
                type="server_error",
                code="server_busy",
            )
        loop = asyncio.get_running_loop()
        self._admitted += 1
        future = self._executor.submit(job)
        future.add_done_callback(lambda _: self._release_from_any_thread(loop))
        return asyncio.wrap_future(future, loop=loop)

    def _release_from_any_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        # RuntimeError: the loop is already closed at shutdown, and nobody is counting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._release)

    def _release(self) -> None:
        self._admitted -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
