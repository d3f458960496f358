"""The token: a string, or a callable (plain or async) asked at every connect, before the token
expires (a ``refresh`` on the live socket, which keeps the socket and its links), and once more
after the gateway refused one. Which refusals end the client is decided here; reconnecting is
``client.py``'s business."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from .errors import TOKEN, ClientError

if TYPE_CHECKING:
    from .client import Client
    from .connection import Connection

TokenSource = str | Callable[[], str | Awaitable[str]]

#: When the callable has nothing newer yet, ask it again after this long (s).
ASK_AGAIN_S = 1.0


class Token:
    def __init__(self, client: Client, source: TokenSource, refresh_before: float) -> None:
        if not callable(source) and not (isinstance(source, str) and source):
            raise TypeError("token: a token string or a callable answering one is required")
        self.client = client
        self.source = source
        self.refresh_before = refresh_before
        self.refused: str | None = None  # the token refused last, when another was asked for
        self.failures = 0  # refusals since the last open

    @property
    def refreshable(self) -> bool:
        return callable(self.source)

    async def get(self) -> str:
        """The token to send now, never empty."""
        if isinstance(self.source, str):
            return self.source
        token = self.source()
        if inspect.isawaitable(token):
            token = await token
        if not isinstance(token, str) or not token:
            raise TypeError("the token callable answered no token")
        return token

    def is_refused(self, token: str) -> bool:
        """Whether ``token`` is the one refused last time (the callable had nothing newer)."""
        return self.refused is not None and token == self.refused

    def retry_after_refusal(self, conn: Connection) -> bool:
        """The gateway refused ``conn``'s token: whether to ask the callable once more."""
        self.failures += 1
        if not self.refreshable or self.failures >= 2:
            return False
        self.refused = conn.token
        return True

    def accepted(self) -> None:
        self.failures = 0
        self.refused = None

    def schedule(self, conn: Connection) -> None:
        """Refresh ``conn``'s token ``refresh_before`` s before it expires (at most a third of
        its remaining life, for short-lived tokens)."""
        if conn.refresh_task is not None:
            conn.refresh_task.cancel()
            conn.refresh_task = None
        exp = conn.info.exp if conn.info is not None else None
        if not self.refreshable or not exp:
            return
        remaining = exp - time.time()
        margin = min(self.refresh_before, max(0.0, remaining) / 3)
        delay = max(1.0, remaining - margin)
        conn.refresh_task = asyncio.create_task(self._refresh(conn, delay))

    async def _refresh(self, conn: Connection, delay: float) -> None:
        await asyncio.sleep(delay)
        client = self.client
        while client._conn is conn and conn.usable:
            try:
                token = await self.get()
            except Exception as exc:
                client._emit("error", ClientError(TOKEN, repr(exc)))
                token = conn.token
            if client._conn is not conn or not conn.usable:
                return
            if token != conn.token:
                conn.token = token
                conn.send({"op": "refresh", "token": token})
                return
            await asyncio.sleep(ASK_AGAIN_S)  # nothing newer yet
