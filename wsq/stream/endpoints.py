"""wsq.v1 over HTTP: ``POST /v1/stream`` opens a connection and streams what the server sends;
``POST /v1/stream/{id}`` carries what the client sends (docs/protocol.md, "HTTP transport").

The opening request's body is the client's first message (its ``open``, and what it pipelines
behind it); the response is ``text/event-stream``: a ``stream`` event with the connection's id
and secret, then one event per message of the server. Each later POST names the id in its path,
the secret in ``Wsq-Stream-Secret`` and its sequence number in ``Wsq-Seq``; its body is one
message. The connection itself is a ``wsq.gateway.Peer`` over a ``StreamCarrier``: the same
peer that serves a WebSocket.

A POST may land on any node (no sticky sessions): the stream listens on the broker's relay
(``wsq.broker.relay``) on a channel named from a hash of its id and secret, and a POST goes
there unless this node holds the stream. Nobody listening (a closed stream, an unknown id, a
wrong secret) is a 404 ``wsq:not-found``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import secrets
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from wsq.admission import SCOPE_KEY
from wsq.bridge.errors import error_response
from wsq.bridge.requests import read_body
from wsq.core.errors import (
    BrokerUnavailable,
    Forbidden,
    GoingAway,
    InvalidFrame,
    NotFound,
    WsqError,
)
from wsq.gateway import SUBPROTOCOL, Gateway, Peer
from wsq.stream.carrier import StreamCarrier

log = logging.getLogger("wsq.stream")

#: What a stream id looks like (``secrets.token_urlsafe(16)``); anything else is refused unread.
ID_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")
SECRET_RE = re.compile(r"[A-Za-z0-9_-]{32,128}")
#: The largest sequence number (what a JavaScript number holds exactly).
MAX_SEQ = 2**53 - 1
#: POSTs' bytes a stream may hold that its peer has not read yet, in ``max_frame_bytes``.
INBOX_FRAMES = 4
#: A POST for another node's stream larger than this asks the relay first whether anybody
#: listens (an empty payload, which a stream ignores): anyone may POST to a forged id and
#: secret, and 200 forged 1 MB POSTs sent Redis 191 MiB in a second; now a few bytes each.
PROBE_BYTES = 4096


def channel_of(stream_id: str, secret: str) -> str:
    """The relay channel of a stream: only who knows the secret can name it."""
    digest = hashlib.sha256(f"{stream_id}:{secret}".encode()).hexdigest()
    return f"wsq:stream:{digest[:40]}"


class Streams:
    """The HTTP streams this process holds (by relay channel), and their two endpoints."""

    def __init__(self, gateway: Gateway, is_draining: Callable[[], bool]) -> None:
        self.gateway = gateway
        self.node = gateway.node
        self._is_draining = is_draining
        self.held: dict[str, tuple[StreamCarrier, Peer]] = {}

    # -- POST /v1/stream ---------------------------------------------------------------------

    async def open(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            text = await self._opening_text(Request(scope, receive))
        except WsqError as exc:
            self.node.errors[exc.condition] += 1
            await error_response(exc)(scope, receive, send)
            return
        stream_id = secrets.token_urlsafe(16)
        secret = secrets.token_urlsafe(32)
        channel = channel_of(stream_id, secret)
        server = self.node.settings.server
        carrier = StreamCarrier(
            receive,
            send,
            text,
            {"id": stream_id, "secret": secret, "seq": 1},
            INBOX_FRAMES * server.max_frame_bytes,
        )
        # The peer sees a WebSocket that offered wsq.v1, with the request's headers (Origin).
        ws_scope = {
            "type": "websocket",
            "path": scope.get("path", ""),
            "headers": scope.get("headers", []),
            "client": scope.get("client"),
            "subprotocols": [SUBPROTOCOL],
            # Pending (wsq.admission) until the peer verifies the open (wsq.http_protocol).
            SCOPE_KEY: scope.get(SCOPE_KEY),
        }
        peer = Peer(self.gateway, ws_scope, carrier.receive, carrier.send)
        try:
            await self.node.broker.relay.listen(channel, lambda p: self._relayed(channel, p))
        except BrokerUnavailable as exc:
            await error_response(exc)(scope, receive, send)
            return
        self.held[channel] = (carrier, peer)
        watcher = asyncio.get_running_loop().create_task(carrier.watch_disconnect())
        try:
            await peer.run()
        finally:
            self.held.pop(channel, None)
            watcher.cancel()
            with contextlib.suppress(Exception):
                await self.node.broker.relay.forget(channel)
        if not carrier.started:
            # The peer refused before accepting: the page's origin is not allowed.
            refused = Forbidden("this page's origin may not connect")
            await error_response(refused)(scope, receive, send)

    async def _opening_text(self, request: Request) -> str:
        if self._is_draining():
            raise GoingAway("the node is shutting down; connect again")
        body = await read_body(request, self.node.settings.server.max_frame_bytes)
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidFrame("messages must be UTF-8 JSON text") from None

    # -- POST /v1/stream/{id} ----------------------------------------------------------------

    async def post(self, request: Request) -> Response:
        posts = self.node.stream_posts
        try:
            outcome = await self._post(request)
        except WsqError as exc:
            posts["unknown" if isinstance(exc, NotFound) else "refused"] += 1
            self.node.errors[exc.condition] += 1
            return error_response(exc)
        posts[outcome] += 1
        return Response(status_code=204)

    async def _post(self, request: Request) -> str:
        stream_id = request.path_params["id"]
        secret = request.headers.get("wsq-stream-secret", "")
        seq_text = request.headers.get("wsq-seq", "")
        if not ID_RE.fullmatch(stream_id) or not SECRET_RE.fullmatch(secret):
            raise NotFound("no such stream")
        if not seq_text.isascii() or not seq_text.isdigit() or len(seq_text) > 16:
            raise InvalidFrame("Wsq-Seq must be the POST's sequence number (1, 2, ...)")
        seq = int(seq_text)
        if not 1 <= seq <= MAX_SEQ:
            raise InvalidFrame("Wsq-Seq must be the POST's sequence number (1, 2, ...)")
        body = await read_body(request, self.node.settings.server.max_frame_bytes)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidFrame("messages must be UTF-8 JSON text") from None
        channel = channel_of(stream_id, secret)
        held = self.held.get(channel)
        if held is not None:
            self._take(held, seq, text)
            return "taken"
        payload = b"%d\n" % seq + body
        relay = self.node.broker.relay
        if len(payload) > PROBE_BYTES and not await relay.send(channel, b""):
            raise NotFound("no such stream (closed, unknown, or the secret is wrong)")
        if not await relay.send(channel, payload):
            raise NotFound("no such stream (closed, unknown, or the secret is wrong)")
        return "relayed"

    def _relayed(self, channel: str, payload: bytes) -> None:
        """A POST that another node took, for a stream of this one."""
        held = self.held.get(channel)
        head, _, body = payload.partition(b"\n")
        if held is None or not head.isdigit():
            return  # an empty payload too: a POST asking whether the stream is here
        with contextlib.suppress(WsqError, UnicodeDecodeError):
            self._take(held, int(head), body.decode("utf-8"))

    def _take(self, held: tuple[StreamCarrier, Peer], seq: int, text: str) -> None:
        carrier, peer = held
        replays = carrier.replays
        if carrier.offer(seq, text):
            if carrier.replays != replays:
                self.node.stream_posts["replayed"] += 1
            return
        error = carrier.violation
        if error is None:
            raise NotFound("the stream has ended")
        peer.refuse(error, reason="stream-refused")
        raise error


def routes(streams: Streams) -> list[Route]:
    """The stream's routes, relative to ``/v1``."""

    class Open:  # an ASGI app, so that Starlette hands it the raw request
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            await streams.open(scope, receive, send)

    return [
        Route("/stream", Open(), methods=["POST"]),
        Route("/stream/{id}", streams.post, methods=["POST"]),
    ]


__all__ = ["Streams", "channel_of", "routes"]
