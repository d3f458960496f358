"""wsq.client: the asyncio Python client of wsq.v1 and a synchronous HTTP publisher.

    async with Client("ws://127.0.0.1:8000/ws", token=token) as client:
        sub = await client.subscribe("chat.room1")
        await client.publish("chat.room1", {"text": "hello"})
        async for msg in sub:
            ...

The same model as the JS client (js-client/): one socket, pipelined open/begin/attach, credit
refilled as messages are consumed, heartbeats, reconnect with full-jitter backoff, resume of
feeds after the last position received, move-mode settlement, a bounded outbox with generated
message ids, token refresh from a callable, typed errors with ``condition``. docs/python-client.md
is its manual. It imports nothing of the gateway: only ``wsq.core``'s pure helpers.
"""

from .client import VERSION, Client, State
from .errors import ClientError
from .http import HttpPublisher
from .subscription import Message, Subscription
from .wire import OpenInfo

__all__ = [
    "VERSION",
    "Client",
    "ClientError",
    "HttpPublisher",
    "Message",
    "OpenInfo",
    "State",
    "Subscription",
]
