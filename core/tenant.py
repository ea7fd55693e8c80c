"""What a `/v1` caller may see: its organization and, for a key limited to some projects, only those.

The sidecar authorises a key to *act for* a project; what the key may *read back* (stored
responses, their input items, a `previous_response_id` chain) follows the same scope: a key
limited to project P2 sees nothing of project P1, even in its own organization, and P1's ids
answer exactly like missing ones. A key without a project scope sees its whole organization.
"""

from __future__ import annotations

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.errors import ApiError

__all__ = ["Tenant", "key_tenant"]


class Tenant(msgspec.Struct, frozen=True):
    org_id: str
    projects: tuple[str, ...] = ()
    """Empty: every project of the organization."""

    def allows(self, project_id: str) -> bool:
        return not self.projects or project_id in self.projects

    def where(self, alias: str = "") -> tuple[str, dict[str, object]]:
        """SQL condition (organization, then projects when limited) and its parameters."""
        col = f"{alias}." if alias else ""
        params: dict[str, object] = {"t_org": self.org_id}
        cond = f"{col}org_id = :t_org"
        if self.projects:
            names = [f":t_p{i}" for i in range(len(self.projects))]
            params.update({f"t_p{i}": p for i, p in enumerate(self.projects)})
            cond += f" AND {col}project_id IN ({', '.join(names)})"
        return cond, params


async def key_tenant(conn: AsyncConnection, org_id: str, key_id: str) -> Tenant:
    """The scope of API key `key_id` of `org_id`, read from the database (the sidecar passed the key
    moments ago; a key deleted since is refused rather than read as unlimited)."""
    row = (await conn.execute(text("SELECT projects FROM api_keys WHERE id = :k AND org_id = :o"),
                              {"k": key_id, "o": org_id})).first()
    if row is None:
        raise ApiError("invalid_api_key", "This API key no longer exists.")
    return Tenant(org_id=org_id, projects=tuple(sorted(msgspec.json.decode(str(row[0]), type=list[str]))))
