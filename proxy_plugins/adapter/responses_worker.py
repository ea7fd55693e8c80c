"""The worker job that runs background responses (registered in control_plane/worker.py).

Each tick claims queued jobs (or jobs whose worker died: their lease expired) up to a concurrency
bound and runs each in its own task: the same `Run` as the adapter, with every event batch stored
as it is produced, so `GET /v1/responses/{id}?stream=true&starting_after=N` can follow it. A
watchdog renews the lease every second and reads the response's status: a cancel aborts the
upstream call and closes the response as `cancelled`; a lost lease (another worker re-claimed
the job after this one stalled) abandons the run without writing anything more. A worker shut
down mid-run writes nothing either: its lease expires and the job is run again from `base_seq`.

Billing: the run holds its maximum before it starts and is metered like any stream (meter.py):
asked for no more output than held, stopped at the hold, charged what it produced when it
fails or is cancelled midway. A cancelled response keeps the output produced before the cancel
took effect, as OpenAI's does (its stored events already carry it), and pays for exactly that:
its final snapshot holds that output and the usage charged for it (status 499 in usage).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core import ledger
from core.contract import HOLD_MARGIN_MS, output_cap
from core.db import now_ms, read_tx, write_tx
from core.errors import ApiError
from core.events import record_event
from core.events.catalog import (
    EventData,
    EventError,
    ResponseCancelled,
    ResponseCompleted,
    ResponseFailed,
    ResponseUsage,
)
from core.kept import KeptReader
from core.responses import jobs as jobs
from core.responses import store as store
from core.snapshot import BackendRecord, ModelRecord, load_snapshot
from core.tenant import Tenant, key_tenant
from proxy_plugins.adapter.backends import Backends
from proxy_plugins.adapter.meter import Meter
from proxy_plugins.adapter.responses_run import ERROR_CODES, Run, usage_numbers
from proxy_plugins.adapter.translate.events import ResponseStream
from proxy_plugins.adapter.translate.request import CreateResponse, normalize_input
from proxy_plugins.adapter.translate.types import Response, Usage

__all__ = ["BackgroundResponses"]

log = logging.getLogger("nx.worker.responses")
_encode = msgspec.json.encode


async def _creator(conn: AsyncConnection, stored: store.StoredResponse) -> Tenant:
    """The scope of the key that created a background response: its chain is read back as that key
    could (the adapter checked `previous_response_id` with it); a key deleted since leaves the
    response's own project."""
    try:
        return await key_tenant(conn, stored.org_id, stored.key_id)
    except ApiError:
        return Tenant(org_id=stored.org_id, projects=(stored.project_id,))


class BackgroundResponses:
    def __init__(
        self, engine: AsyncEngine, concurrency: int = 8, lease_ms: int = 15_000, watch_s: float = 1.0,
        tenant_backends: frozenset[str] = frozenset(), hold_grace_ms: int = HOLD_MARGIN_MS,
        reader: KeptReader | None = None,
    ) -> None:
        self.engine, self.concurrency, self.lease_ms, self.watch_s = engine, concurrency, lease_ms, watch_s
        self._own_reader = reader is None
        self.reader = KeptReader(engine) if reader is None else reader
        self.hold_grace_ms = hold_grace_ms
        """`hold_grace_seconds`: the run's hold lives this long past its backend's timeout; a run that
        outlives it is still charged, late (`_settle`)."""
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.backends = Backends(tenant_backends=tenant_backends)
        self.tasks: set[asyncio.Task[None]] = set()

    async def __call__(self) -> None:
        while len(self.tasks) < self.concurrency:
            # Nearly every tick finds nothing queued: a read says so without the write transaction.
            if not await self.reader.read(jobs.due):
                return
            async with write_tx(self.engine) as conn:
                claimed = await jobs.claim(conn, self.owner, self.lease_ms)
            if claimed is None:
                return
            task = asyncio.create_task(self._guarded(*claimed), name=f"response {claimed[0]}")
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def aclose(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        # A clean shutdown hands its jobs back at once instead of waiting out the lease.
        with contextlib.suppress(Exception):
            async with write_tx(self.engine) as conn:
                await jobs.hand_back(conn, self.owner)
        if self._own_reader:
            await self.reader.close()
        await self.backends.aclose()

    async def _guarded(self, response_id: str, base_seq: int) -> None:
        try:
            await self._run(response_id, base_seq)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background response %s failed in the worker", response_id)
            with contextlib.suppress(Exception):
                await self._fail(response_id, base_seq, "server_error", "The response failed in the worker.")

    async def _run(self, response_id: str, base_seq: int) -> None:
        async with read_tx(self.engine) as conn:
            stored = await store.get_internal(conn, response_id)
            if stored is None:
                return  # deleted meanwhile (its job row went with it)
            items = normalize_input(await store.conversation(conn, await _creator(conn, stored), response_id))
        response = msgspec.json.decode(stored.body, type=Response)
        if stored.status == "cancelled":
            await self._close_cancelled(response_id, msgspec.to_builtins(response), base_seq)
            return
        snap = await load_snapshot(self.engine)
        model, backend = snap.models.get(stored.model_id), snap.backends.get(stored.backend_id)
        if model is None or backend is None or model.status != "active":
            await self._fail(
                response_id,
                base_seq,
                "server_error",
                f"The model '{stored.requested_model}' is unavailable right now.",
            )
            return
        req = msgspec.json.decode(stored.request, type=CreateResponse)
        held_output = min(req.max_output_tokens or output_cap(model), output_cap(model))
        refused = await self._hold(stored, model, backend, held_output)
        if refused is not None:
            await self._fail(response_id, base_seq, "server_error", refused)
            return
        response.status = "in_progress"
        async with write_tx(self.engine) as conn:
            if not await store.mark_running(conn, response_id, _encode(response)):
                return
        run = Run(
            self.backends, backend, model, req, items, response, announce=False, first_sequence=base_seq,
            tenant=stored.org_id, meter=Meter(held_output),
        )
        last = [base_seq - 1]
        stopping = asyncio.Event()
        consumer = asyncio.create_task(self._consume(response_id, run, last, stopping))
        while True:
            done, _ = await asyncio.wait({consumer}, timeout=self.watch_s)
            if done:
                break
            async with write_tx(self.engine) as conn:
                kept = await jobs.renew(conn, response_id, self.owner, self.lease_ms)
                status = await jobs.status_of(conn, response_id)
            if kept and status == "in_progress":
                continue
            if kept and status == "cancelled":
                # Let the batch being stored land first, so what is charged is what was stored;
                # a consumer waiting on a stalled upstream is cancelled after a short grace.
                stopping.set()
                await asyncio.wait({consumer}, timeout=self.watch_s)
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
            if kept and status == "cancelled":
                produced = run.meter.produced
                usage = Usage.of(await run.count_input(), produced) if produced else None
                await self._close_cancelled(response_id, run.snapshot("cancelled", usage), last[0] + 1, produced)
            return
        try:
            consumer.result()
        except ApiError as exc:  # the upstream refused before the first event
            await self._fail(response_id, base_seq, ERROR_CODES.get(exc.code, "server_error"), exc.message)

    async def _consume(self, response_id: str, run: Run, last: list[int], stopping: asyncio.Event) -> None:
        events = run.events()
        try:
            async for batch in events:
                terminal = batch[-1]["type"] in jobs.TERMINAL_EVENTS
                async with write_tx(self.engine) as conn:
                    if not await jobs.renew(conn, response_id, self.owner, self.lease_ms):
                        return  # another worker owns the job now
                    await jobs.append_events(conn, response_id, batch)
                    if terminal and run.final is not None:
                        await self._finish(conn, response_id, run.final, ("in_progress",), run.meter.produced)
                last[0] = int(batch[-1]["sequence_number"])
                if stopping.is_set():
                    return  # cancelled: the watchdog writes the last word
        finally:
            await events.aclose()  # closes the upstream call now

    async def _hold(self, stored: store.StoredResponse, model: ModelRecord, backend: BackendRecord,
                    held_output: int) -> str | None:
        """A background run is billed like any request: hold its maximum (the whole context window
        of input, since it continues a stored conversation, plus its output limit) before it runs,
        under the response id; `_finish` settles it with the final usage. None when held."""
        try:
            async with write_tx(self.engine) as conn:
                await ledger.place_hold(
                    conn, org_id=stored.org_id, project_id=stored.project_id, key_id=stored.key_id,
                    request_id=stored.id, model_id=model.id, endpoint="responses", backend_id=backend.id,
                    max_input_tokens=model.context_window, max_output_tokens=held_output,
                    expires_at_ms=now_ms() + backend.timeout_ms + self.hold_grace_ms)
        except ledger.LedgerError as exc:
            return f"The response could not be run: {exc.message}"
        return None

    async def _finish(
        self, conn: Any, response_id: str, final: dict[str, Any], from_status: tuple[str, ...], produced: int = 0
    ) -> None:
        await store.finish(
            conn,
            response_id,
            _encode(final),
            str(final["status"]),
            list(final.get("output") or []),
            usage_numbers(final),
            from_status,
        )
        await jobs.release(conn, response_id, self.owner)
        await self._settle(conn, response_id, final, produced)
        await _announce(conn, response_id, final)

    async def _settle(self, conn: Any, response_id: str, final: dict[str, Any], produced: int) -> None:
        """Charge the run in the same transaction that stores its end (no hold: nothing ran). A run
        that failed or was cancelled pays for the output it produced (its usage says how much:
        Run completed it from the meter), and nothing if it produced none."""
        hold = await ledger.load_hold(conn, response_id)
        if hold is None or hold.status not in ("open", "expired"):
            return
        status = _STATUS.get(str(final.get("status")), 200)
        inp, cached, out = usage_numbers(final) if produced or status == 200 else (0, 0, 0)
        # `late`: a run that outlived its hold (it expired while the run went on) is charged all the same.
        [result] = await ledger.settle_many(conn, [(response_id, ledger.Usage(
            status=status, input_tokens=inp, cached_tokens=min(cached, inp), output_tokens=out))], late=True)
        if isinstance(result, ledger.LedgerError):  # log loudly; the answer is still stored
            log.error("background response %s could not be charged: %s", response_id, result.message)

    async def _fail(self, response_id: str, seq: int, code: str, message: str) -> None:
        async with read_tx(self.engine) as conn:
            stored = await store.get_internal(conn, response_id)
        if stored is None:
            return
        stream = ResponseStream(msgspec.json.decode(stored.body, type=Response), seq)
        events = stream.fail(code, message)
        async with write_tx(self.engine) as conn:
            await jobs.append_events(conn, response_id, events)
            await self._finish(
                conn, response_id, msgspec.to_builtins(stream.response), ("queued", "in_progress")
            )

    async def _close_cancelled(self, response_id: str, snapshot: dict[str, Any], seq: int,
                               produced: int = 0) -> None:
        """The last word of a cancelled response: its partial output and the usage charged for it,
        status `cancelled`, and an `error` event that ends any stream following it."""
        snapshot["status"] = "cancelled"
        for item in snapshot.get("output") or []:
            if isinstance(item, dict) and item.get("status") == "in_progress":
                item["status"] = "incomplete"
        event = {
            "type": "error",
            "code": "response_cancelled",
            "message": "The response was cancelled.",
            "param": None,
            "sequence_number": seq,
        }
        async with write_tx(self.engine) as conn:
            await jobs.append_events(conn, response_id, [event])
            await self._finish(conn, response_id, snapshot, ("cancelled",), produced)


_STATUS = {"failed": 502, "cancelled": 499}
"""Final response status -> the usage record's status (completed and incomplete: 200)."""


async def _announce(conn: Any, response_id: str, final: dict[str, Any]) -> None:
    """The background response's webhook event, in the transaction that stores its end."""
    stored = await store.get_internal(conn, response_id)
    if stored is None:
        return
    at, model, status = now_ms() // 1000, stored.requested_model, final.get("status")
    data: EventData
    if status == "failed":
        error = final.get("error") or {}
        data = ResponseFailed(response_id=response_id, model=model, failed_at=at, error=EventError(
            code=str(error.get("code") or "server_error"), message=str(error.get("message") or "")))
        kind = "response.failed"
    elif status == "cancelled":
        data, kind = ResponseCancelled(response_id=response_id, model=model, cancelled_at=at), "response.cancelled"
    else:  # completed, or incomplete (stopped at its output cap): the run is over either way
        inp, _, out = usage_numbers(final)
        data = ResponseCompleted(response_id=response_id, model=model, completed_at=at, usage=ResponseUsage(
            input_tokens=inp, output_tokens=out, total_tokens=inp + out))
        kind = "response.completed"
    await record_event(conn, stored.org_id, kind, data, project_id=stored.project_id or None)
