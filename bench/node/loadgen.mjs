// The bench's one load generator: the same client code drives every system, through a small
// per-system adapter that only knows how to subscribe and how to publish a batch.
//
// Usage: node loadgen.mjs '<json spec>'
//   spec: {adapter: "wsq"|"amqp"|"raw"|"nats"|"socketio"|"stomp"|"mqtt", url, token?, scenario: "fanout"|"latency"|"idle",
//          address, subs, messages, batch, window, rate, duration, conns, concurrency, size,
//          timeout, deflate, compact}
//   compact: wsq subscribers ask for the compact delivery form and its rows (`"compact": true,
//            "rows": true` in open; docs/protocol.md 6.4). Counting needs no decoding: the marker
//            is in every body, whatever the form around it. WSQ_BENCH_NO_ROWS=1 in the
//            environment leaves rows out (the compact form's objects: for A/B runs).
// Talks to the bench on stdout (one JSON object a line) and stdin:
//   {"mark":"NAME"}   a measuring point; the generator waits for a line on stdin before going on,
//                     so that the bench samples the server's /proc exactly there
//   {"result":{...}}  the scenario's figures, last
//
// Deliveries are counted without parsing: every message body carries the marker "b@", and a
// subscriber counts its occurrences in each WebSocket message (one message per frame, or a batch
// of many). Only the latency scenario reads the timestamps that follow it.
import net from 'node:net';
import { createInterface } from 'node:readline';
import { performance } from 'node:perf_hooks';
import rhea from 'rhea';
import WebSocket from 'ws';

const spec = JSON.parse(process.argv[2]);
const MARKER = Buffer.from('"b@":');
const T_FIELD = Buffer.from('"t":');
const now = () => performance.timeOrigin + performance.now();

// -- talking to the bench --------------------------------------------------------------------
const stdinLines = createInterface({ input: process.stdin });
const acks = [];
stdinLines.on('line', () => acks.shift()?.());
function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}
function mark(name) {
  return new Promise((resolve) => {
    acks.push(resolve);
    emit({ mark: name });
  });
}

// -- counting --------------------------------------------------------------------------------
let delivered = 0;
let waiter = null; // {need, resolve}
let onLatency = null; // (buf) => void, only in the latency scenario

function count(buf) {
  let n = 0;
  let i = buf.indexOf(MARKER);
  while (i !== -1) {
    n++;
    i = buf.indexOf(MARKER, i + 5);
  }
  return n;
}

function received(buf) {
  if (onLatency !== null) onLatency(buf);
  else delivered += count(buf);
  if (waiter !== null && delivered >= waiter.need) {
    const w = waiter;
    waiter = null;
    w.resolve();
  }
}

function untilDelivered(need) {
  if (delivered >= need) return Promise.resolve();
  return new Promise((resolve) => {
    waiter = { need, resolve };
  });
}

// spec.deflate: offer permessage-deflate as Chromium does ("permessage-deflate;
// client_max_window_bits", ws's default offer; Chromium 156 sends exactly that) and, as
// Chromium, compress every message sent (threshold 0), when the server accepts. Without it
// nothing is offered. The first offer and answer seen are reported (result.offered,
// result.extensions): what the clients asked and what the server negotiated.
let offered = null;
let negotiated = null;

function connect(url, protocols) {
  const ws = new WebSocket(url, protocols, {
    perMessageDeflate: spec.deflate ? { threshold: 0 } : false,
    skipUTF8Validation: true,
    maxPayload: 0,
  });
  // ws keeps the handshake's request until the answer (ws._req): the offer as it was sent
  offered ??= ws._req?.getHeader('sec-websocket-extensions') ?? '';
  ws.once('upgrade', (res) => {
    negotiated ??= res.headers['sec-websocket-extensions'] ?? '';
  });
  return ws;
}

function failOn(ws, reject, what) {
  ws.on('error', (e) => reject(new Error(`${what}: ${e.message}`)));
  ws.on('close', (code) => reject(new Error(`${what}: closed (${code})`)));
}

// -- adapters --------------------------------------------------------------------------------
// subscribe(address) -> Promise<ws> once deliveries are counted; publisher(address) ->
// Promise<{send(bodies[]): Promise}>. Every body is a JSON text containing the marker.

const wsq = {
  subscribe(address) {
    return new Promise((resolve, reject) => {
      const ws = connect(spec.url, ['wsq.v1']);
      failOn(ws, reject, 'wsq subscriber');
      ws.on('open', () => {
        ws.send(JSON.stringify([
          { op: 'open', token: spec.token, client: 'wsq-bench/1', compact: !!spec.compact,
            rows: !!spec.compact && !process.env.WSQ_BENCH_NO_ROWS },
          { op: 'begin', ch: 1 },
          { op: 'attach', ch: 1, handle: 0, role: 'receiver', address, settled: true,
            credit: 4000000000 },
        ]));
      });
      const handshake = (buf) => {
        const v = JSON.parse(buf);
        for (const f of Array.isArray(v) ? v : [v]) {
          if (f.op === 'attach' && f.handle === 0) {
            ws.off('message', handshake);
            ws.on('message', received);
            resolve(ws);
          } else if (f.op === 'close' || f.op === 'detach' || f.op === 'end') {
            reject(new Error(`wsq subscriber refused: ${JSON.stringify(f)}`));
          }
        }
      };
      ws.on('message', handshake);
    });
  },
  publisher(address) {
    return new Promise((resolve, reject) => {
      const ws = connect(spec.url, ['wsq.v1']);
      failOn(ws, reject, 'wsq publisher');
      let credit = 0;
      let next = 0;
      let creditWaiter = null;
      ws.on('open', () => {
        ws.send(JSON.stringify([
          { op: 'open', token: spec.token, client: 'wsq-bench/1' },
          { op: 'begin', ch: 2 },
          { op: 'attach', ch: 2, handle: 1, role: 'sender', address },
        ]));
      });
      const pub = {
        async send(bodies) {
          while (credit < bodies.length) {
            await new Promise((r) => { creditWaiter = r; });
          }
          credit -= bodies.length;
          const frames = bodies.map(
            (b) => `{"op":"transfer","ch":2,"handle":1,"delivery":${next++},"body":${b}}`);
          ws.send('[' + frames.join(',') + ']');
        },
      };
      let ready = false;
      ws.on('message', (buf) => {
        const v = JSON.parse(buf);
        for (const f of Array.isArray(v) ? v : [v]) {
          if (f.op === 'flow' && f.handle === 1) {
            credit += f.credit;
            if (!ready) {
              ready = true;
              resolve(pub);
            }
            creditWaiter?.();
            creditWaiter = null;
          } else if (f.op === 'disposition' && f.outcome !== 'accepted') {
            reject(new Error(`publish refused: ${JSON.stringify(f)}`));
          } else if (f.op === 'close' || f.op === 'detach' || f.op === 'end') {
            reject(new Error(`wsq publisher refused: ${JSON.stringify(f)}`));
          }
        }
      });
    });
  },
};

// Bare broadcasters: /sub sockets receive, /pub sockets send; one WebSocket message per message.
const raw = {
  subscribe() {
    return new Promise((resolve, reject) => {
      const ws = connect(spec.url + '/sub');
      failOn(ws, reject, 'subscriber');
      ws.once('message', () => {
        ws.on('message', received);
        resolve(ws);
      });
    });
  },
  publisher() {
    return new Promise((resolve, reject) => {
      const ws = connect(spec.url + '/pub');
      failOn(ws, reject, 'publisher');
      ws.on('open', () => resolve({
        async send(bodies) {
          for (const b of bodies) ws.send(b);
        },
      }));
    });
  },
};

// NATS over WebSocket: its own text protocol (INFO, CONNECT, SUB, PUB, MSG, PING/PONG).
const PING = Buffer.from('PING\r\n');
const nats = {
  _connect(what, after) {
    return new Promise((resolve, reject) => {
      const ws = connect(spec.url);
      failOn(ws, reject, what);
      let stage = 0;
      const handshake = (buf) => {
        if (stage === 0 && buf.indexOf('INFO') === 0) {
          stage = 1;
          ws.send('CONNECT {"verbose":false,"pedantic":false,"protocol":1}\r\n' + after + 'PING\r\n');
        } else if (stage === 1 && buf.indexOf('PONG') !== -1) {
          ws.off('message', handshake);
          resolve(ws);
        } else if (buf.indexOf('-ERR') !== -1) {
          reject(new Error(`${what}: ${buf}`));
        }
      };
      ws.on('message', handshake);
    });
  },
  async subscribe(address) {
    const ws = await nats._connect('nats subscriber', `SUB ${address} 1\r\n`);
    ws.on('message', (buf) => {
      if (buf.indexOf(PING) === 0) ws.send('PONG\r\n');
      received(buf);
    });
    return ws;
  },
  async publisher(address) {
    const ws = await nats._connect('nats publisher', '');
    ws.on('message', (buf) => {
      if (buf.indexOf(PING) !== -1) ws.send('PONG\r\n');
    });
    return {
      async send(bodies) {
        ws.send(bodies.map((b) => `PUB ${address} ${Buffer.byteLength(b)}\r\n${b}\r\n`).join(''));
      },
    };
  },
};

// Socket.IO (protocol 5) over Engine.IO v4, spoken directly on a raw WebSocket (transport=
// websocket, no long-polling upgrade): what socket.io-client sends, without its per-message
// event-emitter machinery in the generator. Subscribers join a room with an acknowledged "sub"
// event; the publisher emits one "pub" event (one WebSocket message) per message, which the
// server re-emits to the room: one Socket.IO packet per message and subscriber.
const EIO_PING = 0x32; // '2': the server's heartbeat, answered with '3'
const socketio = {
  _connect(what) {
    return new Promise((resolve, reject) => {
      const ws = connect(spec.url + '/socket.io/?EIO=4&transport=websocket');
      failOn(ws, reject, what);
      const handshake = (buf) => {
        const s = buf.toString();
        if (s[0] === '0') {
          ws.send('40'); // Engine.IO open -> Socket.IO CONNECT to the main namespace
        } else if (s.startsWith('40')) {
          ws.off('message', handshake);
          resolve(ws);
        } else if (s.startsWith('44')) {
          reject(new Error(`${what}: ${s}`));
        }
      };
      ws.on('message', handshake);
    });
  },
  async subscribe(address) {
    const ws = await socketio._connect('socket.io subscriber');
    await new Promise((resolve) => {
      const ack = (buf) => {
        if (buf.indexOf('431') === 0) {
          ws.off('message', ack);
          resolve();
        }
      };
      ws.on('message', ack);
      ws.send(`421["sub",${JSON.stringify(address)}]`);
    });
    ws.on('message', (buf) => {
      if (buf.length === 1 && buf[0] === EIO_PING) ws.send('3');
      else received(buf);
    });
    return ws;
  },
  async publisher(address) {
    const ws = await socketio._connect('socket.io publisher');
    ws.on('message', (buf) => {
      if (buf.length === 1 && buf[0] === EIO_PING) ws.send('3');
    });
    const to = JSON.stringify(address);
    return {
      async send(bodies) {
        for (const b of bodies) ws.send(`42["pub",${to},${b}]`);
      },
    };
  },
};

// STOMP 1.2 over WebSocket (RabbitMQ Web-STOMP): SUBSCRIBE to /topic/<address> with a receipt,
// the publisher SENDs a batch as many SEND frames in one WebSocket message (as NATS gets many
// PUBs in one); the broker sends one MESSAGE frame per WebSocket message.
const stomp = {
  _connect(what) {
    return new Promise((resolve, reject) => {
      const ws = connect(spec.url, ['v12.stomp']);
      failOn(ws, reject, what);
      ws.on('open', () => ws.send(
        'CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\nheart-beat:0,0\n\n\0'));
      const handshake = (buf) => {
        if (buf.indexOf('CONNECTED') === 0) {
          ws.off('message', handshake);
          resolve(ws);
        } else if (buf.indexOf('ERROR') === 0) {
          reject(new Error(`${what}: ${buf}`));
        }
      };
      ws.on('message', handshake);
    });
  },
  async subscribe(address) {
    const ws = await stomp._connect('stomp subscriber');
    await new Promise((resolve, reject) => {
      const receipt = (buf) => {
        if (buf.indexOf('RECEIPT') === 0) {
          ws.off('message', receipt);
          resolve();
        } else if (buf.indexOf('ERROR') === 0) {
          reject(new Error(`stomp subscribe: ${buf}`));
        }
      };
      ws.on('message', receipt);
      ws.send(`SUBSCRIBE\nid:0\ndestination:/topic/${address}\nack:auto\nreceipt:sub\n\n\0`);
    });
    ws.on('message', received);
    return ws;
  },
  async publisher(address) {
    const ws = await stomp._connect('stomp publisher');
    let refused = null;
    ws.on('message', (buf) => {
      if (buf.indexOf('ERROR') === 0) refused = String(buf);
    });
    const head = `SEND\ndestination:/topic/${address}\ncontent-type:application/json\n`;
    return {
      async send(bodies) {
        if (refused) throw new Error(`stomp publish refused: ${refused}`);
        ws.send(bodies.map(
          (b) => `${head}content-length:${Buffer.byteLength(b)}\n\n${b}\0`).join(''));
      },
    };
  },
};

// MQTT 3.1.1, QoS 0, over plain TCP (Debian 12's Mosquitto has no WebSocket listener: see
// docs/performance.md). TCP has no message boundaries, so the subscriber cuts the stream at the
// end of its last complete packet and counts markers in that prefix (a marker is never split).
// The publisher writes a batch as many PUBLISH packets in one write.
function mqttLength(n) {
  const out = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    out.push(byte);
  } while (n > 0);
  return Buffer.from(out);
}
function mqttString(s) {
  const b = Buffer.from(s);
  const len = Buffer.alloc(2);
  len.writeUInt16BE(b.length);
  return Buffer.concat([len, b]);
}
function mqttPacket(first, ...parts) {
  const rest = Buffer.concat(parts);
  return Buffer.concat([Buffer.from([first]), mqttLength(rest.length), rest]);
}
// The end of the last complete packet in buf (0 when none is complete).
function mqttComplete(buf) {
  let i = 0;
  let end = 0;
  while (i + 1 < buf.length) {
    let len = 0;
    let mul = 1;
    let j = i + 1;
    for (;;) {
      if (j >= buf.length) return end;
      const byte = buf[j++];
      len += (byte & 0x7f) * mul;
      mul *= 128;
      if ((byte & 0x80) === 0) break;
    }
    if (j + len > buf.length) return end;
    i = end = j + len;
  }
  return end;
}
let mqttClients = 0;
const mqtt = {
  _connect(what, onPacketData) {
    const url = new URL(spec.url);
    return new Promise((resolve, reject) => {
      const sock = net.connect({ host: url.hostname, port: Number(url.port) });
      sock.setNoDelay(true);
      sock.terminate = () => sock.destroy();
      failOn(sock, reject, what);
      let pending = Buffer.alloc(0);
      let connected = false;
      sock.on('connect', () => {
        const clientId = `wsq-bench-${process.pid}-${mqttClients++}`;
        // CONNECT: protocol "MQTT" level 4, clean session, keep-alive 0 (off)
        sock.write(mqttPacket(0x10, mqttString('MQTT'), Buffer.from([4, 0x02, 0, 0]),
          mqttString(clientId)));
      });
      sock.on('data', (chunk) => {
        const buf = pending.length ? Buffer.concat([pending, chunk]) : chunk;
        const end = mqttComplete(buf);
        pending = end < buf.length ? buf.subarray(end) : Buffer.alloc(0);
        if (end === 0) return;
        const done = buf.subarray(0, end);
        if (!connected) {
          if (done[0] !== 0x20 || done[3] !== 0) {
            reject(new Error(`${what}: CONNACK refused (${done.subarray(0, 4).toString('hex')})`));
            return;
          }
          connected = true;
          resolve(sock);
          if (end > 4) onPacketData(done.subarray(4));
          return;
        }
        onPacketData(done);
      });
    });
  },
  async subscribe(address) {
    let subacked = null;
    let counting = false;
    const sock = await mqtt._connect('mqtt subscriber', (data) => {
      if (counting) received(data);
      else if (data[0] === 0x90) subacked?.();
    });
    await new Promise((resolve) => {
      subacked = resolve;
      sock.write(mqttPacket(0x82, Buffer.from([0, 1]), mqttString(address), Buffer.from([0])));
    });
    counting = true;
    return sock;
  },
  async publisher(address) {
    const sock = await mqtt._connect('mqtt publisher', () => {});
    const topic = mqttString(address);
    return {
      async send(bodies) {
        const packets = bodies.map((b) => mqttPacket(0x30, topic, Buffer.from(b)));
        if (!sock.write(Buffer.concat(packets))) {
          await new Promise((r) => sock.once('drain', r));
        }
      },
    };
  },
};

// AMQP 1.0 over WebSocket (subprotocol amqp) with rhea, the standard protocol's own client:
// SASL PLAIN with the token as password, a pre-settled receiver with rhea's credit window, a
// sender publishing each body as a data section of application/json. rhea decodes every
// delivery (a client must), so the generator counts a delivery per rhea message, handing
// received() the marker and timestamp it would have found in a wsq.v1 frame.
const amqp = {
  _connect(what) {
    return new Promise((resolve, reject) => {
      let socket = null;
      function Impl(url, protocols) {
        socket = connect(url, protocols);
        return socket;
      }
      const container = rhea.create_container();
      const conn = container.connect({
        connection_details: container.websocket_connect(Impl)(spec.url, ['amqp']),
        username: 'wsq-bench',
        password: spec.token,
        reconnect: false,
      });
      conn.once('connection_open', () => resolve({ conn, socket }));
      conn.once('connection_error', (ctx) => reject(new Error(`${what}: ${ctx.connection.error?.description}`)));
      conn.once('disconnected', (ctx) => reject(new Error(`${what}: ${ctx.error?.message ?? 'disconnected'}`)));
    });
  },
  async subscribe(address) {
    const { conn, socket } = await amqp._connect('amqp subscriber');
    const r = conn.open_receiver({ source: { address }, snd_settle_mode: 1, credit_window: 10000 });
    r.on('message', (ctx) => {
      const b = ctx.message.body;
      received(Buffer.from(`"b@":${b['b@']},"t":${b.t},`));
    });
    await new Promise((resolve, reject) => {
      r.once('receiver_open', resolve);
      r.once('receiver_error', (ctx) => reject(new Error(`amqp receiver: ${ctx.receiver.error?.condition}`)));
    });
    return socket;
  },
  async publisher(address) {
    const { conn } = await amqp._connect('amqp publisher');
    const s = conn.open_sender(address);
    s.on('rejected', (ctx) => { throw new Error(`publish refused: ${JSON.stringify(ctx.delivery.remote_state)}`); });
    await new Promise((resolve) => s.once('sendable', resolve));
    return {
      async send(bodies) {
        for (const b of bodies) {
          while (!s.sendable()) await new Promise((r) => s.once('sendable', r));
          s.send({ body: rhea.message.data_section(Buffer.from(b)), content_type: 'application/json' });
        }
      },
    };
  },
};

const adapter = { wsq, amqp, raw, nats, socketio, stomp, mqtt }[spec.adapter];
if (!adapter) throw new Error(`unknown adapter ${spec.adapter}`);

// -- helpers ---------------------------------------------------------------------------------
const PAD = 'x'.repeat(200);
function body(seq, t) {
  // About spec.size bytes of JSON, the marker first.
  const head = `{"b@":${seq},"t":${t.toFixed(3)},"p":"`;
  return head + PAD.slice(0, Math.max(0, spec.size - head.length - 2)) + '"}';
}

async function subscribeAll(address, n, concurrency) {
  const sockets = new Array(n);
  let next = 0;
  async function worker() {
    while (next < n) {
      const i = next++;
      sockets[i] = await adapter.subscribe(address);
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  return sockets;
}

// The bytes the subscribers' TCP sockets have read so far (frames as they came off the wire:
// compressed, with WebSocket headers): the bench's "bytes on the wire per delivery".
function bytesRead(sockets) {
  let n = 0;
  for (const s of sockets) n += (s._socket ?? s).bytesRead ?? 0;
  return n;
}

function closeAll(sockets) {
  for (const ws of sockets) {
    ws.removeAllListeners('close');
    ws.removeAllListeners('error');
    ws.on('error', () => {});
    ws.terminate();
  }
}

function withTimeout(promise, seconds, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: timed out after ${seconds} s`)), seconds * 1000);
    }),
  ]).finally(() => clearTimeout(timer));
}

// -- scenarios -------------------------------------------------------------------------------
async function fanout() {
  // `rounds` rounds of `messages` messages on the same subscribers; each round is measured
  // on its own (marks start:R / end:R) so that the bench can take the median round.
  const { subs, messages, batch, window } = spec;
  const rounds = spec.rounds ?? 1;
  const sockets = await subscribeAll(spec.address, subs, spec.concurrency);
  const pub = await adapter.publisher(spec.address);
  const results = [];
  let seq = 0;
  for (let r = 0; r < rounds; r++) {
    // A round publishes `messages` messages, again and again until it has lasted at least
    // `min_seconds`: a fast system is measured over as long a window as a slow one.
    const base = delivered;
    let total = 0;
    await mark(`start:${r}`);
    const wire0 = bytesRead(sockets);
    const t0 = now();
    const run = (async () => {
      do {
        const passBase = base + total;
        total += subs * messages;
        let sent = 0;
        for (let k = 0; sent < messages; k++) {
          // At most `window` batches in flight: batch k goes once batch k-window has arrived.
          await untilDelivered(passBase + Math.max(0, (k - window + 1) * batch * subs));
          const bodies = [];
          const t = now();
          for (let i = 0; i < batch && sent < messages; i++, sent++) bodies.push(body(seq++, t));
          await pub.send(bodies);
        }
        await untilDelivered(base + total);
      } while ((now() - t0) / 1000 < (spec.min_seconds ?? 0));
    })();
    let error = null;
    try {
      await withTimeout(run, spec.timeout, 'fan-out');
    } catch (e) {
      error = e.message;
    }
    const elapsed = (now() - t0) / 1000;
    const wire = bytesRead(sockets) - wire0;
    await mark(`end:${r}`);
    const got = delivered - base;
    results.push({
      delivered: got, expected: total, seconds: elapsed, msgs_per_s: got / elapsed,
      wire_bytes: wire, wire_bytes_per_delivery: got ? wire / got : null,
      complete: got >= total, error,
    });
    if (error) break;
    await new Promise((res) => setTimeout(res, 200));
  }
  closeAll(sockets);
  return { subs, messages, batch, window, rounds: results };
}

async function latency() {
  const { subs, rate, duration } = spec;
  const messages = Math.round(rate * duration);
  const warmup = Math.floor(messages / 10);
  const samples = new Float64Array(subs * messages);
  let n = 0;
  onLatency = (buf) => {
    const t1 = now();
    let i = buf.indexOf(MARKER);
    while (i !== -1) {
      delivered++;
      const comma = buf.indexOf(44, i + 5); // ','
      const seq = Number(buf.toString('latin1', i + 5, comma));
      const ti = buf.indexOf(T_FIELD, comma);
      const end = buf.indexOf(44, ti + 4);
      if (seq >= warmup && n < samples.length) {
        samples[n++] = t1 - Number(buf.toString('latin1', ti + 4, end));
      }
      i = buf.indexOf(MARKER, end);
    }
  };
  const sockets = await subscribeAll(spec.address, subs, spec.concurrency);
  const pub = await adapter.publisher(spec.address);
  const tickMs = 10;
  await mark('start');
  const t0 = now();
  let sent = 0;
  let error = null;
  try {
    await withTimeout((async () => {
      while (sent < messages) {
        const due = Math.min(messages, Math.floor(((now() - t0) / 1000) * rate) + 1);
        if (due > sent) {
          const bodies = [];
          const t = now();
          while (sent < due) bodies.push(body(sent++, t));
          await pub.send(bodies);
        }
        await new Promise((r) => setTimeout(r, tickMs));
      }
      await untilDelivered(subs * messages);
    })(), duration + spec.timeout, 'latency');
  } catch (e) {
    error = e.message;
  }
  const elapsed = (now() - t0) / 1000;
  await mark('end');
  closeAll(sockets);
  const lat = samples.subarray(0, n).sort();
  const pct = (p) => (n ? lat[Math.min(n - 1, Math.floor(p * n))] : null);
  return {
    subs, rate, duration, delivered, expected: subs * messages, seconds: elapsed,
    deliveries_per_s: delivered / elapsed, samples: n,
    p50_ms: pct(0.5), p99_ms: pct(0.99), max_ms: n ? lat[n - 1] : null,
    complete: delivered >= subs * messages, error,
  };
}

async function idle() {
  const { conns, concurrency } = spec;
  await mark('before');
  const t0 = now();
  const sockets = await withTimeout(
    subscribeAll(spec.address, conns, concurrency), spec.timeout, 'connect');
  const seconds = (now() - t0) / 1000;
  // Let the server settle (lazy allocations, GC) before its RSS is read.
  await new Promise((r) => setTimeout(r, spec.settle_ms ?? 1000));
  await mark('after');
  closeAll(sockets);
  return { conns, connect_seconds: seconds, connects_per_s: conns / seconds };
}

const scenarios = { fanout, latency, idle };
try {
  const result = await scenarios[spec.scenario]();
  emit({ result: { ...result, offered, extensions: negotiated } });
  process.exit(0);
} catch (e) {
  emit({ error: String(e?.stack || e) });
  process.exit(1);
}
