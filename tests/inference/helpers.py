"""Small helpers shared by the inference tests."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx

from tests.simulator.server import SimulatorProcess

__all__ = ["META", "marker", "chat_body", "read_sse", "wait_for_record", "assert_error"]

META = ("x-request-id", "x-model", "x-input-tokens", "x-output-tokens", "x-cache-status", "x-wallet-debit")


def marker() -> str:
    return f"m-{uuid.uuid4().hex[:12]}"


def chat_body(text: str, model: str = "sim-chat", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


async def read_sse(resp: httpx.Response) -> tuple[list[Any], list[str], bool]:
    """(decoded data events, comment lines, whether `data: [DONE]` came)."""
    events: list[Any] = []
    comments: list[str] = []
    done = False
    async for line in resp.aiter_lines():
        if line.startswith(":"):
            comments.append(line)
        elif line == "data: [DONE]":
            done = True
        elif line.startswith("data: "):
            events.append(json.loads(line[6:]))
    return events, comments, done


def final_metadata(comments: list[str]) -> dict[str, str]:
    [line] = [c for c in comments if c.startswith(": x-nx ")]
    meta: dict[str, str] = json.loads(line[len(": x-nx "):])
    return meta


async def wait_for_record(sim: SimulatorProcess, needle: str, key: str, attempts: int = 100) -> dict[str, Any]:
    """The simulator's record of the request containing `needle`, once `record[key]` is true."""
    for _ in range(attempts):
        found = sim.requests(needle)
        if found and found[0].get(key):
            return found[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"the simulator never recorded {key} for {needle}: {sim.requests(needle)}")


def assert_error(resp: httpx.Response, status: int, code: str, param: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    error: dict[str, Any] = resp.json()["error"]
    assert error["code"] == code, error
    assert set(error) == {"message", "type", "param", "code"}
    if param is not None:
        assert error["param"] == param, error
    for name in META:
        assert resp.headers.get(name), f"{name} missing on a {status}"
    return error
