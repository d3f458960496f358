// The public API as a user's TypeScript sees it, checked against src/index.d.ts by
// `npx tsc -p test/types` (scripts/test). Nothing here runs: every use sits in a function that
// is never called. `@ts-expect-error` lines are mistakes the declarations must refuse.

import NodeWebSocket from "ws";
import WsqClient, {
  type AttachInfo,
  Client,
  type ClientEvents,
  type ClientOptions,
  type ClientState,
  type Conflate,
  type Condition,
  comparePositions,
  type ErrorScope,
  type GapInfo,
  type Handler,
  isAddress,
  Message,
  type MessageProps,
  type OpenInfo,
  type Outcome,
  type Position,
  type PublishOptions,
  SUBPROTOCOL,
  type SubscribeOptions,
  Subscription,
  type SubscriptionEvents,
  type TokenSource,
  VERSION,
  type WebSocketConstructor,
  type WebSocketLike,
  WsqError,
} from "wsq-client";

/** Compiles only when `value` has exactly type T. */
type Equal<A, B> =
  (<X>() => X extends A ? 1 : 2) extends <X>() => X extends B ? 1 : 2 ? true : false;
function exactly<T>() {
  return <V>(value: V & (Equal<T, V> extends true ? unknown : never)): V => value;
}

interface Order {
  id: number;
  items: string[];
}

declare function fetchToken(): Promise<string>;
declare function ship(order: Order): Promise<void>;

export function constructing(): Client[] {
  const protocol: "wsq.v1" = SUBPROTOCOL;
  const version: string = VERSION;
  void [protocol, version];

  // Every option, as the README lists them.
  const options: ClientOptions = {
    token: fetchToken,
    WebSocket,
    idle: 30000,
    connectTimeout: 10000,
    reconnectDelay: 500,
    maxReconnectDelay: 30000,
    credit: 100,
    outboxSize: 1000,
    outboxBytes: 16 * 1048576,
    linksPerSession: 64,
    maxSessions: 64,
    maxSenders: 64,
    refreshBefore: 60000,
    closeTimeout: 1000,
    clientName: "my-app/1.0",
    messageIdPrefix: "my-app",
  };
  const full = new Client("wss://gateway.example/ws", options);

  // A string token, a sync function, an async function.
  const tokens: TokenSource[] = ["eyJ…", () => "eyJ…", async () => "eyJ…"];
  const fromString = new Client("/ws", { token: "eyJ…" });
  const viaDefault = new WsqClient("/ws", { token: () => "eyJ…" });

  // A WebSocket subclass (to count sockets, say) and a minimal implementation of our own.
  class Counting extends WebSocket {
    static sockets = 0;
    constructor(url: string | URL, protocols?: string | string[]) {
      super(url, protocols);
      Counting.sockets += 1;
    }
  }
  class Minimal implements WebSocketLike {
    readyState = 0;
    protocol = "wsq.v1";
    onopen: ((event: unknown) => void) | null = null;
    onmessage: ((event: { data: unknown }) => void) | null = null;
    onclose: ((event: { code?: number }) => void) | null = null;
    onerror: ((event: unknown) => void) | null = null;
    constructor(
      readonly url: string,
      readonly protocols?: string | string[],
    ) {}
    send(data: string): void {
      void data;
    }
    close(): void {
      this.readyState = 3;
    }
  }
  // Node 20: the `ws` package's WebSocket, as the README shows.
  const onNode = new Client("ws://127.0.0.1:8000/ws", { token: "t", WebSocket: NodeWebSocket });
  const constructors: WebSocketConstructor[] = [WebSocket, Counting, Minimal, NodeWebSocket];
  const counted = new Client("/ws", { token: tokens[0]!, WebSocket: Counting });
  const minimal = new Client("/ws", { token: "t", WebSocket: constructors[2]! });

  // @ts-expect-error the token is required
  new Client("/ws", {});
  // @ts-expect-error a token is a string or a function answering one
  new Client("/ws", { token: 42 });
  // @ts-expect-error options are numbers
  new Client("/ws", { token: "t", idle: "30s" });
  // @ts-expect-error no such option
  new Client("/ws", { token: "t", retries: 3 });

  // wsq.v1 over HTTP: asked for, or "auto" telling when it falls back.
  const overHttp = new Client("/ws", { token: "t", transport: "http", fetch: globalThis.fetch });
  overHttp.on("transport", (info) => console.log(info.transport === "http", info.reason));
  const carrier: "websocket" | "http" = overHttp.transport;
  void carrier;
  // @ts-expect-error a transport is "auto", "websocket" or "http"
  new Client("/ws", { token: "t", transport: "sse" });

  return [full, fromString, viaDefault, counted, minimal, onNode, overHttp];
}

export async function properties(client: Client): Promise<void> {
  const url: string = client.url;
  const state: ClientState = client.state;
  const connected: boolean = client.connected;
  const pending: number = client.pendingPublishes;
  const info: OpenInfo | null = client.info;
  if (info) {
    const node: string | null = info.node;
    const exp: number | null = info.exp;
    const limits: number = info.maxSessions + info.maxFrameBytes + info.idle;
    const forms: boolean = info.compact && info.rows;
    void [node, exp, limits, forms, info.tenant, info.sub];
  }
  void [url, state, connected, pending];
  // @ts-expect-error read-only
  client.state = "closed";
  await client.close();
}

export async function subscribing(client: Client): Promise<void> {
  // A typed feed: msg.body is an Order.
  const orders = client.subscribe<Order>(
    "orders.eu",
    (msg) => {
      exactly<Order>()(msg.body);
      exactly<Position>()(msg.id);
      const subject: string | undefined = msg.subject;
      const props: MessageProps = msg.props;
      const publisher: string | undefined = props.publisher;
      const ts: number | undefined = props.ts;
      const headers: Record<string, unknown> | undefined = props.headers;
      const delivery: number = msg.delivery;
      const sub: Subscription<Order> = msg.subscription;
      void [subject, publisher, ts, headers, delivery, sub, msg.address, msg.redelivered];
    },
    { from: "^", filter: "orders.*.eu", credit: 50 },
  );
  await orders.ready;
  const position: Position | null = orders.position;
  const mode: "copy" | "move" = orders.mode;
  const flags: boolean[] = [orders.attached, orders.closed];
  const owner: Client = orders.client;
  void [position, mode, flags, owner, orders.address];

  // Every subscribe option.
  const options: SubscribeOptions = {
    mode: "copy",
    from: "1732200000000-0",
    group: "default",
    lease: 30000,
    filter: { subject: "news.>" },
    settled: false,
    credit: 100,
    onGap: (info: AttachInfo) => console.warn(info.address, info.from, info.recovered),
    onError: (error: WsqError) => console.warn(error.condition),
  };
  client.subscribe("news.eu", () => {}, options);

  // A live view: the last value of each subject at once, then at most one per subject per 100 ms.
  const live: SubscribeOptions = { rewind: 50, conflate: { ms: 100, by: "subject" } };
  client.subscribe("metrics.cpu", () => {}, live);
  client.subscribe("metrics.cpu", () => {}, { rewind: 1, conflate: 250 });
  const conflate: Conflate = { ms: 100 };
  void conflate;

  // A queue worker: returns (accepted), throws (released), or settles itself.
  const jobs = client.subscribe<Order>(
    "jobs.ship",
    async (msg: Message<Order>) => {
      if (msg.redelivered > 3) {
        msg.reject();
        return;
      }
      if (!msg.settled && msg.body.items.length === 0) {
        const sent: boolean = msg.settle("modified");
        void sent;
        return;
      }
      await ship(msg.body);
      msg.accept() || msg.release() || msg.modify();
    },
    { mode: "move", group: "shippers", lease: 60000, credit: 10 },
  );
  const outcomes: Outcome[] = ["accepted", "released", "rejected", "modified"];
  void outcomes;

  // A handler's return value is ignored (a promise is awaited): any will do.
  const seen: Message[] = [];
  client.subscribe("a.b", (msg) => seen.push(msg));
  client.subscribe("a.b", async (msg) => seen.push(msg));
  const handler: Handler<{ n: number }> = (msg) => msg.body.n;
  client.subscribe("a.b", handler);

  // Subscription events.
  orders
    .on("attached", (info: AttachInfo) => exactly<boolean>()(info.recovered))
    .on("gap", (info) => console.warn("lost after", info.from, "on", info.node))
    .once("error", (error) => exactly<Condition>()(error.condition))
    .on("closed", (error: WsqError | null) => void error);
  const onGap = (info: AttachInfo) => void info;
  orders.on("gap", onGap).off("gap", onGap);
  const listeners: number = orders.listenerCount("gap");
  void listeners;
  const events: (keyof SubscriptionEvents)[] = ["attached", "gap", "error", "closed"];
  void events;

  await jobs.unsubscribe();

  // @ts-expect-error a handler is required
  client.subscribe("a.b");
  // @ts-expect-error mode is "copy" or "move"
  client.subscribe("a.b", () => {}, { mode: "fanout" });
  // @ts-expect-error conflation is by subject only
  client.subscribe("a.b", () => {}, { conflate: { ms: 100, by: "body" } });
  // @ts-expect-error the body of a typed subscription is typed
  client.subscribe<Order>("a.b", (msg) => msg.body.total);
  // @ts-expect-error no such outcome
  seen[0]?.settle("done");
  // @ts-expect-error a subscription is not a client
  jobs.subscribe("a.b", () => {});
  // @ts-expect-error no such event
  orders.on("message", () => {});
  // @ts-expect-error a gap listener gets the attach info
  orders.on("gap", (info: string) => void info);
}

export async function publishing(client: Client): Promise<void> {
  const id: Position = await client.publish("chat.room1", { text: "hello" });
  const options: PublishOptions = {
    subject: "chat.hello",
    messageId: "my-app-1",
    ttl: 60000,
    contentType: "application/json",
    headers: { lang: "en" },
  };
  const again = await client.publish("chat.room1", "any JSON", options);
  if (comparePositions(id, again) >= 0) throw new Error("positions only grow");

  // The outbox: publishes made while disconnected wait, up to outboxSize / outboxBytes.
  const waiting = [1, 2, 3].map((n) => client.publish("jobs.email", { n }, { ttl: 1000 }));
  const pending: number = client.pendingPublishes;
  void pending;
  const ids: Position[] = await Promise.all(waiting);
  void ids;

  try {
    await client.publish("secret.place", null);
  } catch (error) {
    if (error instanceof WsqError) {
      const condition: Condition = error.condition;
      const scope: ErrorScope = error.scope;
      const fatal: boolean = error.fatal;
      const address: string | undefined = error.address;
      const text: string = `${error.name}: ${error.description} (${error.message})`;
      void [condition, scope, fatal, address, text, error.cause];
      if (error.condition === "wsq:resource-limit-exceeded") return;
    }
    throw error;
  }

  // @ts-expect-error an address is a string
  client.publish(42, {});
  // @ts-expect-error ttl is a number of ms
  client.publish("a.b", {}, { ttl: "1m" });
  // @ts-expect-error a position is a string
  const wrong: number = await client.publish("a.b", {});
  void wrong;
}

export function events(client: Client): void {
  client
    .on("state", (state) => exactly<ClientState>()(state))
    .on("open", (info: OpenInfo) => console.log(info.node, info.tenant, info.sub))
    .on("refresh", ({ exp }) => exactly<number>()(exp))
    .on("gap", (info: GapInfo) => {
      const sub: Subscription = info.subscription;
      const recovered: false = info.recovered;
      void [sub, recovered];
    })
    .once("error", (error) => {
      if (error.fatal) console.error("the client gave up:", error.condition);
    });
  const names: (keyof ClientEvents)[] = ["state", "open", "refresh", "gap", "error"];
  void names;
  // @ts-expect-error no such event
  client.on("message", () => {});
  // @ts-expect-error the state is one of four
  client.on("state", (state: number) => void state);
}

export function helpers(): void {
  const order: number = comparePositions("1-0", "2-0");
  const address: unknown = "chat.room1";
  if (isAddress(address)) exactly<string>()(address);
  const mine = new WsqError("wsq-client:closed", "bye", { scope: "client", fatal: true });
  const custom = new WsqError("my-app:nope");
  const scopes: ErrorScope[] = ["connection", "session", "link", "message", "handler", "client"];
  const error: Error = mine;
  void [order, custom, scopes, error];
  // @ts-expect-error no such scope
  new WsqError("wsq:forbidden", "", { scope: "tenant" });
}
