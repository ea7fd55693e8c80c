"""JSON log lines on stderr, one object per line, joined to requests and traces.

Fields: `ts` (RFC 3339, UTC, milliseconds), `level`, `process`, `logger`, `message`, and when a
request is being served `request_id`, `organization`, `trace_id` and `span_id` (W3C hex, when
tracing is on); `exception` carries a traceback. Why the standard library and not structlog: every
module already logs through `logging`, and one formatter is all JSON lines need.

What a line may carry: never an API key, a secret, a prompt or an answer. The code logs none of
them; as a second line of defence every message is passed through `redact`, which masks anything
shaped like a platform key (`nx_live_...`, `nx_admin_...`) or a bearer credential. Content (prompts,
answers) is logged only through `content()`, which writes nothing unless NX_LOG_CONTENT is on.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
from typing import Any

from opentelemetry import trace

__all__ = ["bind", "content", "redact", "setup"]

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("nx_request_id", default="")
_organization: contextvars.ContextVar[str] = contextvars.ContextVar("nx_organization", default="")
_span: contextvars.ContextVar[trace.Span | None] = contextvars.ContextVar("nx_span", default=None)
_process = "nx"
_content = False
_SECRET = re.compile(r"(nx_(?:live|test|admin)_)[A-Za-z0-9_]+|((?i:bearer)\s+)\S+|(whsec_)\S+")


def bind(request_id: str, organization: str = "", span: trace.Span | None = None) -> None:
    """The request the current task serves; every log line it writes carries them (an ASGI request
    runs in its own task, so this does not leak into another request's lines). `span`: a span that
    is not the current one (the sidecar's check) whose trace the lines join."""
    _request_id.set(request_id)
    if organization:
        _organization.set(organization)
    _span.set(span)


def redact(text: str) -> str:
    return _SECRET.sub(lambda m: (m.group(1) or m.group(2) or m.group(3)) + "***", text)


def content(logger: logging.Logger, what: str, text: str) -> None:
    """Log request or answer content, only where the operator turned content logging on."""
    if _content:
        logger.info("%s: %s", what, text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "process": _process, "logger": record.name,
            "message": redact(record.getMessage()),
        }
        if request_id := _request_id.get():
            line["request_id"] = request_id
        if organization := _organization.get():
            line["organization"] = organization
        span = (_span.get() or trace.get_current_span()).get_span_context()
        if span.is_valid:
            line["trace_id"], line["span_id"] = f"{span.trace_id:032x}", f"{span.span_id:016x}"
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        request_id = _request_id.get()
        return redact(super().format(record)) + (f" request_id={request_id}" if request_id else "")


def setup(process: str, level: str, *, json_lines: bool = True, content: bool = False) -> None:
    """Replace the root handler: JSON lines (default) or the former plain text, both redacted."""
    global _process, _content
    _process, _content = process, content
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else
                         _TextFormatter(f"%(asctime)s {process} %(levelname)s %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Libraries' own debug output (a line per SQLite call, per HTTP connection) would bury the
    # platform's: they speak from warnings up whatever NX_LOG_LEVEL says.
    for noisy in ("aiosqlite", "asyncio", "httpx", "httpcore", "urllib3", "sqlalchemy", "uvicorn"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
