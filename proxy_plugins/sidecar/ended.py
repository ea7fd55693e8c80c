"""Requests that ended, as Envoy's access log reports them: free what the sidecar took for them.

The sidecar takes three things for an inference request: a concurrency slot, a money hold and
(with `Idempotency-Key`) a claim. The adapter gives them back when it finishes (its settlement and
finish report), but a request that never reached the adapter (it was down: Envoy answered 503)
or whose adapter died under it never reports. Envoy's access log fires for every request, however
it ended, so it is the hook that always fires. Per entry:
- never reached the adapter (no byte went upstream, or the connection failed: `UF`, `UH`, `NC`,
  `UO`, `NR`): slot, hold and claim are released now (the token estimate is refunded too);
- the adapter died with it (`UC`): the slot is released now; the hold and the claim keep
  `ORPHAN_GRACE_MS`, for the adapter's successor to settle what was served, then expire;
- the client left (`DC`) while the adapter had it: nothing; a JSON request keeps running to its
  end and the adapter settles and reports it (its slot stays renewed while it runs);
- otherwise (answered): the slot is released (again: the adapter's report may have been lost);
- the check itself got no answer (a sidecar killed or too slow after it may have placed the hold:
  `UAEX` with status 511): whatever hold and claim carry its request id are released (its slot,
  in a shared Redis store, lives out its short lease; in memory it died with the process).
Every release is conditional (a slot already freed, a hold settled, a claim completed or taken by
a retry stay as they are), so Envoy's log and the adapter's report can both arrive, in any order.

Transport: Envoy's Fluentd access logger (`envoy/ended-log.yaml`) writes msgpack
over TCP to this process's log port; decoded with `msgspec.msgpack`. Chosen over a file access log
(tailed here) because it reaches a sidecar on another host (compose runs Envoy and the sidecar in
separate containers, replicas behind one cluster) and needs no shared volume, offsets or rotation;
and over the gRPC access-log service because that needs a gRPC server and Envoy's protobufs in a
process that is otherwise plain HTTP (server.py). What it costs: entries buffered by Envoy while
no sidecar accepts them are bounded (`buffer_size_bytes`) and a connection cut mid-write loses
what was in it; such a request's slot then lives out its lease (seconds) and its hold its expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncEngine

from core import idempotency
from core.contract import ORPHAN_GRACE_MS, SIDECAR_ERROR_STATUS
from core.db import now_ms, write_tx
from core.ledger.leases import release_unserved, shorten
from proxy_plugins.sidecar.ratelimit import Bucket, Finished, LimitStore

__all__ = ["Ended", "Endings", "LogListener", "split_messages"]

log = logging.getLogger("nx.sidecar.ended")

NOT_REACHED = frozenset({"UF", "UH", "NC", "UO", "NR", "URX"})
"""Envoy response flags of a request that no adapter received."""


class Ended(msgspec.Struct, frozen=True):
    request_id: str
    buckets: str | None
    """`x-nx-rl`: the buckets the sidecar admitted it with (JSON)."""
    idem: str | None
    """`x-nx-idem`: its Idempotency-Key claim."""
    held: bool
    flags: frozenset[str]
    upstream_bytes: int
    unchecked: bool = False
    """Envoy got no answer from the sidecar's check (`UAEX` with status 511)."""

    @property
    def reached(self) -> bool:
        return self.upstream_bytes > 0 and not (self.flags & NOT_REACHED)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value not in ("", "-") else None


def from_record(record: dict[str, Any]) -> Ended | None:
    request_id = _text(record.get("id"))
    if request_id is None:
        return None
    flags = _text(record.get("flags"))
    sent, code = record.get("up_sent"), record.get("code")
    if isinstance(sent, str):  # a formatter may hand numbers over as text
        sent = int(sent) if sent.isdigit() else 0
    return Ended(request_id=request_id, buckets=_text(record.get("rl")), idem=_text(record.get("idem")),
                 held=_text(record.get("hold")) is not None,
                 flags=frozenset(flags.split(",")) if flags else frozenset(),
                 upstream_bytes=int(sent) if isinstance(sent, int | float) else 0,
                 unchecked=str(code) == str(SIDECAR_ERROR_STATUS) and "UAEX" in (flags or ""))


class Endings:
    """Applies ended requests to the limit store and the database."""

    def __init__(self, limits: LimitStore, engine: AsyncEngine) -> None:
        self.limits = limits
        self.engine = engine
        self.seen = 0
        self.released_holds = 0

    async def apply(self, ended: Sequence[Ended]) -> None:
        slots: list[Finished] = []
        unserved_holds: list[str] = []
        unserved_claims: list[tuple[str, str]] = []
        orphan_holds: list[str] = []
        orphan_claims: list[tuple[str, str]] = []
        unchecked: list[str] = []
        for e in ended:
            self.seen += 1
            if e.unchecked:
                unchecked.append(e.request_id)
                continue
            reached, died = e.reached, "UC" in e.flags
            if e.buckets and (not reached or died or "DC" not in e.flags):
                try:
                    buckets = msgspec.json.decode(e.buckets, type=list[Bucket])
                except msgspec.MsgspecError:
                    log.error("request %s: malformed x-nx-rl in the access log", e.request_id)
                else:
                    # Not reached: its token estimate is given back too (it used none).
                    slots.append((e.request_id, buckets, None if reached else 0))
            if not reached:
                if e.held:
                    unserved_holds.append(e.request_id)
                if e.idem:
                    unserved_claims.append((e.idem, e.request_id))
            elif died:
                if e.held:
                    orphan_holds.append(e.request_id)
                if e.idem:
                    orphan_claims.append((e.idem, e.request_id))
        if slots:
            await self.limits.finish(slots)
        if unserved_holds or unserved_claims or orphan_holds or orphan_claims or unchecked:
            until = now_ms() + ORPHAN_GRACE_MS
            try:
                async with write_tx(self.engine) as conn:
                    self.released_holds += await release_unserved(conn, unserved_holds + unchecked)
                    for request_id in unchecked:
                        await idempotency.release_request(conn, request_id)
                    for record_id, request_id in unserved_claims:
                        await idempotency.release_run(conn, record_id, request_id)
                    await shorten(conn, orphan_holds, until)
                    for record_id, request_id in orphan_claims:
                        await idempotency.shorten_lease(conn, record_id, request_id, until)
            except Exception:  # the worker's expiry still frees them
                log.exception("could not release the holds of %d ended requests",
                              len(unserved_holds) + len(orphan_holds))


class _Short(Exception):
    """The buffer ends inside a message: wait for more bytes."""


_FIXED = {0xca: 4, 0xcb: 8, 0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8, 0xd0: 1, 0xd1: 2, 0xd2: 4, 0xd3: 8,
          0xd4: 2, 0xd5: 3, 0xd6: 5, 0xd7: 9, 0xd8: 17}
_SIZED = {0xc4: 1, 0xc5: 2, 0xc6: 4, 0xd9: 1, 0xda: 2, 0xdb: 4, 0xc7: 1, 0xc8: 2, 0xc9: 4}
_COUNTED = {0xdc: (2, 1), 0xdd: (4, 1), 0xde: (2, 2), 0xdf: (4, 2)}


def _uint(buf: bytes, pos: int, size: int) -> int:
    if pos + size > len(buf):
        raise _Short
    return int.from_bytes(buf[pos:pos + size], "big")


def _message_end(buf: bytes, pos: int) -> int:
    """Where the msgpack value starting at `pos` ends (TCP gives no message boundaries, and
    msgspec decodes only whole values): walks headers only, never the strings themselves."""
    pending = 1
    while pending:
        if pos >= len(buf):
            raise _Short
        b = buf[pos]
        pos += 1
        pending -= 1
        if b <= 0x7f or b >= 0xe0 or b in (0xc0, 0xc2, 0xc3):
            continue
        if b <= 0x8f:
            pending += 2 * (b & 0x0f)
        elif b <= 0x9f:
            pending += b & 0x0f
        elif b <= 0xbf:
            pos += b & 0x1f
        elif b in _FIXED:
            pos += _FIXED[b]
        elif b in _SIZED:
            size = _SIZED[b]
            pos += size + _uint(buf, pos, size) + (1 if b in (0xc7, 0xc8, 0xc9) else 0)
        elif b in _COUNTED:
            size, per = _COUNTED[b]
            pending += per * _uint(buf, pos, size)
            pos += size
        else:
            raise ValueError(f"not msgpack (byte 0x{b:02x})")
    if pos > len(buf):
        raise _Short
    return pos


def split_messages(buf: bytes) -> tuple[list[bytes], bytes]:
    """Whole msgpack messages at the start of `buf`, and the incomplete rest."""
    out: list[bytes] = []
    start = 0
    while start < len(buf):
        try:
            end = _message_end(buf, start)
        except _Short:
            break
        out.append(buf[start:end])
        start = end
    return out, buf[start:]


def decode_forward(message: bytes) -> list[Ended]:
    """One Fluentd Forward-mode message: `[tag, [[time, record], ...]]`."""
    decoded = msgspec.msgpack.decode(message)
    if not (isinstance(decoded, list) and len(decoded) >= 2 and isinstance(decoded[1], list)):
        return []
    out = []
    for entry in decoded[1]:
        if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], dict):
            ended = from_record(entry[1])
            if ended is not None:
                out.append(ended)
    return out


class LogListener:
    """The TCP server Envoy's Fluentd access logger connects to."""

    def __init__(self, endings: Endings, host: str, port: int) -> None:
        self.endings = endings
        self.host, self.port = host, port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        pending = b""
        try:
            while chunk := await reader.read(1 << 16):
                messages, pending = split_messages(pending + chunk)
                for message in messages:
                    try:
                        ended = decode_forward(message)
                    except msgspec.MsgspecError:
                        log.error("undecodable access-log message (%d bytes)", len(message))
                        continue
                    await self.endings.apply(ended)
        except ValueError as exc:  # not Envoy speaking: drop the connection
            log.error("access-log connection closed: %s", exc)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()
