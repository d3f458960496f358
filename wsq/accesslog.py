"""uvicorn's request lines without query strings.

uvicorn logs each HTTP request (``uvicorn.access``) and each WebSocket handshake
(``uvicorn.error``: ``"WebSocket /ws?..." [accepted]``, ``403``) with the request's path and
query string. wsq reads no credential from a URL, but a client may put one there anyway
(``/ws?token=...``, ``?access_token=``): it would end up in every log file. ``wsq serve`` gives
uvicorn a logging configuration (``log_config``) whose handlers drop the query string from every
request target they print: ``/ws?token=abc`` is logged as ``/ws?…``.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from uvicorn.config import LOGGING_CONFIG

#: What stands in the log for a query string that was there.
QUERY_MARK = "?…"


def without_query(target: str) -> str:
    """``target`` (a request path as uvicorn logs it) without its query string."""
    path, sep, _ = target.partition("?")
    return path + QUERY_MARK if sep else target


class NoQueryStrings(logging.Filter):
    """Drops the query string from a record's arguments that are request targets (a string
    starting with ``/``), as uvicorn passes them to its request lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(_is_target(arg) for arg in args):
            record.args = tuple(
                without_query(a) if isinstance(a, str) and _is_target(a) else a for a in args
            )
        return True


def _is_target(arg: object) -> bool:
    return isinstance(arg, str) and arg.startswith("/") and "?" in arg


#: What uvicorn (and websockets, with uvicorn's logger) says of each WebSocket: its handshake's
#: outcome (``"WebSocket /ws" [accepted]``, ``403``, ``503``...) and its opening and closing.
_PER_SOCKET_MESSAGES = frozenset({"connection open", "connection closed"})
_HANDSHAKE_PREFIX = '%s - "WebSocket %s"'


class DebugUnlessAccessLog(logging.Filter):
    """``[server] access_log = false`` (the default): uvicorn's request lines (``uvicorn.access``,
    ``every_info``) and its lines about each WebSocket (on ``uvicorn.error``) are debug lines.
    uvicorn logs them at INFO, so this filter, on those loggers, drops them unless the logger is
    at DEBUG (``--log-level debug``), where it shows them as DEBUG."""

    def __init__(self, every_info: bool = False) -> None:
        super().__init__()
        self.every_info = every_info

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg
        if record.levelno != logging.INFO or not isinstance(msg, str):
            return True
        per_socket = msg in _PER_SOCKET_MESSAGES or msg.startswith(_HANDSHAKE_PREFIX)
        if not (self.every_info or per_socket):
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def log_config(log_format: str = "text", *, access_log: bool = False) -> dict[str, Any]:
    """uvicorn's own logging configuration, its handlers filtered by ``NoQueryStrings`` and
    ``wsq.logs.RedactTokens``; with ``log_format`` "json", every line a JSON object; without
    ``access_log``, uvicorn's request lines and its lines about each WebSocket are debug lines
    (``DebugUnlessAccessLog``)."""
    config = copy.deepcopy(LOGGING_CONFIG)
    filters = config.setdefault("filters", {})
    filters["no_query_strings"] = {"()": f"{__name__}.NoQueryStrings"}
    filters["redact_tokens"] = {"()": "wsq.logs.RedactTokens"}
    if not access_log:
        demote = f"{__name__}.DebugUnlessAccessLog"
        filters["per_socket_lines"] = {"()": demote}
        filters["request_lines"] = {"()": demote, "every_info": True}
        config["loggers"]["uvicorn.error"].setdefault("filters", []).append("per_socket_lines")
        config["loggers"]["uvicorn.access"].setdefault("filters", []).append("request_lines")
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).extend(["no_query_strings", "redact_tokens"])
    if log_format == "json":
        for name in config["formatters"]:
            config["formatters"][name] = {"()": "wsq.logs.JsonFormatter"}
    return config
