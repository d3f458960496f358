"""WebSocket compression against a real ``wsq serve``: ``[server] ws_compression`` decides whether
a browser's offer of permessage-deflate is accepted (docs/performance.md).

The clients offer deflate exactly as Chromium does: ``permessage-deflate;
client_max_window_bits``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import websockets
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from wsq_harness import SECRET_ACME, Client, serve_config, tenants

from wsq.auth import mint_token

#: What Chromium sends in Sec-WebSocket-Extensions.
CHROMIUM_OFFER = "permessage-deflate; client_max_window_bits"


def config(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "wsq.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [server]
            {server}
            [tenants.acme]
            keys = [{{ kid = "k1", alg = "HS256", secret = "{SECRET_ACME}" }}]
            """
        )
    )
    return path


async def connect(port: int) -> websockets.ClientConnection:
    """A socket that offers permessage-deflate as Chromium does."""
    return await websockets.connect(
        f"ws://127.0.0.1:{port}/ws",
        subprotocols=["wsq.v1"],
        compression=None,
        extensions=[ClientPerMessageDeflateFactory(client_max_window_bits=True)],
        max_size=None,
    )


def token() -> str:
    acme = tenants()["acme"]
    return mint_token(acme, "alice", publish=(">",), subscribe=(">",), ttl_s=600)


# -- the setting ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "setting, answer",
    [
        ("off", None),
        ("deflate", "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"),
    ],
)
async def test_a_browsers_offer_is_accepted_or_declined_as_ws_compression_says(
    tmp_path: Path, setting: str, answer: str | None
) -> None:
    with serve_config(config(tmp_path, f'ws_compression = "{setting}"')) as served:
        ws = await connect(served.port)
        assert ws.request is not None and ws.response is not None
        assert ws.request.headers["Sec-WebSocket-Extensions"] == CHROMIUM_OFFER
        assert ws.response.headers.get("Sec-WebSocket-Extensions") == answer
        # Either way the socket speaks wsq.v1, compressed both ways or not at all.
        client = Client(ws)
        await client.open(token())
        await client.begin(1)
        await client.subscribe(1, 0, "news.x", credit=10)
        await client.sender(1, 1, "news.x")
        body = {"text": "hello " * 200}
        await client.send(
            {"op": "transfer", "ch": 1, "handle": 1, "delivery": 0, "body": body, "settled": True}
        )
        assert (await client.expect("transfer", handle=0))["body"] == body
        await client.close()
