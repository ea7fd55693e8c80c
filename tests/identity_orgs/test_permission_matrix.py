"""The permission matrix: every customer route x every role (and an admin key) x own/other
organization, asserting the status exactly.

Own organization: the route answers its success status when the role may do it, else 403
`permission_denied`. Other organization: a route that names an object answers 404 `not_found` with
that organization's object id when the role may do it (exactly as a made-up id would) and 403 when it
may not (the permission is checked before anything is looked up); a route that names no object is
404 with the other organization in `OpenAI-Organization`, whatever the role.

The expectations are written out here rather than read from control_plane/identity/policy.py, so
this test checks the policy instead of restating it.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.identity_orgs.conftest import Org, add_member, error_code, new_org, org_client
from tests.identity_orgs.sessions import session_headers
from tests.inference.support import SimPlatform

O, A, D, B, R, K = "owner", "admin", "developer", "billing", "reader", "admin_key"  # noqa: E741
EVERYONE = frozenset({O, A, D, B, R, K})
MANAGERS = frozenset({O, A, K})
PRINCIPALS = (O, A, D, B, R, K)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    allowed: frozenset[str]
    ok: int = 200
    body: Callable[[], Any] | None = None


def _name() -> dict[str, str]:
    return {"name": f"n-{secrets.token_hex(4)}"}


ROUTES = (
    Route("GET", "/projects", EVERYONE),
    Route("POST", "/projects", MANAGERS, 201, _name),
    Route("GET", "/projects/{project}", EVERYONE),
    Route("POST", "/projects/{project}", MANAGERS, 200, _name),
    Route("POST", "/projects/{project}/archive", MANAGERS),
    Route("POST", "/projects/{project}/budget", MANAGERS | {B}, 200, lambda: {"monthly_budget_nanos": 10**9}),
    Route("GET", "/projects/{project}/api_keys", MANAGERS | {D, R}),
    Route("POST", "/projects/{project}/api_keys", MANAGERS | {D}, 201, _name),
    Route("GET", "/projects/{project}/api_keys/{key}", MANAGERS | {D, R}),
    Route("POST", "/projects/{project}/api_keys/{key}", MANAGERS | {D}, 200, _name),
    Route("DELETE", "/projects/{project}/api_keys/{key}", MANAGERS | {D}),
    Route("GET", "/users", EVERYONE),
    Route("GET", "/users/{user}", EVERYONE),
    Route("POST", "/users/{user}", MANAGERS, 200, lambda: {"role": "reader"}),
    Route("DELETE", "/users/{user}", MANAGERS),
    Route("GET", "/invites", MANAGERS),
    Route("POST", "/invites", MANAGERS, 201,
          lambda: {"email": f"i-{secrets.token_hex(4)}@example.com", "role": "developer"}),
    Route("GET", "/invites/{invite}", MANAGERS),
    Route("DELETE", "/invites/{invite}", MANAGERS),
    Route("GET", "/admin_api_keys", MANAGERS),
    Route("POST", "/admin_api_keys", MANAGERS, 201, _name),
    Route("GET", "/admin_api_keys/{admin_key}", MANAGERS),
    Route("DELETE", "/admin_api_keys/{admin_key}", MANAGERS),
    Route("GET", "/audit_logs", MANAGERS),
    Route("GET", "/settings", EVERYONE),
    Route("POST", "/settings", MANAGERS, 200, _name),
)


def test_the_matrix_covers_every_customer_route() -> None:
    from control_plane.api.openapi_ops import OPERATIONS

    documented = {k for k in OPERATIONS if k.split(" ")[1].startswith("/v1/organization")}
    documented.discard("POST /v1/organization/invites/accept")  # not an organization's route: the invitee's
    names = {"{project}": "{project_id}", "{key}": "{key_id}", "{user}": "{user_id}", "{invite}": "{invite_id}",
             "{admin_key}": "{key_id}"}
    covered = set()
    for route in ROUTES:
        path = route.path
        for short, long in names.items():
            path = path.replace(short, long)
        covered.add(f"{route.method} /v1/organization{path}")
    assert covered == documented


Targets = Callable[[Route], Awaitable[dict[str, str]]]


async def _targets(p: Any, org: Org) -> Targets:
    """Fresh objects of `org` for one request (a DELETE must not find them gone)."""

    async def make(route: Route) -> dict[str, str]:
        ids: dict[str, str] = {}
        async with org_client(p, org.admin_key) as c:
            if "{project}" in route.path:
                r = await c.post("/v1/organization/projects", json=_name())
                ids["project"] = r.json()["id"]
            if "{key}" in route.path:
                r = await c.post(f"/v1/organization/projects/{ids['project']}/api_keys", json=_name())
                ids["key"] = r.json()["key"]["id"]
            if "{invite}" in route.path:
                r = await c.post("/v1/organization/invites",
                                 json={"email": f"t-{secrets.token_hex(4)}@example.com", "role": "reader"})
                ids["invite"] = r.json()["id"]
            if "{admin_key}" in route.path:
                ids["admin_key"] = (await c.post("/v1/organization/admin_api_keys", json={})).json()["id"]
        if "{user}" in route.path:
            ids["user"] = await add_member(p, org.id, "developer")
        return ids

    return make


async def _principal(p: Any, org: Org, who: str) -> dict[str, str]:
    if who == K:
        return {"authorization": f"Bearer {org.admin_key}"}
    return await session_headers(p, org.members[who], org.id)


@pytest.mark.parametrize("who", PRINCIPALS)
async def test_every_route_for_every_role_in_its_own_and_another_organization(sp: SimPlatform, who: str) -> None:
    p = sp.platform
    mine = await new_org(p, roles=(A, D, B, R))
    theirs = await new_org(p, roles=(D,))
    own_targets, their_targets = await _targets(p, mine), await _targets(p, theirs)
    wrong: list[str] = []
    async with org_client(p, **await _principal(p, mine, who)) as c:
        for route in ROUTES:
            for side in ("own", "other"):
                ids = await (own_targets if side == "own" else their_targets)(route)
                url = "/v1/organization" + route.path.format(**ids)
                headers = {}
                if side == "own":
                    expected = route.ok if who in route.allowed else 403
                elif "{" in route.path:
                    expected = 404 if who in route.allowed else 403
                else:
                    expected, headers = 404, {"openai-organization": theirs.id}
                r = await c.request(route.method, url, json=route.body() if route.body else None, headers=headers)
                code = {403: "permission_denied", 404: "not_found"}.get(expected)
                if r.status_code != expected or (code is not None and error_code(r) != code):
                    wrong.append(f"{who} {side} {route.method} {route.path}: {r.status_code} {r.text[:200]}")
    assert not wrong, "\n".join(wrong)


async def test_removed_ids_of_another_organization_answer_like_made_up_ones(sp: SimPlatform) -> None:
    """404 bodies for another organization's id and a made-up one differ only by the id."""
    p = sp.platform
    mine, theirs = await new_org(p), await new_org(p)
    async with org_client(p, mine.admin_key) as c:
        real = await c.get(f"/v1/organization/users/{theirs.owner_id}")
        fake = await c.get("/v1/organization/users/user_00000000000000000000000000")
    assert real.status_code == fake.status_code == 404
    assert real.json()["error"]["message"].replace(theirs.owner_id, "ID") == \
        fake.json()["error"]["message"].replace("user_00000000000000000000000000", "ID")

