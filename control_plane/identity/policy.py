"""What each role may do in its organization: one table, read by every customer route.

- `owner`: everything, and the only role that may make, change or remove an owner.
- `admin`: everything else (projects, keys, members, invitations, admin keys, the audit log).
- `developer`: API keys of its projects; reads projects and members.
- `billing`: project budgets (the wallet, invoices and plans come with the billing pages); reads.
- `reader`: reads projects, keys and members; changes nothing.

An admin key acts as an `admin` of its one organization. A member narrowed to some projects sees
and touches only those (control_plane/identity/principal.py carries the list).

The permission is checked before any id is looked up, so a refusal says nothing about whether the
object exists: 403 `permission_denied` for what the role may not do, 404 for an id that is not
this organization's (or is made up), whichever organization it belongs to.
"""

from __future__ import annotations

from typing import Literal

from core.errors import ApiError

__all__ = ["GRANTS", "ROLES", "Permission", "Role", "allows", "gains", "require"]

Role = Literal["owner", "admin", "developer", "billing", "reader"]
ROLES: tuple[Role, ...] = ("owner", "admin", "developer", "billing", "reader")

Permission = Literal[
    "org.read", "org.write", "projects.read", "projects.write", "projects.budget", "keys.read", "keys.write",
    "members.read", "members.write", "invites.read", "invites.write", "admin_keys.read", "admin_keys.write",
    "audit.read",
]

_READ: frozenset[Permission] = frozenset({"org.read", "projects.read", "members.read"})
_ADMIN: frozenset[Permission] = _READ | {
    "org.write", "projects.write", "projects.budget", "keys.read", "keys.write", "members.write", "invites.read",
    "invites.write", "admin_keys.read", "admin_keys.write", "audit.read"}

GRANTS: dict[Role, frozenset[Permission]] = {
    "owner": _ADMIN,
    "admin": _ADMIN,
    "developer": _READ | {"keys.read", "keys.write"},
    "billing": _READ | {"projects.budget"},
    "reader": _READ | {"keys.read"},
}


def allows(role: Role, permission: Permission) -> bool:
    return permission in GRANTS[role]


def require(role: Role, permission: Permission) -> None:
    if not allows(role, permission):
        raise ApiError("permission_denied", f"The role {role!r} may not do this ({permission}).")


def gains(new: Role, old: str) -> bool:
    """Whether moving from `old` to `new` grants anything `old` lacked (an owner also rules owners).
    Such a change ends the member's sessions, so the raised role is only ever used with a token
    issued after it (a planted or stolen older token does not gain it); a loss takes effect at once
    anyway, since every request reads the role afresh."""
    had = GRANTS.get(old, frozenset())  # type: ignore[call-overload]  # a stored role: a str
    return not GRANTS[new] <= had or (new == "owner" and old != "owner")
