"""Fair scheduling of due deliveries: per endpoint, round-robin, least recently served first.

A tick never reads a window of "the oldest due rows" (one endpoint's backlog would fill it). It
asks each enabled endpoint whether it has due work (one index probe per endpoint, however long its
queue), drops endpoints already at their in-flight bound, orders the rest least recently served
first, reads at most the endpoint's free quota of its due rows, and hands out the free slots one
per endpoint per round. So a backlog costs its own endpoint time and no one else's: see the
scheduling guarantee in docs/webhooks.md.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["Due", "Fairness", "due_endpoints", "heads"]

Due = tuple[str, str, int]
"""(delivery id, endpoint id, attempts so far)."""

_CLAIMABLE = ("d.status = 'pending' AND d.next_attempt_at <= :now "
              "AND (d.lease_until IS NULL OR d.lease_until < :now)")


async def due_endpoints(conn: AsyncConnection, now: int) -> list[str]:
    """Enabled endpoints with at least one claimable delivery."""
    rows = await conn.execute(text(
        "SELECT e.id FROM webhook_endpoints e WHERE e.enabled = 1 AND e.deleted_at IS NULL AND EXISTS ("
        f"SELECT 1 FROM webhook_deliveries d WHERE d.endpoint_id = e.id AND {_CLAIMABLE})"), {"now": now})
    return [str(r[0]) for r in rows]


async def heads(conn: AsyncConnection, quotas: Mapping[str, int], now: int) -> dict[str, list[Due]]:
    """Up to `quotas[endpoint]` claimable deliveries of each endpoint, oldest due first."""
    if not quotas:
        return {}
    parts: list[str] = []
    params: dict[str, object] = {"now": now}
    for i, (endpoint_id, quota) in enumerate(quotas.items()):
        # Each part is its own LIMITed index range scan; the wrapper lets SQLite accept the LIMIT
        # inside a UNION ALL.
        parts.append(f"SELECT * FROM (SELECT d.id, d.endpoint_id, d.attempts FROM webhook_deliveries d "
                     f"WHERE d.endpoint_id = :e{i} AND {_CLAIMABLE} "
                     f"ORDER BY d.next_attempt_at LIMIT :q{i}) AS h{i}")
        params[f"e{i}"], params[f"q{i}"] = endpoint_id, quota
    found: dict[str, list[Due]] = {e: [] for e in quotas}
    for delivery_id, endpoint_id, attempts in await conn.execute(text(" UNION ALL ".join(parts)), params):
        found[str(endpoint_id)].append((str(delivery_id), str(endpoint_id), int(attempts)))
    return found


class Fairness:
    """Which endpoints get the free slots: least recently served first, one slot per round."""

    def __init__(self) -> None:
        self.served: dict[str, int] = {}
        self.seq = 0

    def order(self, candidates: list[str]) -> list[str]:
        # Forget endpoints with nothing due: when work arrives again they have not used a slot lately.
        due = set(candidates)
        self.served = {e: s for e, s in self.served.items() if e in due}
        return sorted(candidates, key=lambda e: (self.served.get(e, -1), e))

    def pick(self, order: list[str], found: Mapping[str, list[Due]], free: int) -> list[Due]:
        chosen: list[Due] = []
        depth = 0
        while len(chosen) < free:
            round_ = [found[e][depth] for e in order if depth < len(found.get(e, ()))]
            if not round_:
                break
            for due in round_[:free - len(chosen)]:
                chosen.append(due)
                self.seq += 1
                self.served[due[1]] = self.seq
            depth += 1
        return chosen
