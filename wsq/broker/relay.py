"""The relay: a POST for an HTTP stream reaches the process that holds the stream's response.

A stream (wsq.stream) listens on a channel named from its id and secret; whichever process
takes a POST for it sends the POST's frames to that channel. ``send`` answers whether anyone
listened, so a POST for a closed stream, an unknown id or a wrong secret is refused at once
(all three alike: nothing tells a guesser which one it was). Delivery is at most once and in the
order of the sends of one sender; the stream's sequence numbers (wsq.stream.carrier) restore the
order across senders and refuse replays.

``LocalRelay`` is one process's (``memory://``, and the default of every broker);
``wsq.broker.redis.relay.RedisRelay`` shares channels between the processes of one Redis.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

#: What a listener is given: the payload of one send, as sent.
Deliver = Callable[[bytes], None]


class Relay(ABC):
    async def start(self) -> None:  # noqa: B027 (a relay with nothing to start)
        """Connect (called by the broker's start)."""

    async def close(self) -> None:  # noqa: B027
        """Stop listening to everything."""

    @abstractmethod
    async def listen(self, channel: str, deliver: Deliver) -> None:
        """Call ``deliver`` with every payload sent to ``channel`` until ``forget``."""

    @abstractmethod
    async def forget(self, channel: str) -> None:
        """Stop listening to ``channel`` (no-op when not listened to)."""

    @abstractmethod
    async def send(self, channel: str, payload: bytes) -> bool:
        """Pass ``payload`` to the listener of ``channel``; False when there is none."""


class LocalRelay(Relay):
    """Channels of this process only."""

    def __init__(self) -> None:
        self._listeners: dict[str, Deliver] = {}

    async def close(self) -> None:
        self._listeners.clear()

    async def listen(self, channel: str, deliver: Deliver) -> None:
        self._listeners[channel] = deliver

    async def forget(self, channel: str) -> None:
        self._listeners.pop(channel, None)

    async def send(self, channel: str, payload: bytes) -> bool:
        deliver = self._listeners.get(channel)
        if deliver is None:
            return False
        deliver(payload)
        return True
