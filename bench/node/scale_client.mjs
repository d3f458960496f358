// One process of the scale scenario's load generator (bench/scale.py): `count` wsq.v1
// subscribers on one address, all from one loopback source address (so that no source needs
// more than its ~28k ephemeral ports), heartbeating at the gateway's idle, recording when each
// published message reaches each of them.
//
// Usage: node scale_client.mjs '<json spec>'
//   spec: {url, token, address, count, source, first_port, concurrency, heartbeat_ms}
// Talks to bench/scale.py by lines: commands on stdin, one JSON object a line on stdout
// ({"hello": true} first, once it reads commands).
//   connect  -> {"ready": n, "failed": m, "seconds": s, "first_error": "..."}
//   reset    -> {"reset": true}: the receipts recorded so far are forgotten (a new phase)
//   report   -> {"hist": {tenth_ms: count}, "per_k": {k: [count, max_ms]}, "lost": n, ...}
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

function onMessage(buf) {
  if (buf.length <= 2) return; // "[]": the gateway's heartbeat
  const v = JSON.parse(buf);
  for (const f of Array.isArray(v) ? v : [v]) {
    if (f.op === 'transfer') record(f.body);
    else if (f.op === 'close' || f.op === 'detach' || f.op === 'end') refused++;
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
    ws.on('error', (e) => {
      if (!attached) reject(e);
    });
    ws.on('close', (code) => {
      if (!attached) reject(new Error(`closed before attached (${code})`));
      else if (!stopping) lost++;
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
        if (f.op === 'attach' && f.handle === 0) {
          attached = true;
          ws.off('message', handshake);
          ws.on('message', onMessage);
          resolve(ws);
        } else if (f.op === 'close' || f.op === 'detach' || f.op === 'end') {
          reject(new Error(`refused: ${JSON.stringify(f)}`));
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
          firstError ??= String(e.message ?? e);
        }
        break;
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(spec.concurrency, spec.count) }, lane));
  return { ready: socks.length, failed, seconds: (now() - t0) / 1000, first_error: firstError };
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
