"""The Redis streams broker (``redis://host:port/db``, ``rediss://``, ``redis+cluster://``):
many gateway processes share one Redis, so a client can publish on one node and read, or
resume, on any other.

One address is one stream and a few keys under one hash tag (``keys``); a publish is one Lua
script (``lua/publish.lua``); each process reads each stream it serves once per notice, through
one subscription (``reader``); queues are Redis consumer groups (``groups``). docs/design.md
has the design and its measurements.
"""

from wsq.broker.redis.broker import RedisBroker

__all__ = ["RedisBroker"]
