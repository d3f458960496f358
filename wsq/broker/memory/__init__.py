"""The embedded broker (``memory://``): one process, every address in its memory."""

from wsq.broker.memory.broker import MemoryBroker

__all__ = ["MemoryBroker"]
