"""Sessions through the edge: cookie flags, a new token at every sign-in (no fixation), CSRF on
every cookie-authenticated write, sign out everywhere, idle and absolute expiry."""

from __future__ import annotations

from tests.harness import Platform
from tests.identity.conftest import PASSWORD, new_client, signed_up, sql


def _cookie_attrs(set_cookie: list[str], name: str) -> dict[str, str]:
    line = next(c for c in set_cookie if c.startswith(f"{name}="))
    parts = [p.strip() for p in line.split(";")]
    return {k.lower(): v for k, _sep, v in (p.partition("=") for p in parts[1:])}


async def test_cookie_flags(idp: Platform) -> None:
    async with new_client(idp) as c:
        me = await signed_up(idp, c)
        r = await c.post("/auth/signin", json={"email": me.email, "password": PASSWORD})
        cookies = r.headers.get_list("set-cookie")
        session = _cookie_attrs(cookies, "__Host-nx_session")
        assert {"httponly", "path", "samesite"} <= set(session) and session["path"] == "/", cookies
        assert session["samesite"].lower() == "lax" and "domain" not in session
        assert "secure" not in session  # plain HTTP on loopback: the embedded default
        csrf = _cookie_attrs(cookies, "__Host-nx_csrf")
        assert "httponly" not in csrf and csrf["samesite"].lower() == "lax"  # readable: double-submit
        # the same sign-in to a public host name is Secure
        r = await c.post("/auth/signin", json={"email": me.email, "password": PASSWORD},
                         headers={"host": "api.example.com"})
        assert r.status_code == 200, r.text
        assert "secure" in _cookie_attrs(r.headers.get_list("set-cookie"), "__Host-nx_session")


async def test_sign_in_rotates_the_session_token(idp: Platform) -> None:
    async with new_client(idp) as c:
        me = await signed_up(idp, c)
        first = c.cookies["__Host-nx_session"]
        # a planted token (say, an attacker's own session) is ended by the sign-in, never adopted
        r = await c.post("/auth/signin", json={"email": me.email, "password": PASSWORD})
        assert r.status_code == 200
        second = c.cookies["__Host-nx_session"]
        assert second != first and r.json()["id"] != me.session["id"]
        async with new_client(idp, cookies={"__Host-nx_session": first}) as attacker:
            assert (await attacker.get("/auth/session")).status_code == 401
        async with new_client(idp, cookies={"__Host-nx_session": "made-up-token"}) as planted:
            r = await planted.post("/auth/signin", json={"email": me.email, "password": PASSWORD})
            assert r.status_code == 200 and r.cookies["__Host-nx_session"] != "made-up-token"
        rows = await sql(idp, "SELECT session_token_hash FROM sessions WHERE id = :id", id=r.json()["id"])
        assert rows and second not in str(rows[0][0])  # stored hashed


async def test_cookie_authenticated_writes_need_the_csrf_token(idp: Platform) -> None:
    async with new_client(idp) as c:
        me = await signed_up(idp, c)
        for headers in ({}, {"x-csrf-token": "0" * 64}, {"x-csrf-token": ""}):
            for path in ("/auth/signout", "/auth/signout_all"):
                r = await c.post(path, headers=headers)
                assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed", r.text
            r = await c.post("/auth/password", json={"current_password": PASSWORD,
                                                     "new_password": "another fine phrase 5"}, headers=headers)
            assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed", r.text
        assert (await c.get("/auth/session")).status_code == 200  # still signed in
        # the session's token, from sign-in or GET /auth/session or the readable cookie
        token = (await c.get("/auth/session")).json()["csrf_token"]
        assert token == me.session["csrf_token"] == c.cookies["__Host-nx_csrf"]
        assert (await c.post("/auth/signout", headers=me.csrf)).status_code == 200
        r = await c.post("/auth/signout", headers=me.csrf)
        assert r.status_code == 401 and r.json()["error"]["code"] == "not_signed_in"


async def test_sign_out_everywhere(idp: Platform) -> None:
    async with new_client(idp) as a, new_client(idp) as b:
        me = await signed_up(idp, a)
        assert (await b.post("/auth/signin", json={"email": me.email, "password": PASSWORD})).status_code == 200
        r = await a.post("/auth/signout_all", headers=me.csrf)
        assert r.status_code == 200 and r.json()["sessions_ended"] == 2, r.text
        assert (await a.get("/auth/session")).status_code == 401
        assert (await b.get("/auth/session")).status_code == 401


async def test_idle_and_absolute_expiry(idp: Platform) -> None:
    async with new_client(idp) as c:
        me = await signed_up(idp, c)
        sid = me.session["id"]
        await sql(idp, "UPDATE sessions SET idle_expires = 1 WHERE id = :id", id=sid)
        assert (await c.get("/auth/session")).status_code == 401
        assert await sql(idp, "SELECT id FROM sessions WHERE id = :id", id=sid) == []  # deleted on sight
        r = await c.post("/auth/signin", json={"email": me.email, "password": PASSWORD})
        await sql(idp, "UPDATE sessions SET expires = 1 WHERE id = :id", id=r.json()["id"])
        assert (await c.get("/auth/session")).status_code == 401


async def test_the_customer_rest_api_takes_the_session_and_its_csrf_token(idp: Platform) -> None:
    async with new_client(idp) as c:
        me = await signed_up(idp, c)
        assert (await c.get("/v1/organization/projects")).status_code == 200  # reads need no token
        invite = {"email": "someone@example.com", "role": "reader"}
        for headers in ({}, {"x-csrf-token": "f" * 64}):
            r = await c.post("/v1/organization/invites", json=invite, headers=headers)
            assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed", r.text
        assert (await c.post("/v1/organization/invites", json=invite, headers=me.csrf)).status_code == 201
        assert (await c.post("/auth/signout", headers=me.csrf)).status_code == 200
        assert (await c.get("/v1/organization/projects")).status_code == 401


async def test_a_session_unused_for_a_minute_moves_its_idle_expiry_inside_any_route(idp: Platform) -> None:
    """Regression: the idle expiry's write ran in a transaction of its own, and on SQLite waited for the
    write transaction of the very route resolving the session (sign-out, the customer REST API):
    that request hung. The write now goes in the route's own transaction."""
    async with new_client(idp) as c:
        me = await signed_up(idp, c)
        sid = me.session["id"]
        for method, path in (("GET", "/v1/organization/projects"), ("POST", "/auth/signout_all")):
            await sql(idp, "UPDATE sessions SET last_seen_at = last_seen_at - 120000 WHERE id = :id", id=sid)
            before = (await sql(idp, "SELECT idle_expires FROM sessions WHERE id = :id", id=sid))[0][0]
            r = await c.request(method, path, headers=me.csrf, timeout=10)
            assert r.status_code == 200, r.text
            if method == "GET":
                after = (await sql(idp, "SELECT idle_expires FROM sessions WHERE id = :id", id=sid))[0][0]
                assert after >= before
        async with new_client(idp) as d:
            other = await signed_up(idp, d)
            await sql(idp, "UPDATE sessions SET idle_expires = 1 WHERE id = :id", id=other.session["id"])
            r = await d.post("/auth/signout", headers=other.csrf, timeout=10)
            assert r.status_code == 401, r.text  # ended on sight, in the route's transaction
