// Type declarations for wsq-client (hand-written). test/exports.test.js checks them against what
// index.js exports, and test/types/usage.ts (tsc -p test/types) against a user's code.

/** The WebSocket subprotocol, "wsq.v1". */
export const SUBPROTOCOL: "wsq.v1";
export const VERSION: string;

/** A message position in its address, "<ms>-<seq>": each part 1 to 19 decimal digits. */
export type Position = string;

/** Conditions the gateway sends (wsq.v1) and the client's own. */
export type Condition =
  | "wsq:unauthorized"
  | "wsq:token-expired"
  | "wsq:forbidden"
  | "wsq:invalid-frame"
  | "wsq:frame-too-large"
  | "wsq:resource-limit-exceeded"
  | "wsq:transfer-limit-exceeded"
  | "wsq:idle-timeout"
  | "wsq:not-found"
  | "wsq:internal-error"
  | "wsq:going-away"
  | "wsq-client:closed"
  | "wsq-client:handler"
  | "wsq-client:token"
  | "wsq-client:socket"
  | (string & {});

/** Where an error belongs: the socket, a session, a link, one published message, a handler, or
 * the client itself. */
export type ErrorScope = "connection" | "session" | "link" | "message" | "handler" | "client";

export class WsqError extends Error {
  constructor(
    condition: Condition,
    description?: string,
    details?: { scope?: ErrorScope; fatal?: boolean; address?: string; cause?: unknown },
  );
  readonly name: "WsqError";
  /** "wsq:forbidden", "wsq-client:closed", … */
  readonly condition: Condition;
  /** For people; may change between versions. */
  readonly description: string;
  readonly scope: ErrorScope;
  /** True when the client gave up and is closed. */
  readonly fatal: boolean;
  /** The address concerned, for link and message errors. */
  readonly address?: string;
}

/** Compare two positions numerically: negative, 0 or positive. Throws a TypeError when either
 * is not a position. */
export function comparePositions(a: Position, b: Position): number;

/** Whether `value` is a valid wsq address (dot-separated tokens of [A-Za-z0-9_-], ≤ 255). */
export function isAddress(value: unknown): value is string;

/** The minimal WebSocket the client needs: the browser's, Node 22's, or the `ws` package's. */
export interface WebSocketLike {
  readonly readyState: number;
  readonly protocol?: string;
  // The client sets these handlers; it reads `data` of a message event and `code` of a close
  // event. Their parameters are `any` so that every implementation's own event types fit.
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  /** `ws` only: drop the socket without a closing handshake. */
  terminate?(): void;
}

export type WebSocketConstructor = new (
  url: string,
  protocols?: string | string[],
) => WebSocketLike;

export type TokenSource = string | (() => string | Promise<string>);

export interface ClientOptions {
  /** The JWT, or a function answering one; called at connect, reconnect and before expiry. */
  token: TokenSource;
  /** A WebSocket implementation; default globalThis.WebSocket (on Node 20: `ws`). */
  WebSocket?: WebSocketConstructor;
  /** What carries the connection: "websocket"; "http" (wsq.v1 over HTTP: an event stream
   * down, POSTs up); or "auto" (default): a WebSocket, and HTTP from the first that cannot
   * open (or is lost before the gateway's open answer) while none has worked yet, or at once
   * where there is no WebSocket; an HTTP stream that cannot open either sends it back to a
   * WebSocket, after the backoff (the "transport" event says each change). */
  transport?: Transport;
  /** The fetch used by the HTTP transport; default globalThis.fetch. */
  fetch?: typeof globalThis.fetch;
  /** The longest server silence tolerated, ms (sent as `idle` in open). 0 or 500..3600000; default 30000. */
  idle?: number;
  /** How long to wait for the gateway's open answer, ms. Default 10000. */
  connectTimeout?: number;
  /** Backoff base, ms: the n-th retry waits a random time up to min(max, base·2^n). Default 500. */
  reconnectDelay?: number;
  /** Backoff ceiling, ms. Default 30000. */
  maxReconnectDelay?: number;
  /** Default receiver credit window per subscription. Default 100. */
  credit?: number;
  /** Unconfirmed publishes kept at most (waiting or in flight); beyond it publish rejects. Default 1000. */
  outboxSize?: number;
  /** Bytes of unconfirmed publishes kept at most. Default 16 MiB. */
  outboxBytes?: number;
  /** Links placed on one session before another is begun. Default 64. */
  linksPerSession?: number;
  /** Sessions per socket at most (also capped by the gateway's max_sessions). Default 64. */
  maxSessions?: number;
  /** Sender links kept attached; the least recently used idle one is detached beyond it. Default 64. */
  maxSenders?: number;
  /** Refresh the token this long before it expires (at most a third of its remaining life), ms. Default 60000. */
  refreshBefore?: number;
  /** How long close() waits for the gateway's answer before it drops the socket, ms. Default 1000. */
  closeTimeout?: number;
  /** Sent as `client` in open. Default "wsq-client/<version>". */
  clientName?: string;
  /** Ask for the compact delivery form (several deliveries per frame) and its rows (a run of
   * messages that share props and consecutive ids said once); handlers see the same messages
   * either way. Default true; false asks for neither. */
  compact?: boolean;
  /** Prefix of generated message ids (a random UUID by default); ids are "<prefix>-<n>". */
  messageIdPrefix?: string;
}

export type ClientState = "connecting" | "connected" | "disconnected" | "closed";

export type Transport = "auto" | "websocket" | "http";

/** The "transport" event: what carries the next connection, and why. */
export interface TransportInfo {
  transport: "websocket" | "http";
  /** "asked for", "no WebSocket here", "the WebSocket could not open" or (back to a
   * WebSocket) "the HTTP stream could not open either". */
  reason: string;
}

/** The gateway's open answer. */
export interface OpenInfo {
  node: string | null;
  tenant: string | null;
  sub: string | null;
  /** Token expiry, Unix seconds. */
  exp: number | null;
  /** The server's idle, ms. */
  idle: number;
  maxSessions: number;
  maxFrameBytes: number;
  /** The gateway sends the compact delivery form (it answered `compact: true`). */
  compact: boolean;
  /** The gateway may send compact rows too (it answered `rows: true`, with `compact: true`). */
  rows: boolean;
}

export interface AttachInfo {
  address: string;
  /** Copy mode: the position the link starts after. */
  from: Position | null;
  /** False when retention dropped messages after the position resumed from. */
  recovered: boolean;
  node: string | null;
}

export interface GapInfo extends AttachInfo {
  recovered: false;
  subscription: Subscription;
}

export interface MessageProps {
  subject?: string;
  message_id?: string;
  content_type?: string;
  headers?: Record<string, unknown>;
  /** When the gateway accepted it, ms since the epoch. */
  ts?: number;
  /** The `sub` of the publishing token. */
  publisher?: string;
  /** Move mode: deliveries before this one that failed. */
  redelivered?: number;
  /** Messages published with a ttl: ms since the epoch after which they are dropped. */
  expires?: number;
  [key: string]: unknown;
}

export type Outcome = "accepted" | "released" | "rejected" | "modified";

export class Message<T = unknown> {
  readonly id: Position;
  readonly body: T;
  readonly props: MessageProps;
  readonly address: string;
  readonly subscription: Subscription<T>;
  /** The gateway's delivery number on its session. */
  readonly delivery: number;
  readonly subject: string | undefined;
  /**
   * Move mode: earlier deliveries of this message that ended without an answer (a consumer
   * that vanished, a lease that ran out, `modify()`). 1 or more: the job may already be done,
   * in part or in full; do it idempotently.
   */
  readonly redelivered: number;
  /** Settled already (always true outside move mode and on pre-settled links). */
  readonly settled: boolean;
  /** Move mode: settle now; answers whether a disposition was sent. */
  settle(outcome?: Outcome): boolean;
  accept(): boolean;
  release(): boolean;
  reject(): boolean;
  modify(): boolean;
}

/** Called with each message, one at a time. What it returns is ignored, except that a promise
 * is awaited before the next message. In move mode the message is accepted when it returns (or
 * its promise resolves) and released when it throws (or its promise rejects). */
export type Handler<T = unknown> = (message: Message<T>) => unknown;

/** Conflation of a copy subscription: the latest message per subject, at most every `ms`. */
export interface Conflate {
  ms: number;
  by?: "subject";
}

export interface SubscribeOptions {
  /** "copy" (a feed, default) or "move" (a queue of competing consumers). */
  mode?: "copy" | "move";
  /** Copy: "$" new messages (default), "^" the oldest retained, or a position to start after. */
  from?: "$" | "^" | Position;
  /** Copy: start with the last N retained messages (1..1000), then live with no gap; exclusive
   * with `from`. With `conflate`, the last message of each subject among those retained. Only
   * the first attach rewinds: after a reconnect the subscription resumes where it was. */
  rewind?: number;
  /** Copy: at most one message per subject per `ms` (>= 10), always the latest; a message
   * superseded before its turn is not sent. A number is taken as `{ms: n, by: "subject"}`. */
  conflate?: Conflate | number;
  /** Move: the consumer group (default "default"). */
  group?: string;
  /** Move: ms a delivery may stay unsettled before it goes to another consumer (100..86400000). */
  lease?: number;
  /** Only messages whose subject matches the pattern (a string is taken as the subject pattern). */
  filter?: { subject?: string } | string;
  /** Deliveries arrive pre-settled (at-most-once). */
  settled?: boolean;
  /** The credit window: at most this many messages are on their way or waiting for the handler. */
  credit?: number;
  /** Make this subscription a member of the address while attached, and receive the room
   * (count and first 100 members) and every join and leave ("presence" events). */
  presence?: boolean;
  /** Shorthand for sub.on("presence", …). */
  onPresence?: (event: PresenceEvent) => void;
  /** Shorthand for sub.on("gap", …). */
  onGap?: (info: AttachInfo) => void;
  /** Shorthand for sub.on("error", …). */
  onError?: (error: WsqError) => void;
}

export interface PublishOptions {
  /** A subject for receivers' filters (address grammar). */
  subject?: string;
  /** Your own id for deduplication; one is generated when left out. */
  messageId?: string;
  /** ms after which the message is dropped (1..31536000000). */
  ttl?: number;
  contentType?: string;
  headers?: Record<string, unknown>;
}

/** A present link of an address; `client` is the connection's id on its gateway node. */
export interface Member {
  id: string;
  sub: string;
  client: string;
  node: string;
}

export type PresenceEvent =
  | { type: "room"; count: number; members: Member[] }
  | { type: "join" | "leave"; count: number; member: Member };

declare class Emitter<Events> {
  on<E extends keyof Events & string>(event: E, listener: Events[E]): this;
  once<E extends keyof Events & string>(event: E, listener: Events[E]): this;
  off<E extends keyof Events & string>(event: E, listener: Events[E]): this;
  listenerCount(event: keyof Events & string): number;
}

export interface SubscriptionEvents {
  /** Attached (again) on a socket: after connect, reconnect and retries. */
  attached: (info: AttachInfo) => void;
  /** An attach answered recovered: false: messages were lost to retention. */
  gap: (info: AttachInfo) => void;
  /** The gateway refused the subscription (e.g. wsq:forbidden); it is closed. */
  error: (error: WsqError) => void;
  /** The subscription ended: unsubscribed (null), refused (the error) or its client closed. */
  closed: (error: WsqError | null) => void;
  /** With `presence: true`: the room after each attach, then each join and leave. */
  presence: (event: PresenceEvent) => void;
}

export class Subscription<T = unknown> extends Emitter<SubscriptionEvents> {
  readonly client: Client;
  readonly address: string;
  readonly mode: "copy" | "move";
  /** Copy mode: the position of the last message handed to the handler, or null. */
  readonly position: Position | null;
  /** Attached on the current socket. */
  readonly attached: boolean;
  /** With `presence: true`: the room's count and the members known (first page, joins). */
  readonly presence: { count: number; members: Map<string, Member> } | null;
  /** Ended: unsubscribed, refused, or the client closed. */
  readonly closed: boolean;
  /** Resolves at the first attach; rejects with the refusal (or when closed before). */
  readonly ready: Promise<void>;
  /** Stop receiving; resolves once the gateway confirmed (at once when offline). */
  unsubscribe(): Promise<void>;
}

export interface ClientEvents {
  state: (state: ClientState) => void;
  /** Every successful open (connect and reconnect). */
  open: (info: OpenInfo) => void;
  /** The token was refreshed on the live socket. */
  refresh: (info: { exp: number }) => void;
  /** A subscription resumed with messages lost to retention. */
  gap: (info: GapInfo) => void;
  /** Anything that went wrong; `fatal` errors mean the client closed for good. */
  error: (error: WsqError) => void;
  /** The next connection goes over another transport (said before the connect). */
  transport: (info: TransportInfo) => void;
}

export class Client extends Emitter<ClientEvents> {
  constructor(url: string, options: ClientOptions);
  readonly url: string;
  readonly state: ClientState;
  /** What carries the connection now (or the next one). */
  readonly transport: "websocket" | "http";
  readonly connected: boolean;
  /** The gateway's open answer on the current socket, or null. */
  readonly info: OpenInfo | null;
  /** Publishes not yet confirmed (waiting in the outbox or in flight). */
  readonly pendingPublishes: number;
  subscribe<T = unknown>(
    address: string,
    handler: Handler<T>,
    options?: SubscribeOptions,
  ): Subscription<T>;
  /** Resolves with the message's position once stored; rejects with a WsqError. */
  publish(address: string, body: unknown, options?: PublishOptions): Promise<Position>;
  /** Close for good; pending publishes reject with wsq-client:closed. */
  close(): Promise<void>;
}

export default Client;
