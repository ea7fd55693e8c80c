"""The one mail interface: every message is written to `mail_outbox` in the transaction that
decided to send it (a rolled-back sign-up sends nothing; a crash after commit loses nothing).

Delivery depends on the settings: with `NX_SMTP_HOST` the worker hands pending messages to that
SMTP server (`deliver_pending`) and then blanks their body, so tokens do not stay at rest; without it
(the embedded default) they stay in the outbox and `nx mail` lists and prints them, so the whole
account flow works offline.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.db import now_ms, write_tx
from core.ids import new_id
from core.rows import columns, row_as
from core.settings import Settings

__all__ = ["Mail", "deliver_pending", "get_mail", "list_mail", "queue_mail"]

MAX_ATTEMPTS = 10


class Mail(msgspec.Struct, kw_only=True):
    id: str
    to: str
    subject: str
    body: str
    created_at: int
    sent_at: int | None


async def queue_mail(conn: AsyncConnection, to: str, subject: str, body: str) -> str:
    mail_id = new_id("mail")
    await conn.execute(text("INSERT INTO mail_outbox (id, to_address, subject, body, created_at)"
                            " VALUES (:id, :to, :s, :b, :now)"),
                       {"id": mail_id, "to": to, "s": subject, "b": body, "now": now_ms()})
    return mail_id


def _mail(r: Sequence[object]) -> Mail:
    return row_as(Mail, r)


_COLUMNS = f"SELECT {columns(Mail, to='to_address')} FROM mail_outbox"


async def list_mail(conn: AsyncConnection, to: str | None = None, limit: int = 50) -> list[Mail]:
    """The newest messages first, optionally only those to one address."""
    where, args = ("WHERE to_address = :to", {"to": to.strip().lower()}) if to else ("", {})
    rows = await conn.execute(text(f"{_COLUMNS} {where} ORDER BY created_at DESC, id DESC LIMIT :n"),
                              {**args, "n": limit})
    return [_mail(r) for r in rows]


async def get_mail(conn: AsyncConnection, mail_id: str) -> Mail | None:
    row = (await conn.execute(text(f"{_COLUMNS} WHERE id = :id"), {"id": mail_id})).first()
    return None if row is None else _mail(row)


def _send(settings: Settings, mail: Mail) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = settings.mail_from, mail.to, mail.subject
    msg.set_content(mail.body)
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=30) as smtp:
        if settings.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context())
        if settings.smtp_username:
            smtp.login(settings.smtp_username, settings.smtp_password)
        smtp.send_message(msg)


async def deliver_pending(engine: AsyncEngine, settings: Settings, limit: int = 20) -> int:
    """Send pending messages over SMTP (a worker job; nothing without `NX_SMTP_HOST`)."""
    if not settings.smtp_host:
        return 0
    async with engine.connect() as conn:
        rows = await conn.execute(text(f"{_COLUMNS} WHERE sent_at IS NULL AND attempts < :max"
                                       " ORDER BY created_at LIMIT :n"), {"max": MAX_ATTEMPTS, "n": limit})
        pending = [_mail(r) for r in rows]
    sent = 0
    for mail in pending:
        try:
            await asyncio.to_thread(_send, settings, mail)
            error = None
        except (OSError, smtplib.SMTPException) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        async with write_tx(engine) as conn:
            if error is None:
                await conn.execute(text("UPDATE mail_outbox SET sent_at = :now, body = '', attempts = attempts + 1"
                                        " WHERE id = :id"), {"now": now_ms(), "id": mail.id})
                sent += 1
            else:
                await conn.execute(text("UPDATE mail_outbox SET attempts = attempts + 1, last_error = :e"
                                        " WHERE id = :id"), {"e": error, "id": mail.id})
    return sent
