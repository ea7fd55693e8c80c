"""One platform wired to the provider simulator for the customer REST API tests, and helpers that
make organizations (through the operator's API), admin keys and members."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.harness import Platform
from tests.inference.support import SimPlatform, start_sim_platform

__all__ = ["Org", "add_member", "error_code", "new_org", "operator", "org_client"]


@pytest.fixture(scope="session")
async def sp() -> AsyncIterator[SimPlatform]:
    running = await start_sim_platform()
    try:
        yield running
    finally:
        await running.stop()


@dataclass
class Org:
    id: str
    admin_key: str
    owner_id: str
    project_id: str
    members: dict[str, str] = field(default_factory=dict)
    """role -> user id of a member holding it (the owner under 'owner')."""


def org_client(p: Platform, admin_key: str | None = None, **headers: str) -> httpx.AsyncClient:
    """A client of the edge for the customer REST API."""
    if admin_key is not None:
        headers["authorization"] = f"Bearer {admin_key}"
    return httpx.AsyncClient(base_url=p.edge, timeout=30, headers=headers)


def operator(p: Platform) -> httpx.AsyncClient:
    return p.admin()


async def new_org(p: Platform, roles: tuple[str, ...] = (), credit_nanos: int = 0) -> Org:
    """A new organization with an owner, a default project, an admin key, and one member per role."""
    tag = secrets.token_hex(4)
    async with operator(p) as a:
        r = await a.post("/api/orgs", json={"name": f"org-{tag}", "owner_email": f"owner-{tag}@example.com"})
        assert r.status_code == 201, r.text
        org_id = r.json()["id"]
        owner = (await a.get(f"/api/orgs/{org_id}/members")).json()["data"][0]["user_id"]
        project = (await a.get(f"/api/orgs/{org_id}/projects")).json()["data"][0]["id"]
        r = await a.post(f"/api/orgs/{org_id}/admin_api_keys", json={"name": "tests"})
        assert r.status_code == 201, r.text
        org = Org(id=org_id, admin_key=r.json()["value"], owner_id=owner, project_id=project,
                  members={"owner": owner})
        for role in roles:
            if role != "owner":
                org.members[role] = await add_member(p, org_id, role)
        if credit_nanos:
            r = await a.post(f"/api/orgs/{org_id}/ledger/grants", json={"amount_nanos": credit_nanos},
                             headers={"idempotency-key": secrets.token_hex(8)})
            assert r.status_code == 201, r.text
    return org


async def add_member(p: Platform, org_id: str, role: str) -> str:
    async with operator(p) as a:
        r = await a.post(f"/api/orgs/{org_id}/members",
                         json={"email": f"{role}-{secrets.token_hex(4)}@example.com", "role": role})
    assert r.status_code == 201, r.text
    return str(r.json()["user_id"])


def error_code(r: httpx.Response) -> Any:
    return r.json().get("error", {}).get("code")
