"""What an open socket keeps of its handshake (wsq.ws_protocol): nothing of its headers in
websockets' objects, which live as long as the socket (docs/performance.md, "Scale")."""

from __future__ import annotations

import gc
import json
import secrets

import websockets
from websockets.datastructures import Headers
from wsq_harness import Gateway


async def test_an_open_socket_keeps_no_headers_of_its_handshake(gateway: Gateway) -> None:
    marker = f"x-wsq-test-{secrets.token_hex(4)}"
    async with websockets.connect(
        gateway.url, subprotocols=["wsq.v1"], additional_headers={marker: "v" * 200}
    ) as ws:
        await ws.send(json.dumps({"op": "open", "token": gateway.token()}))
        assert json.loads(await ws.recv())["op"] == "open"
        assert ws.request is not None
        # type(), not isinstance(): the heap may hold a weak proxy whose object is gone, and
        # isinstance() on it raises ReferenceError (seen in CI).
        held = [
            o
            for o in gc.get_objects()
            if type(o) is Headers and marker in o and o is not ws.request.headers
        ]
        # the client's own request has it; the server's side has let go of it
        assert held == []
