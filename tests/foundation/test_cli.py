"""The `nx` command line for headless operators: the management API's operations against the
database, with the running node's Envoy and sidecar following at once."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.foundation.conftest import eventually
from tests.harness import ROOT, Platform, free_port

NX = str(Path(sys.executable).parent / "nx")


async def nx(p: Platform, *args: str, ok: bool = True) -> Any:
    proc = await asyncio.create_subprocess_exec(NX, *args, env=p.env, cwd=str(ROOT),
                                                stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if not ok:
        assert proc.returncode != 0, out
        return err.decode()
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


async def test_cli_routing(private: Platform) -> None:
    port = free_port()
    b = await nx(private, "backends", "create", "--id", "clib", "--protocol", "openai_chat",
                 "--base-url", f"http://127.0.0.1:{port}/v1", "--api-key-env", "CLIB_KEY", "--timeout-ms",
                 "5000")
    assert b["id"] == "clib" and b["timeout_ms"] == 5000

    async def envoy_has_it() -> bool:
        async with httpx.AsyncClient() as c:
            return "backend_clib::" in (await c.get(f"http://127.0.0.1:{private.s.envoy_admin_port}/clusters")).text

    await eventually(envoy_has_it, "Envoy has the cluster created from the CLI")
    m = await nx(private, "models", "create", "--id", "clib/small", "--display-name", "Small", "--backend",
                 "clib",
                 "--upstream-name", "small", "--kind", "text", "--context-window", "2048",
                 "--max-output-tokens", "256", "--capabilities", '{"tools": true}',
                 "--price", '{"input_nanos_per_mtok": 1000, "cached_input_nanos_per_mtok": 500, '
                            '"output_nanos_per_mtok": 2000}')
    assert m["price"]["version"] == 1 and m["capabilities"]["tools"] is True
    assert (await nx(private, "prices", "add", "--model", "clib/small", "--input-nanos-per-mtok", "1100",
                     "--cached-input-nanos-per-mtok", "500", "--output-nanos-per-mtok",
                     "2000"))["version"] == 2
    assert [p["version"] for p in (await nx(private, "prices", "list", "--model",
                                            "clib/small"))["data"]] == [1, 2]
    assert (await nx(private, "routes", "set", "clib-fast", "--model", "clib/small"))["model"] == "clib/small"
    async with private.client() as c:
        listed = {x["id"]: x for x in (await c.get("/v1/models")).json()["data"]}
    assert listed["clib-fast"]["alias_of"] == "clib/small"
    assert listed["clib/small"]["pricing"]["input"] == "0.0000011"
    group = await nx(private, "routes", "set", "clib-group", "--targets", '[{"model": "clib/small", "weight": 3}]',
                     "--fallbacks", "clib-fast", "--strategy", "latency", "--max-attempts", "2")
    assert (group["targets"], group["fallbacks"], group["strategy"], group["max_attempts"]) == (
        [{"model": "clib/small", "weight": 3, "priority": 0}], ["clib-fast"], "latency", 2)
    err = await nx(private, "routes", "set", "clib-fast", "--model", "clib/small", "--fallbacks", "clib-group",
                   ok=False)
    assert "cycle" in err
    assert (await nx(private, "routes", "health"))["object"] == "list"
    assert (await nx(private, "routes", "delete", "clib-group"))["alias"] == "clib-group"
    assert (await nx(private, "models", "update", "clib/small", "--status",
                     "disabled"))["status"] == "disabled"
    assert (await nx(private, "backends", "update", "clib", "--api-key-env", "null"))["api_key_env"] is None
    assert (await nx(private, "backends", "disable", "clib"))["enabled"] is False
    assert "clib" in {x["id"] for x in (await nx(private, "backends", "list"))["data"]}
    assert (await nx(private, "routes", "delete", "clib-fast"))["alias"] == "clib-fast"
    err = await nx(private, "models", "update", "clib/small", "--status", "bogus", ok=False)
    assert "status" in err
    err = await nx(private, "backends", "create", "--id", "x", "--protocol", "openai", "--base-url",
                   "ftp://x", ok=False)
    assert "base_url" in err


async def test_cli_orgs_projects_members(private: Platform) -> None:
    org = await nx(private, "orgs", "create", "--name", "CLI Corp", "--owner-email", "ops@cli.example")
    assert org["id"] in {o["id"] for o in (await nx(private, "orgs", "list"))["data"]}
    proj = await nx(private, "projects", "create", "--org", org["id"], "--name", "Batch",
                    "--monthly-budget-nanos", "1000000000")
    assert proj["monthly_budget_nanos"] == 10**9
    assert (await nx(private, "projects", "get", "--org", org["id"], proj["id"]))["name"] == "Batch"
    assert (await nx(private, "projects", "update", "--org", org["id"], proj["id"], "--archived",
                     "true"))["archived"]
    member = await nx(private, "members", "add", "--org", org["id"], "--email", "dev@cli.example", "--role",
                      "member")
    assert (await nx(private, "members", "update", "--org", org["id"], member["user_id"], "--role", "admin"))[
        "role"] == "admin"
    assert len((await nx(private, "members", "list", "--org", org["id"]))["data"]) == 2
    # another organization's project looks missing from here too
    assert private.boot is not None
    err = await nx(private, "projects", "get", "--org", private.boot.org_id, proj["id"], ok=False)
    assert "No project" in err
    # keys commands still work beside the new ones
    key = await nx(private, "keys", "create", "--org", org["id"], "--projects", proj["id"], "--models",
                   "local/*")
    assert key["secret"].startswith("nx_live_")
