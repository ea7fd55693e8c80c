"""The adapter's backend client (proxy_plugins/adapter/http1.py through backends.py) against real
local servers: the provider simulator (its `[[sim ...]]` directives for stalls, cuts and slow
streams) and small scripted asyncio servers for wire-level cases (1xx, 204, EOF-delimited bodies,
idle connections the server closes, TLS)."""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from core.errors import ApiError
from core.snapshot import BackendRecord
from proxy_plugins.adapter import http1
from proxy_plugins.adapter.backends import Backends, SseEvent
from tests.inference.helpers import marker, wait_for_record
from tests.simulator.server import SimulatorProcess

KEY_ENV = "NX_TEST_BACKEND_CLIENT_KEY"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    process = SimulatorProcess().start()
    os.environ[KEY_ENV] = process.api_key
    try:
        yield process
    finally:
        process.stop()
        os.environ.pop(KEY_ENV, None)


def record(url: str, timeout_ms: int = 5000, connect_timeout_ms: int = 1000) -> BackendRecord:
    return BackendRecord(id="t", protocol="openai", base_url=url, api_key_env=KEY_ENV, timeout_ms=timeout_ms,
                         connect_timeout_ms=connect_timeout_ms)


def chat(text: str, stream: bool = False) -> bytes:
    return msgspec.json.encode({"model": "sim-chat", "stream": stream, "messages": [{"role": "user", "content": text}]})


class Scripted:
    """An HTTP/1.1 server on 127.0.0.1 answering each request with the next scripted reply (raw
    bytes); `close_after` closes the connection that many seconds after the reply (None: keep it)."""

    def __init__(self, replies: list[tuple[bytes, float | None]]) -> None:
        self.replies = list(replies)
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                self.requests.append(head + await reader.readexactly(length))
                reply, close_after = self.replies.pop(0)
                writer.write(reply)
                await writer.drain()
                if close_after is not None:
                    await asyncio.sleep(close_after)
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def ok(body: bytes = b'{"ok":true}', extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + extra + \
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body


async def events_of(backends: Backends, backend: BackendRecord, payload: bytes) -> list[SseEvent]:
    async with backends.stream(backend, "chat/completions", payload) as events:
        return [event async for event in events]


@pytest.fixture
async def backends() -> AsyncIterator[Backends]:
    b = Backends()
    try:
        yield b
    finally:
        await b.aclose()


async def test_post_and_stream_reuse_one_connection(sim: SimulatorProcess, backends: Backends) -> None:
    backend = record(sim.url + "/v1")
    reply = await backends.post(backend, "chat/completions", chat("hello"))
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    assert msgspec.json.decode(reply.body)["object"] == "chat.completion"
    events = await events_of(backends, backend, chat("[[sim chunks=4]]", stream=True))
    assert events[-1].data == b"[DONE]" and len(events) >= 5
    pool = backends.pool(backend)
    assert pool._open == 1 and len(pool._idle) == 1  # both calls on one kept-alive connection


async def test_stalled_first_byte_is_a_timeout(sim: SimulatorProcess, backends: Backends) -> None:
    backend = record(sim.url + "/v1", timeout_ms=300)
    with pytest.raises(ApiError) as caught:
        await backends.post(backend, "chat/completions", chat("[[sim first_byte_ms=1500]]"))
    assert caught.value.code == "upstream_timeout"
    with pytest.raises(ApiError) as caught:
        await events_of(backends, backend, chat("[[sim first_byte_ms=1500]]", stream=True))
    assert caught.value.code == "upstream_timeout"
    assert not backends.pool(backend)._idle  # a timed-out connection is never reused


async def test_stall_between_chunks_is_a_timeout(sim: SimulatorProcess, backends: Backends) -> None:
    backend = record(sim.url + "/v1", timeout_ms=300)
    got: list[SseEvent] = []
    with pytest.raises(ApiError) as caught:
        async with backends.stream(backend, "chat/completions", chat("[[sim chunk_ms=1500]]", stream=True)) as events:
            async for event in events:
                got.append(event)
    assert caught.value.code == "upstream_timeout" and len(got) == 1  # the first chunk came at once


async def test_cut_chunked_stream_is_an_upstream_error(sim: SimulatorProcess, backends: Backends) -> None:
    backend = record(sim.url + "/v1")
    got: list[SseEvent] = []
    with pytest.raises(ApiError) as caught:
        async with backends.stream(backend, "chat/completions", chat("[[sim cut_after=2]]", stream=True)) as events:
            async for event in events:
                got.append(event)
    assert caught.value.code == "upstream_error" and len(got) == 2
    assert not backends.pool(backend)._idle


async def test_cancellation_mid_stream_closes_the_upstream_connection(sim: SimulatorProcess,
                                                                       backends: Backends) -> None:
    backend = record(sim.url + "/v1")
    needle = marker()
    first = asyncio.Event()

    async def consume() -> None:
        payload = chat(f"{needle} [[sim chunks=20 chunk_ms=200]]", stream=True)
        async with backends.stream(backend, "chat/completions", payload) as events:
            async for _ in events:
                first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pool = backends.pool(backend)
    assert not pool._idle
    await asyncio.sleep(0)  # the event loop delivers connection_lost
    assert pool._open == 0
    seen = await wait_for_record(sim, needle, "disconnected")  # the simulator saw the socket close
    assert not seen["completed"]
    reply = await backends.post(backend, "chat/completions", chat("after"))  # a fresh connection works
    assert reply.status == 200


async def test_error_status_is_mapped_and_the_key_scrubbed(sim: SimulatorProcess, backends: Backends,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    backend = record(sim.url + "/v1")
    with pytest.raises(ApiError) as caught:
        await backends.post(backend, "chat/completions", chat("[[sim status=429 retry_after=7 echo_key=true]]"))
    assert caught.value.code == "rate_limit_exceeded" and caught.value.headers.get("retry-after") == "7"
    assert sim.api_key not in str(caught.value) and "***" in str(caught.value)
    with pytest.raises(ApiError) as caught:
        await events_of(backends, backend, chat("[[sim status=503 echo_key=true]]", stream=True))
    assert caught.value.code == "upstream_error" and sim.api_key not in str(caught.value)
    assert sim.api_key not in caplog.text


async def test_unreachable_backend_is_unavailable(backends: Backends) -> None:
    async with Scripted([]) as server:
        url = server.url
    await asyncio.sleep(0.05)  # the port is closed now
    for call in (backends.post(record(url), "chat/completions", chat("x")),
                 events_of(backends, record(url), chat("x", stream=True))):
        with pytest.raises(ApiError) as caught:
            await call
        assert caught.value.code == "upstream_unavailable"


async def test_idle_connection_closed_by_the_server_is_replaced(backends: Backends) -> None:
    async with Scripted([(ok(), 0.05), (ok(b'{"n":2}'), None)]) as server:
        backend = record(server.url)
        assert (await backends.post(backend, "chat/completions", chat("1"))).body == b'{"ok":true}'
        await asyncio.sleep(0.3)  # the server closed the idle keep-alive connection meanwhile
        assert (await backends.post(backend, "chat/completions", chat("2"))).body == b'{"n":2}'
        assert server.connections == 2 and len(server.requests) == 2  # nothing sent twice


async def test_connection_close_chunked_interim_and_no_content(backends: Backends) -> None:
    chunked = (b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n"
               b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-a: 1\r\nX-A: 2\r\n\r\n"
               b"4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n")
    no_content = b"HTTP/1.1 204 No Content\r\n\r\n"
    async with Scripted([(chunked, None), (no_content, None), (ok(extra=b"connection: close\r\n"), 0),
                         (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"eof\":1}", 0)]) as server:
        backend = record(server.url)
        reply = await backends.post(backend, "chat/completions", chat("1"))
        assert reply.body == b'{"a":1}' and reply.headers["x-a"] == "1, 2" and "link" not in reply.headers
        reply = await backends.post(backend, "chat/completions", chat("2"))
        assert (reply.status, reply.body) == (204, b"")
        assert (await backends.post(backend, "chat/completions", chat("3"))).body == b'{"ok":true}'
        assert server.connections == 1  # chunked and 204 answers kept the connection alive
        reply = await backends.post(backend, "chat/completions", chat("4"))  # body until the server closes
        assert reply.body == b'{"eof":1}' and server.connections == 2
        head = server.requests[0].split(b"\r\n\r\n")[0].decode().lower()
        assert head.startswith("post /v1/chat/completions http/1.1") and "authorization: bearer" in head


async def test_large_bodies_under_back_pressure(backends: Backends) -> None:
    big = b"x" * (3 * 1024 * 1024)
    frames = b"".join(b"data: %d%s\n\n" % (n, b"y" * 60_000) for n in range(40))
    stream = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
              + b"%x\r\n" % len(frames) + frames + b"\r\n0\r\n\r\n")
    async with Scripted([(ok(big), None), (stream, None), (ok(), None)]) as server:
        backend = record(server.url, timeout_ms=2000)
        assert (await backends.post(backend, "chat/completions", chat("1"))).body == big
        got = []
        async with backends.stream(backend, "chat/completions", chat("2", stream=True)) as events:
            async for event in events:
                got.append(event)
                await asyncio.sleep(0.005)  # a slow reader: the socket is paused and resumed
        assert [e.data.rstrip(b"y") for e in got] == [str(n).encode() for n in range(40)]
        assert (await backends.post(backend, "chat/completions", chat("3"))).body == b'{"ok":true}'
        assert server.connections == 1


async def test_body_cut_before_its_length_is_an_upstream_error(backends: Backends) -> None:
    cut = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"partial"
    async with Scripted([(cut, 0)]) as server:
        with pytest.raises(ApiError) as caught:
            await backends.post(record(server.url), "chat/completions", chat("x"))
        assert caught.value.code == "upstream_error"


async def test_busy_pool_waits_then_times_out() -> None:
    async with Scripted([(ok(), None), (ok(), None)]) as server:
        pool = http1.Pool(server.url, connect_timeout=0.2, read_timeout=1, max_connections=1)
        held = await pool.request("POST", "x", b"{}")
        with pytest.raises(http1.PoolTimeout):
            await pool.request("POST", "x", b"{}")
        waiting = asyncio.create_task(pool.request("POST", "x", b"{}"))
        await asyncio.sleep(0.05)
        assert await held.read() == b'{"ok":true}'
        held.close()  # back to the pool: the waiting request takes it
        second = await waiting
        assert await second.read() == b'{"ok":true}'
        second.close()
        assert server.connections == 1
        await pool.aclose()


def _tls_files(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_https_backend() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = _tls_files(Path(tmp))
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(cert, key)
        client_ctx = ssl.create_default_context(cafile=str(cert))
        async with Scripted([(ok(b'{"tls":1}'), None), (ok(b'{"tls":2}'), None)]) as plain:
            assert plain.server is not None
            plain.server.close()
            tls = await asyncio.start_server(plain._serve, "127.0.0.1", 0, ssl=server_ctx)
            port = tls.sockets[0].getsockname()[1]
            try:
                pool = http1.Pool(f"https://localhost:{port}/v1", connect_timeout=2, read_timeout=2,
                                  ssl_context=client_ctx)
                for n in (1, 2):
                    reply = await pool.request("POST", "chat/completions", b"{}")
                    assert await reply.read() == b'{"tls":%d}' % n
                    reply.close()
                assert plain.connections == 1
                await pool.aclose()
                # The default context does not trust this self-signed certificate: unreachable.
                untrusted = http1.Pool(f"https://localhost:{port}/v1", connect_timeout=2, read_timeout=2)
                with pytest.raises(http1.ConnectError):
                    await untrusted.request("POST", "chat/completions", b"{}")
            finally:
                tls.close()


async def test_credentials_not_in_transport_errors(sim: SimulatorProcess, backends: Backends,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    backend = record(sim.url + "/v1", timeout_ms=200)
    with pytest.raises(ApiError):
        await backends.post(backend, "chat/completions", chat("[[sim first_byte_ms=800]]"))
    with pytest.raises(ApiError):
        await events_of(backends, record(sim.url + "/v1"), chat("[[sim cut_after=1]]", stream=True))
    assert sim.api_key not in caplog.text
