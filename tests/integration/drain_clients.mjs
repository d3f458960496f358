// The clients of tests/integration/test_drain.py: N subscribers and one publisher, each a real
// wsq-client (js-client/src) under Node, through the proxy at URL.
// Usage: node drain_clients.mjs URL TOKEN ADDRESS N
// Prints JSON lines: {"event":"ready",...} once every subscription is attached and the
// publisher runs, {"event":"published","n":...} every 50 acknowledged publishes; reads "stop"
// on stdin: the publisher stops, every subscriber waits for all that was acknowledged, and
// {"event":"result",...} is printed.
import { createRequire } from "node:module";
import { createInterface } from "node:readline";
import { Client } from "../../js-client/src/index.js";

// Node 20 has no global WebSocket: the `ws` package of js-client's dev dependencies.
const WebSocket = createRequire(new URL("../../js-client/package.json", import.meta.url))("ws");

const [url, token, address, count] = process.argv.slice(2);
const N = Number(count);
const say = (event) => process.stdout.write(`${JSON.stringify(event)}\n`);

function client(name) {
  const c = new Client(url, { token, WebSocket, reconnectDelay: 100, maxReconnectDelay: 1000 });
  const record = { name, nodes: [], goingAway: 0, errors: [] };
  c.on("open", (info) => record.nodes.push(info.node));
  c.on("error", (e) => {
    if (e.condition === "wsq:going-away") record.goingAway += 1;
    else record.errors.push(`${e.condition}: ${e.description}`);
  });
  return { c, record };
}

const subscribers = [];
for (let i = 0; i < N; i++) {
  const { c, record } = client(`s${i}`);
  record.seqs = [];
  record.gaps = 0;
  const sub = c.subscribe(address, (msg) => record.seqs.push(msg.body.seq));
  sub.on("gap", () => (record.gaps += 1));
  subscribers.push({ c, record, sub });
}
await Promise.all(subscribers.map(({ sub }) => sub.ready));

const publisher = client("publisher");
let acknowledged = 0;
let stopping = false;
let first;
const firstAcknowledged = new Promise((resolve) => (first = resolve));
const publishing = (async () => {
  // One at a time: every publish acknowledged is one the subscribers must get, in order.
  while (!stopping) {
    await publisher.c.publish(address, { seq: acknowledged });
    acknowledged += 1;
    if (acknowledged === 1) first();
    if (acknowledged % 50 === 0) say({ event: "published", n: acknowledged });
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
})();
await firstAcknowledged;
say({
  event: "ready",
  nodes: subscribers.map(({ record }) => record.nodes[0]),
  publisher: publisher.record.nodes[0] ?? null,
});

for await (const line of createInterface({ input: process.stdin })) {
  if (line.trim() === "stop") break;
}
stopping = true;
await publishing;
const deadline = Date.now() + 10_000;
while (
  subscribers.some(({ record }) => record.seqs.length < acknowledged) &&
  Date.now() < deadline
) {
  await new Promise((resolve) => setTimeout(resolve, 20));
}
say({
  event: "result",
  acknowledged,
  publisher: publisher.record,
  subscribers: subscribers.map(({ record }) => record),
});
await Promise.all([...subscribers.map(({ c }) => c.close()), publisher.c.close()]);
process.exit(0);
