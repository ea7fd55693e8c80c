"""Threshold crossings fire once per crossing per period (money-events.md §8 item 33), and no float
exists on any money path (item 5)."""

from __future__ import annotations

import ast
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core import ledger
from core.db import read_tx, write_tx
from core.money import request_cost
from tests.money.conftest import PRICE, make_tenant
from tests.money.helpers import assert_books_balance, grant, hold, settle

ROOT = Path(__file__).resolve().parents[2]
UNIT = request_cost(100, 0, 0, *PRICE)  # one "unit" request: 100 input tokens


async def _crossings(engine: AsyncEngine, org_id: str) -> tuple[list[tuple[str, str, str]], int]:
    async with read_tx(engine) as conn:
        rows = [(str(r[0]), str(r[1]), str(r[2])) for r in await conn.execute(text(
            "SELECT scope_kind, scope_id, threshold FROM threshold_crossings WHERE org_id = :o"
            " ORDER BY scope_kind, threshold"), {"o": org_id})]
        events = (await conn.execute(text(
            "SELECT COUNT(*) FROM events WHERE org_id = :o AND type = 'usage.threshold_reached'"),
            {"o": org_id})).scalar_one()
    return rows, int(events)


async def test_budget_thresholds_fire_once_each(engine: AsyncEngine) -> None:
    t = await make_tenant(engine, key_budget=100 * UNIT)
    await grant(engine, t, 10**12)
    fired_at: dict[int, list[tuple[str, str, str]]] = {}
    for i in range(1, 101):
        h = await hold(engine, t, 100, 0)
        await settle(engine, h.id, 100, 0)
        rows, _ = await _crossings(engine, t.org_id)
        fired_at[i] = rows
    # 50 % fires with the 50th charge, 80 % with the 80th, 100 % with the 100th; never again after.
    assert [len(fired_at[i]) for i in (49, 50, 79, 80, 99, 100)] == [0, 1, 1, 2, 2, 3]
    rows, events = await _crossings(engine, t.org_id)
    assert rows == [("key", t.key_id, "100pct"), ("key", t.key_id, "50pct"), ("key", t.key_id, "80pct")]
    assert events == 3
    await assert_books_balance(engine, t.org_id)


async def test_project_budget_crossing_in_one_big_charge_records_each_mark(engine: AsyncEngine) -> None:
    t = await make_tenant(engine, project_budget=10 * UNIT)
    await grant(engine, t, 10**12)
    h = await hold(engine, t, 900, 0)
    await settle(engine, h.id, 900, 0)  # 0 % -> 90 %: crosses 50 and 80 in one charge
    for _ in range(5):
        h = await hold(engine, t, 10, 0)
        await settle(engine, h.id, 10, 0)
    rows, events = await _crossings(engine, t.org_id)
    assert rows == [("project", t.project_id, "50pct"), ("project", t.project_id, "80pct")] and events == 2


async def test_low_balance_fires_once_however_many_charges_follow(engine: AsyncEngine) -> None:
    t = await make_tenant(engine)
    await grant(engine, t, 50 * UNIT)
    async with write_tx(engine) as conn:
        await ledger.set_low_balance(conn, t.org_id, 40 * UNIT)
    for _ in range(30):
        h = await hold(engine, t, 100, 0)
        await settle(engine, h.id, 100, 0)
    rows, events = await _crossings(engine, t.org_id)
    assert [(r[0], r[2]) for r in rows] == [("wallet", "low_balance")] and events == 1


def _money_modules() -> list[Path]:
    return sorted((ROOT / "core" / "ledger").glob("*.py")) + [ROOT / "core" / "money.py"]


def _float_offenders(source: str, name: str) -> list[str]:
    offenders = []
    for node in ast.walk(ast.parse(source, name)):
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Constant) and isinstance(node.value, float):
            offenders.append(f"{where} float literal {node.value!r}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("float", "round"):
            offenders.append(f"{where} {node.func.id}() call")
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and isinstance(node.op, ast.Div):
            offenders.append(f"{where} true division (use //)")
        elif isinstance(node, ast.Attribute) and node.attr in ("time", "Decimal") and \
                isinstance(node.value, ast.Name) and node.value.id in ("time", "decimal"):
            offenders.append(f"{where} {node.value.id}.{node.attr}")
        elif isinstance(node, ast.Name) and node.id == "float":
            offenders.append(f"{where} float annotation")
    return offenders


def test_the_float_scan_catches_floats() -> None:
    bad = "import time\nx: float = 0.5\ny = float(3) + round(2)\nz = 7 / 2\nz /= 2\nt = time.time()\n"
    assert len(_float_offenders(bad, "bad.py")) == 8


def test_no_float_on_any_money_path() -> None:
    modules = _money_modules()
    assert len(modules) >= 9
    assert [o for path in modules for o in _float_offenders(path.read_text(), str(path.relative_to(ROOT)))] == []
