"""wsq: a WebSocket push gateway for browsers speaking wsq.v1."""

__version__ = "0.1.0"
