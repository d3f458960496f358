"""Rules of the contract defined once: WebSocket and HTTP, memory and Redis, answer alike.

Two of them had drifted apart while each front end kept its own copy:
- a position: ``"from":"99999999999999999999-0"`` was taken by the memory broker, while on
  Redis it raised a raw error that closed the whole connection with ``wsq:internal-error``;
- message props: a ``ttl`` of ``5000.0`` was stored over HTTP and refused over WebSocket.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from wsq_harness import Gateway, Publisher

#: Positions and whether the contract takes them: ``<ms>-<seq>``, each part 1..19 digits.
POSITIONS = [
    ("0-0", True),
    ("1732200000000-5", True),
    ("9999999999999999999-9999999999999999999", True),
    ("99999999999999999999-0", False),  # beyond 64 bits: Redis refuses it
    ("18446744073709551615-0", False),  # 20 digits
    ("1-", False),
    ("-1", False),
    ("1-2-3", False),
    ("+1-0", False),
    ("\uff11-0", False),  # a non-ASCII digit (FULLWIDTH DIGIT ONE)
]


@pytest.fixture
def gateway(gateway_on_each_broker: Gateway) -> Gateway:
    """Every test here runs on both brokers."""
    return gateway_on_each_broker


async def test_a_position_is_taken_or_refused_alike_by_websocket_and_http(
    gateway: Gateway,
) -> None:
    client = await gateway.client()
    await client.begin(1)
    headers = {"Authorization": f"Bearer {gateway.token()}"}
    async with httpx.AsyncClient(base_url=gateway.http, headers=headers) as http:
        for handle, (position, valid) in enumerate(POSITIONS):
            await client.send(
                {
                    "op": "attach",
                    "ch": 1,
                    "handle": handle,
                    "role": "receiver",
                    "address": "rules.positions",
                    "from": position,
                }
            )
            if valid:
                answer = await client.expect("attach", ch=1, handle=handle)
                assert answer["from"] == position
            else:
                # A link error: the session and the connection go on.
                detach = await client.expect("detach", ch=1, handle=handle)
                assert detach["error"]["condition"] == "wsq:invalid-frame", (position, detach)
                await client.send({"op": "detach", "ch": 1, "handle": handle})
            got = await http.get(
                "/v1/addresses/rules.positions/messages", params={"after": position}
            )
            assert got.status_code == (200 if valid else 400), (position, got.text)
    await client.begin(2)  # the connection is still up
    await client.close()


async def _publish_ws(gateway: Gateway, props: dict[str, Any]) -> dict[str, Any]:
    client = await gateway.sender("rules.props")
    await client.send(
        {"op": "transfer", "ch": 1, "handle": 0, "delivery": 0, "body": "x", "props": props}
    )
    answer = await client.expect("disposition", ch=1)
    await client.close()
    return answer


async def test_message_props_are_judged_alike_by_websocket_and_http(gateway: Gateway) -> None:
    cases: list[tuple[dict[str, Any], bool]] = [
        ({"ttl": 5000}, True),
        ({"ttl": 5000.0}, True),  # an integer, as JSON Schema counts them
        ({"ttl": 5000.5}, False),
        ({"ttl": 0}, False),
        ({"ttl": True}, False),
        ({"subject": "a.b"}, True),
        ({"subject": "a.*"}, False),
        ({"message_id": "x" * 1024}, True),
        ({"message_id": "x" * 1025}, False),
        ({"content_type": 7}, False),
        ({"headers": {"k": "v"}}, True),
        ({"headers": []}, False),
    ]
    reader = await gateway.subscriber("rules.props", sub="reader", credit=100)
    headers = {"Authorization": f"Bearer {gateway.token()}"}
    async with httpx.AsyncClient(base_url=gateway.http, headers=headers) as http:
        for props, valid in cases:
            ws = await _publish_ws(gateway, props)
            got = await http.post("/v1/addresses/rules.props/messages", json={"body": "x", **props})
            assert (ws["outcome"] == "accepted") == valid, (props, ws)
            # 200: a duplicate by message_id of the WebSocket publish just before.
            assert (got.status_code in (200, 201)) == valid, (props, got.text)
            if not valid:
                # The same words, whichever way the message came.
                ws_text = ws["error"]["description"].replace("props.", "")
                http_text = got.json()["error"]["description"].removeprefix("the message: ")
                assert ws_text == http_text, (props, ws_text, http_text)
            if valid and "ttl" in props:
                for _ in range(2):
                    t = await reader.expect("transfer", ch=1)
                    assert t["props"]["expires"] - t["props"]["ts"] == 5000, t
    await reader.close()


async def test_a_publisher_of_positions_past_64_bits_never_closes_the_connection(
    gateway: Gateway,
) -> None:
    # The same position, now as a resume of a move-less copy link after messages exist.
    publisher = Publisher(await gateway.client(sub="pub"))
    await publisher.publish("rules.resume", 1, 2)
    client = await gateway.client()
    await client.begin(1)
    await client.send(
        {
            "op": "attach",
            "ch": 1,
            "handle": 0,
            "role": "receiver",
            "address": "rules.resume",
            "from": "99999999999999999999-0",
        }
    )
    detach = await client.expect("detach", ch=1, handle=0)
    assert detach["error"]["condition"] == "wsq:invalid-frame"
    await client.nothing("close", wait=0.2)
    await client.close()
