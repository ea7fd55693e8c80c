"""The served-output journal: what this adapter has sent, on disk before it is sent.

Why a local append-only file and not the database: the failures it exists for are the database's
(unreachable at the end of a stream: finding 5) and this process's (killed mid-stream: finding 6).
A record in the group commit would be lost with the very outage it must survive, and writing it
per chunk would put a database round trip on every token. An `os.write` to a file in the data
directory is a few microseconds, survives the process (the page cache has it the moment the call
returns, before the event's bytes reach the socket), and is fsync'd in batches (`journal_fsync_ms`)
against a machine crash; a disk that is gone takes the database with it on SQLite.

One file per adapter process (`<data_dir>/journal/adapter-<pid>-<ns>.log`), locked with `flock` for
the process's life, so the settler of another (or the next) adapter knows a file whose lock it can
take belongs to a dead process. Its lines (`O`pen, `S`erved, `F`ailed settlement, `D`one) are
described in core/served.py, which reconcile reads too.

A request with an `O` and no `D` was served and not (yet) settled: the settler charges it (its
`F` usage if the stream ended, else its last `S` with status 502, input as the backend reported it
or, when it never did, the estimate from the request's text). The file is rewritten with only the
open requests when it grows past `MAX_BYTES`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from pathlib import Path

import msgspec

from core.served import Final, Unsettled
from proxy_plugins.adapter.context import RequestContext
from proxy_plugins.adapter.counting import text_estimate

__all__ = ["MAX_BYTES", "Entry", "Journal"]

log = logging.getLogger("nx.adapter.journal")

MAX_BYTES = 4 * 1024 * 1024


class Entry:
    """One billed request's journal record; the meter calls `served` before each event goes out."""

    __slots__ = ("body", "ctx", "journal", "state")

    def __init__(self, journal: Journal, ctx: RequestContext, body: bytes) -> None:
        self.journal, self.ctx, self.body = journal, ctx, body
        self.state: Unsettled | None = None
        """Set at the first event served: from then on the request is in the journal."""

    def served(self, produced: int) -> None:
        ctx, state = self.ctx, self.state
        if state is None:
            state = self.state = Unsettled(request_id=ctx.request_id, timeout_ms=ctx.backend.timeout_ms,
                                           estimate=self._estimate(), input_tokens=ctx.usage.input_tokens)
            self.body = b""
            self.journal.live[ctx.request_id] = state
            self.journal.write(state.lines())
        state.output_tokens, state.input_tokens = produced, ctx.usage.input_tokens
        self.journal.write(f"S {ctx.request_id} {produced} {state.input_tokens}\n".encode())

    def _estimate(self) -> int:
        if self.ctx.usage.input_tokens:
            return self.ctx.usage.input_tokens
        try:
            return text_estimate(msgspec.json.decode(self.body))
        except msgspec.DecodeError:
            return -(-len(self.body) // 4)

    def done(self) -> None:
        """Settled (or withheld: a JSON answer that could not be billed was never delivered)."""
        if self.state is not None:
            self.journal.done(self.ctx.request_id)

    def failed(self, status: int) -> None:
        """Delivered, and its settlement failed: the settler retries it with this usage."""
        state = self.state
        if state is None:
            return
        u = self.ctx.usage
        state.final = Final(status, u.input_tokens or state.estimate, min(u.cached_tokens, u.input_tokens),
                            max(u.output_tokens, state.output_tokens))
        f = state.final
        self.journal.write(f"F {state.request_id} {status} {f.input_tokens} {f.cached_tokens} "
                           f"{f.output_tokens}\n".encode())
        self.journal.live.pop(state.request_id, None)
        self.journal.pending[state.request_id] = state


class Journal:
    def __init__(self, directory: Path, fsync_ms: int = 200) -> None:
        self.directory = directory
        self.fsync_s = fsync_ms / 1000
        self.live: dict[str, Unsettled] = {}
        """Streams being served (their holds are renewed: settler.py)."""
        self.pending: dict[str, Unsettled] = {}
        """Ended and delivered, their settlement refused by the database: retried by the settler."""
        self.path: Path | None = None
        self._fd = -1
        self._size = 0
        self._dirty = False
        self._syncer: asyncio.Task[None] | None = None

    def entry(self, ctx: RequestContext, body: bytes) -> Entry:
        return Entry(self, ctx, body)

    def open(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._fd, self.path = self._new_file()
        self._syncer = asyncio.create_task(self._sync())

    def _new_file(self) -> tuple[int, Path]:
        path = self.directory / f"adapter-{os.getpid()}-{time.time_ns()}.log"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # held while this process lives: the settlers' "alive" test
        return fd, path

    def write(self, line: bytes) -> None:
        if self._fd < 0:
            return  # closed at shutdown: what is open stays in the file for the next settler
        os.write(self._fd, line)
        self._size += len(line)
        self._dirty = True
        if self._size > MAX_BYTES:
            self._rotate()

    def done(self, request_id: str) -> None:
        self.live.pop(request_id, None)
        self.pending.pop(request_id, None)
        self.write(f"D {request_id}\n".encode())

    def _rotate(self) -> None:
        """Start a new file holding only the open requests, then drop the old one (in that order:
        a crash in between leaves both, and settling is idempotent by request id)."""
        fd, path = self._new_file()
        keep = b"".join(u.lines() for u in (*self.live.values(), *self.pending.values()))
        os.write(fd, keep)
        os.fsync(fd)
        old, old_path = self._fd, self.path
        self._fd, self.path, self._size = fd, path, len(keep)
        if old_path is not None:
            old_path.unlink(missing_ok=True)
        os.close(old)

    async def _sync(self) -> None:
        while True:
            await asyncio.sleep(self.fsync_s)
            if self._dirty:
                self._dirty = False
                # OSError: rotated meanwhile (the new file was fsync'd when written).
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(os.fdatasync, self._fd)

    async def close(self) -> None:
        """A clean stop: whatever is still open stays in the file for the next adapter's settler."""
        if self._syncer is not None:
            self._syncer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._syncer
        if self._fd >= 0:
            os.fsync(self._fd)
            if not self.live and not self.pending and self.path is not None:
                self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = -1
