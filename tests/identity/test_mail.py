"""The mail interface: the outbox is written in the deciding transaction; with SMTP configured the
worker's job hands messages to the server and blanks their stored body (no tokens at rest); a
server that is down leaves the message pending with its error, for the next run."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from control_plane.identity.mail import deliver_pending, list_mail, queue_mail
from core.db import apply_schema, make_engine, write_tx
from core.settings import Settings, load_settings
from tests.harness import create_pg_database, drop_pg_database, free_port, use_postgres


class FakeSmtp:
    """Just enough of RFC 5321 for smtplib: greets, accepts one envelope at a time, keeps the data."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 fake ESMTP\r\n")
        while line := await reader.readline():
            verb = line.decode().strip().split(" ")[0].upper()
            if verb == "DATA":
                writer.write(b"354 go ahead\r\n")
                data = []
                while (chunk := await reader.readline()) not in (b".\r\n", b""):
                    data.append(chunk.decode())
                self.messages.append("".join(data))
                writer.write(b"250 queued\r\n")
            elif verb == "QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()


@pytest.fixture
async def db() -> AsyncIterator[tuple[AsyncEngine, dict[str, str]]]:
    tmp = tempfile.TemporaryDirectory(prefix="nx-mail-")
    env, pg_name = {"NX_DATA_DIR": tmp.name}, None
    try:
        if use_postgres():
            pg_name, env["DATABASE_URL"] = await create_pg_database()
        engine = make_engine(load_settings(env))
        try:
            await apply_schema(engine)
            yield engine, env
        finally:
            await engine.dispose()
    finally:
        if pg_name:
            await drop_pg_database(pg_name)
        tmp.cleanup()


def smtp_settings(env: dict[str, str], port: int) -> Settings:
    return load_settings({**env, "NX_SMTP_HOST": "127.0.0.1", "NX_SMTP_PORT": str(port), "NX_SMTP_STARTTLS": "false"})


async def test_smtp_delivery_and_outbox(db: tuple[AsyncEngine, dict[str, str]]) -> None:
    engine, env = db
    async with write_tx(engine) as conn:
        mail_id = await queue_mail(conn, "ada@example.com", "Verify your email", "the token is abc123\n")
    assert await deliver_pending(engine, load_settings(env)) == 0  # no SMTP: it stays for `nx mail`

    down = smtp_settings(env, free_port())
    assert await deliver_pending(engine, down) == 0
    async with engine.connect() as conn:
        row = (await conn.execute(text("SELECT sent_at, attempts, last_error FROM mail_outbox WHERE id = :i"),
                                  {"i": mail_id})).one()
    assert row[0] is None and row[1] == 1 and row[2]

    fake = FakeSmtp()
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        assert await deliver_pending(engine, smtp_settings(env, port)) == 1
    finally:
        server.close()
        await server.wait_closed()
    assert len(fake.messages) == 1
    assert "To: ada@example.com" in fake.messages[0] and "the token is abc123" in fake.messages[0]
    async with engine.connect() as conn:
        [stored] = await list_mail(conn, "ada@example.com")
    assert stored.sent_at is not None and stored.body == ""  # delivered: the token is not kept
