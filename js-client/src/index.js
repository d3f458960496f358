// wsq-client: the JavaScript client for wsq gateways (the wsq.v1 protocol, docs/protocol.md).
//
// One WebSocket carries every subscription and publisher of a Client: links spread over a few
// sessions, opened pipelined behind `open`. The client heals itself: it heartbeats, notices a
// silent server, reconnects with full-jitter exponential backoff, resumes every feed after the
// last position it received, keeps publishes in a bounded outbox while disconnected (each with
// a message_id, so a retry after an unknown outcome is stored once), and refreshes its token on
// the live socket before it expires. No runtime dependency: browsers, Deno, Bun and Node (pass
// `WebSocket` from the `ws` package on Node 20).
//
// This is the package's entry point: the public API, and nothing else, from the modules beside
// it (README.md, "Layout"). The gateway serves them all: /wsq-client.js re-exports this file.

export { Client, VERSION } from "./client.js";
export { Client as default } from "./client.js";
export { WsqError } from "./errors.js";
export { Message, Subscription } from "./subscription.js";
export { SUBPROTOCOL, comparePositions, isAddress } from "./wire.js";
