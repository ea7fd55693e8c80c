"""Checks of OpenAI's error shape, and a raw HTTP/1.1 client for requests httpx will not send
(a fragment in the path, bytes that are not UTF-8 in the request line)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from core.errors import ERRORS

__all__ = ["RawResponse", "assert_shape", "raw_request"]


def assert_shape(status: int, content_type: str, body: bytes, *, allow_5xx: bool = False) -> dict[str, Any] | None:
    """A 2xx/3xx passes; anything else must be OpenAI's error shape with a code from the one table
    (control_plane/errors.py) whose status it carries. Returns the error object, if any."""
    if not allow_5xx:
        assert status < 500, (status, body[:500])
    if status < 400:
        return None
    assert content_type.startswith("application/json"), (status, content_type, body[:200])
    doc = json.loads(body)
    assert set(doc) == {"error"}, doc
    err = doc["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"], err
    assert err["param"] is None or isinstance(err["param"], str), err
    spec = ERRORS.get(err["code"])
    assert spec is not None, f"code {err['code']!r} is not in control_plane/errors.py"
    assert (spec.status, spec.type) == (status, err["type"]), (status, err)
    return err  # type: ignore[no-any-return]


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    err = assert_shape(r.status_code, r.headers.get("content-type", ""), r.content)
    assert r.status_code == status and err is not None and err["code"] == code, (r.status_code, r.text[:500])
    return err


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


async def raw_request(port: int, head: bytes, body: bytes = b"", timeout: float = 10.0) -> RawResponse:
    """Send `head` (request line and headers, without the blank line) and `body` as they are."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.rstrip(b"\r\n") + b"\r\nconnection: close\r\ncontent-length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    top, _, rest = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        rest = _unchunk(rest)
    return RawResponse(int(lines[0].split()[1]), headers, rest)


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2:]
    return out
