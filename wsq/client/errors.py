"""The client's one exception: every failure reaches the user as a ``ClientError`` with a
``condition``, either the gateway's own (``wsq:forbidden``, ...) or the client's
(``wsq-client:closed``, ...).

Not a subclass of ``wsq.core.errors.WsqError``: there the condition is a property of the class
(the server raises and maps); here it is data that arrived on the wire, one per instance.
"""

from __future__ import annotations

from typing import Literal

Scope = Literal["client", "connection", "session", "link", "message", "handler"]

#: The client's own conditions (never on the wire).
CLOSED = "wsq-client:closed"
TOKEN = "wsq-client:token"
SOCKET = "wsq-client:socket"
HANDLER = "wsq-client:handler"
HTTP = "wsq-client:http"


class ClientError(Exception):
    """A failure with its ``condition``, the ``scope`` it ended (a connection, a link, one
    message, ...), and ``fatal`` when the client gave up and closed for good."""

    def __init__(
        self,
        condition: str,
        description: str = "",
        *,
        scope: Scope = "client",
        fatal: bool = False,
        address: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(f"{condition}: {description}" if description else condition)
        self.condition = condition
        self.description = description
        self.scope: Scope = scope
        self.fatal = fatal
        self.address = address
        #: The HTTP status, for the errors of ``HttpPublisher``.
        self.status = status
