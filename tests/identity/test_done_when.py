"""Issue 15's "done when", through the edge: a new user signs up, verifies the email from `nx mail`,
signs in, invites a colleague (who signs up, verifies and accepts from the mailed invitation, the
acceptance giving their session a new token), changes the colleague's role, creates a scoped key
through the REST API and calls /v1/responses with it; removing the colleague signs them out."""

from __future__ import annotations

import re

import httpx

from tests.harness import Platform, eventually
from tests.identity.conftest import PASSWORD, Customer, mail_token, new_client, new_email, signed_up
from tests.identity.test_lifecycle import nx_mail


async def test_sign_up_invite_key_and_inference(idp: Platform) -> None:
    async with new_client(idp) as owner_http, new_client(idp) as colleague_http:
        owner = await signed_up(idp, owner_http)
        org = owner.session["organizations"][0]["id"]
        r = await owner_http.get("/v1/organization/projects")
        assert r.status_code == 200, r.text
        project = r.json()["data"][0]["id"]

        colleague_email = new_email("colleague")
        r = await owner_http.post("/v1/organization/invites", json={"email": colleague_email, "role": "developer"},
                                  headers=owner.csrf)
        assert r.status_code == 201, r.text
        shown = await nx_mail(idp, "show", "--last", "--to", colleague_email)
        invitation = re.search(r'"token": "([^"]+)"', shown)
        assert invitation and "You are invited to" in shown, shown

        colleague = await signed_up(idp, colleague_http, colleague_email)
        before = colleague_http.cookies["__Host-nx_session"]
        r = await colleague_http.post("/v1/organization/invites/accept", json={"token": invitation.group(1)},
                                      headers=colleague.csrf)
        assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
        after = r.cookies["__Host-nx_session"]
        assert after != before  # a privilege change rotates the session token
        colleague_http.cookies.clear()
        colleague_http.cookies.set("__Host-nx_session", after)
        session = (await colleague_http.get("/auth/session")).json()
        assert {(o["id"], o["role"]) for o in session["organizations"]} >= {(org, "developer")}
        colleague = Customer(colleague_email, colleague_http, session)

        r = await owner_http.post(f"/v1/organization/users/{colleague.session['user']['id']}",
                                  json={"role": "reader"}, headers=owner.csrf)
        assert r.status_code == 200 and r.json()["role"] == "reader", r.text

        r = await owner_http.post(f"/v1/organization/projects/{project}/api_keys", headers=owner.csrf,
                                  json={"name": "ci", "models": ["sim/*"], "endpoints": ["responses"]})
        assert r.status_code == 201, r.text
        secret = r.json()["secret"]

        async with httpx.AsyncClient(base_url=idp.edge, timeout=30,
                                     headers={"authorization": f"Bearer {secret}"}) as api:
            answers: list[httpx.Response] = []

            async def served() -> bool:
                answers.append(await api.post("/v1/responses", json={"model": "sim/chat", "input": "hello",
                                                                    "max_output_tokens": 16}))
                return answers[-1].status_code == 200

            await eventually(served, "the new key to be served")
            assert answers[-1].json()["status"] == "completed", answers[-1].text
            r = await api.post("/v1/embeddings", json={"model": "sim/embed", "input": "x"})
            assert r.status_code == 403, r.text  # the key's endpoint scope holds

        r = await owner_http.delete(f"/v1/organization/users/{colleague.session['user']['id']}", headers=owner.csrf)
        assert r.status_code == 200, r.text
        assert (await colleague_http.get("/auth/session")).status_code == 401  # signed out everywhere
        assert (await colleague_http.post("/auth/signin", json={"email": colleague_email,
                                                                "password": PASSWORD})).status_code == 200
        assert await mail_token(idp, colleague_email, "Verify your email")
