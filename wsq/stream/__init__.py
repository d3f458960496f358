"""wsq.v1 over HTTP, for clients that cannot open a WebSocket (docs/protocol.md, "HTTP
transport"): ``endpoints`` serves it, ``carrier`` hands it to the gateway's peer."""

from wsq.stream.endpoints import Streams, routes

__all__ = ["Streams", "routes"]
