"""The local models' fair queue, deterministically: the order jobs run in (no timing), the shares
of weighted tenants, and admission (429 past a tenant's share with Retry-After, 503 when full,
slots freed when jobs end or are dropped). No model is loaded: jobs are plain functions."""

from __future__ import annotations

import asyncio
import threading

import pytest

from local_models.errors import ApiError
from local_models.fairqueue import FairOrder, FairQueue


def drain(order: FairOrder[str]) -> list[str]:
    out = []
    while (item := order.pop()) is not None:
        out.append(item)
    return out


def test_a_small_job_overtakes_a_queued_batch_of_another_tenant() -> None:
    order: FairOrder[str] = FairOrder()
    for i in range(8):
        order.push("big", 4096, f"big{i}")
    assert order.pop() == "big0"  # running
    order.push("small", 10, "small0")
    assert drain(order) == ["small0", *(f"big{i}" for i in range(1, 8))]


def test_equal_tenants_alternate_and_a_tenant_waits_behind_its_own_work() -> None:
    order: FairOrder[str] = FairOrder()
    for i in range(3):
        order.push("a", 100, f"a{i}")
    for i in range(3):
        order.push("b", 100, f"b{i}")
    order.push("a", 1, "a-small")  # behind a's own queued work, not ahead of b's
    assert drain(order) == ["a0", "b0", "a1", "b1", "a2", "b2", "a-small"]


def test_weights_share_the_model_in_proportion() -> None:
    order: FairOrder[str] = FairOrder({"gold": 3.0})
    for i in range(6):
        order.push("gold", 30, f"g{i}")
        order.push("plain", 30, f"p{i}")
    # gold's tags advance by 10, plain's by 30: three gold jobs per plain one while both wait.
    assert drain(order) == ["g0", "g1", "p0", "g2", "g3", "g4", "p1", "g5", "p2", "p3", "p4", "p5"]


def test_an_idle_tenant_earns_no_credit() -> None:
    order: FairOrder[str] = FairOrder()
    for i in range(5):
        order.push("busy", 100, f"busy{i}")
    assert drain(order)[:5] == [f"busy{i}" for i in range(5)]
    # "late" was idle all along: it starts from now (the virtual time), not from zero.
    order.push("busy", 100, "busy5")
    order.push("late", 100, "late0")
    order.push("late", 100, "late1")
    assert drain(order) == ["busy5", "late0", "late1"]


async def test_the_queue_runs_jobs_in_fair_order_on_one_thread() -> None:
    queue = FairQueue("t", max_queue=16, max_per_tenant=8)
    ran: list[str] = []
    gate = threading.Event()

    def job(name: str) -> str:
        if name == "a0":
            gate.wait(10)
        ran.append(name)
        return name

    tickets = []
    futures = []
    for name, tenant in (("a0", "a"), ("a1", "a"), ("a2", "a"), ("a3", "a"), ("b0", "b")):
        ticket = queue.admit(tenant)
        futures.append(ticket.submit(lambda n=name: job(n), 1000 if tenant == "a" else 10))
        ticket.close()
        tickets.append(ticket)
    gate.set()
    assert await asyncio.gather(*futures) == ["a0", "a1", "a2", "a3", "b0"]
    assert ran == ["a0", "b0", "a1", "a2", "a3"]
    assert queue.admitted == 0
    queue.shutdown()


async def test_a_tenant_past_its_share_gets_429_the_others_do_not() -> None:
    queue = FairQueue("t", max_queue=3, max_per_tenant=2)
    gate = threading.Event()
    held = []
    for _ in range(2):
        ticket = queue.admit("greedy")
        held.append(ticket.submit(lambda: gate.wait(10), 100))
        ticket.close()
    with pytest.raises(ApiError) as refused:
        queue.admit("greedy")
    assert refused.value.status == 429 and refused.value.detail.code == "rate_limit_exceeded"
    assert int(refused.value.headers["retry-after"]) >= 1
    other = queue.admit("polite")  # another organization still gets in
    other.close()
    assert queue.admitted_for("polite") == 0  # a ticket without jobs frees its slot at once
    for tenant in ("polite", "third"):
        queue.admit(tenant)
    with pytest.raises(ApiError) as full:
        queue.admit("fourth")
    assert full.value.status == 503 and full.value.detail.code == "server_busy"
    gate.set()
    await asyncio.gather(*held)
    assert queue.admitted_for("greedy") == 0
    queue.admit("greedy").close()
    queue.shutdown()


async def test_a_dropped_job_frees_its_slot_before_it_would_have_run() -> None:
    queue = FairQueue("t", max_queue=4, max_per_tenant=1)
    gate = threading.Event()
    first = queue.admit("a")
    running = first.submit(lambda: gate.wait(10), 1)
    first.close()
    second = queue.admit("b")
    waiting = second.submit(lambda: pytest.fail("a dropped job must not run"), 1)
    second.close()
    waiting.cancel()
    await asyncio.sleep(0)
    assert queue.admitted_for("b") == 0  # freed at once, though the model is still busy
    gate.set()
    await running
    assert queue.admitted == 0
    queue.shutdown()
