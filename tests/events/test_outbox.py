"""The outbox writes in the caller's transaction: a rollback leaves no event; dedup keys fire once."""

from __future__ import annotations

import msgspec
import pytest
from sqlalchemy import text

from core.db import write_tx
from core.events import record_event
from core.events.catalog import KeyRevoked, UsageThresholdReached, WalletRecharged
from tests.events.conftest import Db


def _revoked(key_id: str = "key_x") -> KeyRevoked:
    return KeyRevoked(key_id=key_id, prefix="nx-abc", name="ci", revoked_at=1, revoked_by="admin")


async def _count(db: Db) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(text("SELECT COUNT(*) FROM events"))).scalar_one())


async def test_rollback_writes_no_event(db: Db) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with write_tx(db.engine) as conn:
            assert await record_event(conn, db.org_id, "key.revoked", _revoked()) is not None
            raise Boom
    assert await _count(db) == 0
    async with write_tx(db.engine) as conn:
        event_id = await record_event(conn, db.org_id, "key.revoked", _revoked(), project_id=db.project_id)
    assert event_id is not None and event_id.startswith("evt_")
    async with db.engine.connect() as conn:
        payload = (await conn.execute(text("SELECT payload FROM events WHERE id = :e"),
                                      {"e": event_id})).scalar_one()
    body = msgspec.json.decode(payload)
    assert body["id"] == event_id and body["type"] == "key.revoked" and body["organization"] == db.org_id
    assert body["project"] == db.project_id and body["data"]["key_id"] == "key_x"
    assert body["timestamp"].endswith("Z") and isinstance(body["created_at"], int)


async def test_wrong_payload_type_is_refused(db: Db) -> None:
    async with write_tx(db.engine) as conn:
        with pytest.raises(TypeError):
            await record_event(conn, db.org_id, "wallet.recharged", _revoked())
        with pytest.raises(ValueError):
            await record_event(conn, db.org_id, "key.exploded", _revoked())


async def test_dedup_key_fires_once(db: Db) -> None:
    data = UsageThresholdReached(rule_id="rule_1", scope="wallet", scope_id="acct_1", period="2026-05",
                                 threshold_nanos=10, observed_nanos=11)
    ids = []
    for _ in range(5):
        async with write_tx(db.engine) as conn:
            ids.append(await record_event(conn, db.org_id, "usage.threshold_reached", data,
                                          dedup_key="rule_1:acct_1:2026-05:10"))
    assert ids[0] is not None and ids[1:] == [None] * 4
    assert await _count(db) == 1


async def test_opt_in_type_is_skipped_without_subscriber(db: Db) -> None:
    from core.events.catalog import RequestCompleted
    usage = RequestCompleted(request_id="req_1", endpoint="chat", model="m", key_id="key_1", status_code=200,
                             input_tokens=1, output_tokens=2, cost_nanos=3, latency_ms=4, completed_at=5)
    async with write_tx(db.engine) as conn:
        assert await record_event(conn, db.org_id, "request.completed", usage) is None
        assert await record_event(conn, db.org_id, "wallet.recharged", WalletRecharged(
            wallet_id="acct_1", transaction_id="txn_1", amount_nanos=5, balance_nanos=5,
            source="grant")) is not None
    assert await _count(db) == 1
