"""The worker's identity job: mail delivery over SMTP (when configured) and the pruning of ended
sessions, spent or expired tokens and stale sign-in failure counts."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from control_plane.identity.mail import deliver_pending
from control_plane.identity.throttle import FORGET_AFTER_MS
from core.db import now_ms, write_tx
from core.settings import Settings

__all__ = ["IdentityJob"]

PRUNE_EVERY_MS = 300_000
KEEP_TOKENS_MS = 7 * 86400_000  # spent tokens are kept a week: "already used" reads better than "unknown"


class IdentityJob:
    def __init__(self, settings: Settings, engine: AsyncEngine) -> None:
        self.settings, self.engine = settings, engine
        self.pruned_at = 0

    async def __call__(self) -> None:
        await deliver_pending(self.engine, self.settings)
        now = now_ms()
        if now - self.pruned_at < PRUNE_EVERY_MS:
            return
        self.pruned_at = now
        async with write_tx(self.engine) as conn:
            await conn.execute(text("DELETE FROM sessions WHERE expires <= :now OR idle_expires <= :now"),
                               {"now": now})
            await conn.execute(text("DELETE FROM verification_tokens WHERE expires <= :old"),
                               {"old": now - KEEP_TOKENS_MS})
            await conn.execute(text("DELETE FROM signin_throttle WHERE updated_at < :old AND locked_until < :now"),
                               {"old": now - FORGET_AFTER_MS, "now": now})
