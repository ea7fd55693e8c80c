"""Events and signed webhooks: catalog, transactional outbox, endpoints, delivery, SSRF guard.

Producers call `record_event(conn, org_id, event_type, data, project_id=None, dedup_key=None)` inside
the transaction that changes state; see `outbox.py` and `docs/webhooks.md`.
"""

from core.events.catalog import EVENT_TYPES
from core.events.outbox import record_event

__all__ = ["EVENT_TYPES", "record_event"]
