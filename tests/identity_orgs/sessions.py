"""Signed-in members for the tests: a session made the way sign-in makes one (identity's
create_session on the platform's database), presented as the browser would (the `__Host-`
cookie, the CSRF header on writes, the organization in `OpenAI-Organization`)."""

from __future__ import annotations

from control_plane.identity.sessions import CSRF_HEADER, SESSION_COOKIE, create_session, csrf_token
from core.db import make_engine, write_tx
from core.secrets import load_secrets
from tests.harness import Platform

__all__ = ["execute", "session_headers"]


async def session_headers(p: Platform, user_id: str, org_id: str | None, csrf: bool = True) -> dict[str, str]:
    engine = make_engine(p.s)
    try:
        async with write_tx(engine) as conn:
            _session, token = await create_session(conn, user_id, p.s, ip="127.0.0.1")
    finally:
        await engine.dispose()
    headers = {"cookie": f"{SESSION_COOKIE}={token}"}
    if csrf:
        headers[CSRF_HEADER] = csrf_token(load_secrets(p.s).internal_token, token)
    if org_id is not None:
        headers["openai-organization"] = org_id
    return headers


async def execute(p: Platform, statement: str, params: dict[str, object]) -> list[tuple[object, ...]]:
    """One statement on the platform's database (tests move time or read the outbox this way)."""
    from sqlalchemy import text

    engine = make_engine(p.s)
    try:
        async with write_tx(engine) as conn:
            result = await conn.execute(text(statement), params)
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        await engine.dispose()
