"""AMQP 1.0 over WebSocket (subprotocol ``amqp``), sans-I/O: the codec, the framing, the
message mapping and the connection state machine that the gateway drives beside wsq.v1's
(docs/amqp.md)."""
