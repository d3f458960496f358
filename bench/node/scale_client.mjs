// One process of the scale scenario's load generator (bench/scale.py): `count` wsq.v1
// subscribers on one address, all from one loopback source address (so that no source needs
// more than its ~28k ephemeral ports), heartbeating at the gateway's idle, recording when each
// published message reaches each of them.
//
// Usage: node scale_client.mjs '<json spec>'
//   spec: {url, token, address, count, source, first_port, concurrency, heartbeat_ms}
// Talks to bench/scale.py by lines: commands on stdin, one JSON object a line on stdout
// ({"hello": true} first, once it reads commands).
//   connect  -> {"ready": n, "failed": m, "seconds": s, "first_error": "...",
//                "failed_by_reason": {reason: n}}
//   reset    -> {"reset": true}: the receipts recorded so far are forgotten (a new phase)
//   report   -> {"hist": {tenth_ms: count}, "per_k": {k: [count, max_ms]}, "lost": n,
//                "closed_by_reason": {reason: n}, ...}
//
// Why sockets ended, counted by reason: every handshake that failed (the error, or the
// gateway's close frame and WebSocket close code when it closed the socket first), and every
// socket the gateway closed or detached after it subscribed ("close wsq:idle-timeout: nothing
// received for 30000 ms (WebSocket 1008)"). Reasons are bounded in length and in number.
//   stop     -> closes every socket, prints {"stopped": true} and exits
//
// A body is {"k": <message number>, "t": <publish time, ms since the epoch>, ...}; the latency
// of a receipt is now - t on this machine's clock (the publisher is on the same machine):
// performance.timeOrigin + performance.now(), as bench/node/loadgen.mjs.
import { createInterface } from 'node:readline';
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';

const spec = JSON.parse(process.argv[2]);
const now = () => performance.timeOrigin + performance.now();
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

const socks = [];
process.on('uncaughtException', (e) => {
  process.stderr.write(`scale_client: ${e.stack ?? e}\n`);
  process.exit(70);
});
let stopping = false;
let lost = 0; // sockets closed by the other side (or failed) after they were subscribed
let refused = 0; // close/detach/end frames received after the subscription
let hist = new Map(); // latency in tenths of a ms -> receipts
let perK = new Map(); // message number -> [receipts, max latency ms]
let firstError = null;
const failedBy = new Map(); // reason -> handshakes that failed so
const closedBy = new Map(); // reason -> subscribed sockets the gateway closed (or detached) so
const MAX_REASONS = 50;
const MAX_REASON_CHARS = 200;

function count(map, reason) {
  // source addresses and ports vary by socket: one reason for them all
  let key = String(reason).replace(/\d+\.\d+\.\d+\.\d+:\d+/g, '<address>');
  key = key.slice(0, MAX_REASON_CHARS);
  if (!map.has(key) && map.size >= MAX_REASONS) key = 'other';
  map.set(key, (map.get(key) ?? 0) + 1);
}

// A close, detach or end frame of the gateway's as a reason: its op, condition, description.
function frameReason(f) {
  const error = f.error ?? {};
  const what = [f.op, error.condition ?? 'no error'].join(' ');
  return error.description ? `${what}: ${error.description}` : what;
}

// An error of a handshake: its code and message ("ECONNRESET: socket hang up").
function errorReason(e) {
  const message = String(e?.message ?? e);
  return e?.code && !message.includes(e.code) ? `${e.code}: ${message}` : message;
}

function record(body) {
  if (typeof body !== 'object' || body === null || typeof body.t !== 'number') return;
  const ms = now() - body.t;
  const tenth = Math.max(0, Math.round(ms * 10));
  hist.set(tenth, (hist.get(tenth) ?? 0) + 1);
  const entry = perK.get(body.k);
  if (entry === undefined) perK.set(body.k, [1, ms]);
  else {
    entry[0]++;
    if (ms > entry[1]) entry[1] = ms;
  }
}

function onMessage(ws, buf) {
  if (buf.length <= 2) return; // "[]": the gateway's heartbeat
  const v = JSON.parse(buf);
  for (const f of Array.isArray(v) ? v : [v]) {
    if (f.op === 'transfer') record(f.body);
    else if (f.op === 'close') {
      refused++;
      ws.closeFrame = frameReason(f); // counted with the WebSocket close code when it comes
    } else if (f.op === 'detach' || f.op === 'end') {
      refused++;
      count(closedBy, frameReason(f));
    }
  }
}

// Each socket binds its own source port, from spec.first_port up (a port in use elsewhere is
// skipped): left to the kernel (port 0), a bind to an address that has thousands of ports bound
// already searches them, and the generator spent ~2 ms of system time per socket there.
let nextPort = spec.first_port;

function subscribe() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(spec.url, ['wsq.v1'], {
      perMessageDeflate: false,
      skipUTF8Validation: true,
      maxPayload: 0,
      localAddress: spec.source,
      localPort: nextPort++,
      handshakeTimeout: 60000,
    });
    let attached = false;
    let settled = false;
    const fail = (reason, code) => {
      if (settled) return;
      settled = true;
      const error = new Error(reason);
      error.reason = reason;
      error.code = code; // EADDRINUSE: the caller tries the next port
      reject(error);
    };
    ws.closeFrame = null; // the gateway's close frame, as a reason, once received
    ws.on('error', (e) => {
      if (!attached) fail(errorReason(e), e.code);
    });
    ws.on('close', (code) => {
      const why = `${ws.closeFrame ?? 'no close frame'} (WebSocket ${code})`;
      if (!attached) fail(`closed before attached: ${why}`);
      else if (!stopping) {
        lost++;
        count(closedBy, why);
      }
    });
    ws.on('open', () => {
      ws.send(JSON.stringify([
        { op: 'open', token: spec.token, client: 'wsq-bench-scale/1' },
        { op: 'begin', ch: 1 },
        { op: 'attach', ch: 1, handle: 0, role: 'receiver', address: spec.address,
          settled: true, credit: 4000000000 },
      ]));
    });
    const handshake = (buf) => {
      const v = JSON.parse(buf);
      for (const f of Array.isArray(v) ? v : [v]) {
        if (f.op === 'attach' && f.handle === 0 && !settled) {
          attached = true;
          settled = true;
          ws.off('message', handshake);
          ws.on('message', (data) => onMessage(ws, data));
          resolve(ws);
        } else if (f.op === 'close') {
          // failed with the WebSocket close code that follows (the gateway closes the socket
          // within a second of its close frame; the timer is a bound on one that does not)
          ws.closeFrame = frameReason(f);
          setTimeout(() => fail(`closed before attached: ${ws.closeFrame} (no close)`), 10000);
        } else if (f.op === 'detach' || f.op === 'end') {
          fail(`refused: ${frameReason(f)}`);
          ws.terminate();
        }
      }
    };
    ws.on('message', handshake);
  });
}

async function connectAll() {
  const t0 = now();
  let next = 0;
  let failed = 0;
  async function lane() {
    while (next < spec.count) {
      next++;
      for (let attempt = 0; ; attempt++) {
        try {
          socks.push(await subscribe());
        } catch (e) {
          if (e.code === 'EADDRINUSE' && attempt < 100) continue; // that port is taken: the next
          failed++;
          const reason = e.reason ?? errorReason(e);
          firstError ??= reason;
          count(failedBy, reason);
        }
        break;
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(spec.concurrency, spec.count) }, lane));
  return {
    ready: socks.length,
    failed,
    seconds: (now() - t0) / 1000,
    first_error: firstError,
    failed_by_reason: Object.fromEntries(failedBy),
  };
}

// Heartbeats: every socket sends "[]" once per heartbeat_ms (half the gateway's idle or less),
// spread over ten slices so that they do not all go at once.
const SLICES = 10;
let tick = 0;
function heartbeat() {
  const slice = tick++ % SLICES;
  for (let i = slice; i < socks.length; i += SLICES) {
    const ws = socks[i];
    if (ws.readyState === WebSocket.OPEN) ws.send('[]');
  }
}

const commands = {
  async connect() {
    // from the first socket on: connecting them all may take longer than the gateway's idle
    setInterval(heartbeat, spec.heartbeat_ms / SLICES).unref();
    emit(await connectAll());
  },
  reset() {
    hist = new Map();
    perK = new Map();
    emit({ reset: true });
  },
  report() {
    const open = socks.filter((ws) => ws.readyState === WebSocket.OPEN).length;
    emit({
      hist: Object.fromEntries(hist),
      per_k: Object.fromEntries(perK),
      lost,
      refused,
      closed_by_reason: Object.fromEntries(closedBy),
      open,
      rss: process.memoryUsage().rss,
    });
  },
  stop() {
    stopping = true;
    for (const ws of socks) ws.terminate();
    emit({ stopped: true });
    setTimeout(() => process.exit(0), 100);
  },
};

createInterface({ input: process.stdin }).on('line', (line) => {
  const command = commands[line.trim()];
  if (command === undefined) emit({ error: `unknown command ${line}` });
  else command();
});
process.stdin.on('end', () => process.exit(0));
emit({ hello: true });
