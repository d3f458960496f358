"""wsq's log lines: token redaction for every record, and the JSON-lines format.

``RedactTokens`` (on every handler ``wsq serve`` configures, in either format) replaces anything
token-shaped in a record (a JWT: three base64url parts, the first ``eyJ``; what follows
``Bearer``) with ``[redacted]``, in its message, its arguments and its traceback: a token that
slips into a log line (an exception text, a client's header) never reaches the file.

``JsonFormatter`` (``[server] log_format = "json"``, ``wsq serve --log-format json``): one JSON
object per line with ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, and where
known ``conn`` (the socket's id in its process), ``tenant``, ``sub`` and ``condition``: given
by the caller (``extra=``) or, for ``conn``/``tenant``/``sub``, by the socket whose task logs
(``bind_connection``). Message bodies and secrets are never logged by wsq in either format.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

#: A JWT (header.payload.signature, the header a JSON object: ``eyJ``), or a Bearer credential.
TOKEN_RE = re.compile(
    r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*|(?<=Bearer )[A-Za-z0-9._~+/=-]{8,}",
    re.IGNORECASE,
)
REDACTED = "[redacted]"
#: The fields a JSON line carries from the record when present.
CONTEXT_FIELDS = ("conn", "tenant", "sub", "condition")

#: The socket whose task is running: (conn id, tenant, sub), set by the gateway.
_connection: contextvars.ContextVar[tuple[int, str, str] | None] = contextvars.ContextVar(
    "wsq_connection", default=None
)


def bind_connection(conn: int, tenant: str = "", sub: str = "") -> None:
    """Name the socket this task (and the tasks it starts) serves, for its log lines."""
    _connection.set((conn, tenant, sub))


def redact(text: str) -> str:
    return TOKEN_RE.sub(REDACTED, text)


class _Redacted:
    """An argument whose text holds a token: formats as that text redacted (``%s``, ``%r``)."""

    __slots__ = ("_repr", "_str")

    def __init__(self, arg: object) -> None:
        self._str = redact(str(arg))
        self._repr = redact(repr(arg))

    def __str__(self) -> str:
        return self._str

    def __repr__(self) -> str:
        return self._repr


def _redact_arg(arg: object) -> object:
    if isinstance(arg, str):
        return redact(arg)
    if isinstance(arg, (int, float)) or arg is None:
        return arg
    try:
        if TOKEN_RE.search(str(arg)) or TOKEN_RE.search(repr(arg)):
            return _Redacted(arg)  # a dict, an exception, ...: one that holds a token
    except Exception:  # an object that cannot say what it is: the record's formatter fails too
        pass
    return arg


class RedactTokens(logging.Filter):
    """Replaces token-shaped text in any record (message, arguments, traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(_redact_arg(a) for a in args)
        elif isinstance(args, dict):
            record.args = {k: _redact_arg(v) for k, v in args.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module's docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        bound = _connection.get()
        if bound is not None:
            conn, tenant, sub = bound
            line["conn"] = conn
            if tenant:
                line["tenant"] = tenant
            if sub:
                line["sub"] = sub
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None and value != "":
                line[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)
