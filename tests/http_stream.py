"""A test client of wsq.v1 over HTTP (docs/protocol.md, "HTTP transport"): the stream's events
read from a streaming POST with httpx, messages sent by numbered POSTs. Not the Python client:
a thin probe whose every step a test can bend (wrong secrets, replays, gaps)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx


class HttpStream:
    """One connection: ``recv`` the server's frames, ``send`` messages by POST."""

    def __init__(self, base: str, http: httpx.AsyncClient, response: httpx.Response) -> None:
        self.base = base
        self.http = http
        self.response = response
        self._lines = response.aiter_lines()
        self.id = ""
        self.secret = ""
        self.seq = 0
        self._frames: list[Any] = []
        self.ended = False

    async def _event(self) -> tuple[str, str] | None:
        """The next server-sent event (name, data), or None at the end of the stream."""
        name, data = "message", ""
        async for line in self._lines:
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and data:
                return name, data
        self.ended = True
        return None

    async def hello(self) -> None:
        got = await self._event()
        assert got is not None and got[0] == "stream", got
        hello = json.loads(got[1])
        self.id, self.secret = hello["id"], hello["secret"]

    async def _fill(self) -> bool:
        """Read one more message's frames; False at the end of the stream."""
        got = await self._event()
        if got is None:
            return False
        message = json.loads(got[1])
        self._frames.extend(message if isinstance(message, list) else [message])
        return True

    async def recv(self, timeout: float = 10.0) -> Any:
        """The next frame (batches split; heartbeats skipped), or None at the end."""
        async with asyncio.timeout(timeout):
            while not self._frames:
                if not await self._fill():
                    return None
            return self._frames.pop(0)

    async def until(self, op: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next frame with this op; frames before it are kept for later."""
        async with asyncio.timeout(timeout):
            i = 0
            while True:
                while i < len(self._frames):
                    if self._frames[i]["op"] == op:
                        return dict(self._frames.pop(i))
                    i += 1
                assert await self._fill(), f"the stream ended before a {op}"

    async def rest(self, timeout: float = 10.0) -> list[Any]:
        """Every frame left until the response ends (it must end within ``timeout``)."""
        async with asyncio.timeout(timeout):
            while await self._fill():
                pass
        frames, self._frames = self._frames, []
        return frames

    async def post(
        self, message: Any, *, seq: int | None = None, secret: str | None = None,
        stream_id: str | None = None, base: str | None = None,
    ) -> httpx.Response:  # fmt: skip
        """POST one message (a frame or a batch); the next sequence number unless ``seq``."""
        if seq is None:
            self.seq += 1
            seq = self.seq
        body = message if isinstance(message, bytes) else json.dumps(message).encode()
        return await self.http.post(
            f"{base or self.base}/v1/stream/{stream_id or self.id}",
            content=body,
            headers={"Wsq-Stream-Secret": secret or self.secret, "Wsq-Seq": str(seq)},
        )

    async def send(self, message: Any, base: str | None = None) -> None:
        answer = await self.post(message, base=base)
        assert answer.status_code == 204, answer.text


@contextlib.asynccontextmanager
async def http_stream(
    base: str, first: Any, *, headers: dict[str, str] | None = None
) -> AsyncIterator[HttpStream]:
    """A stream opened at ``base`` with ``first`` (the open frame, or a batch starting with it)
    as the opening POST's body; its hello read."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None)) as http:
        body = first if isinstance(first, bytes) else json.dumps(first).encode()
        async with http.stream(
            "POST", f"{base}/v1/stream", content=body, headers=headers or {}
        ) as response:
            stream = HttpStream(base, http, response)
            if response.status_code == 200:
                await stream.hello()
            yield stream


def open_frame(token: str, idle: int = 30_000) -> dict[str, Any]:
    return {"op": "open", "token": token, "idle": idle, "client": "tests/http"}
