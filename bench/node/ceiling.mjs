// The ceiling server: a wsq.v1 relay doing the least any gateway could do.
//
// It answers open / begin / attach (and a sender's flow), and turns each publish batch into ONE
// pre-encoded array of transfers that it sends, as the same bytes, to every subscriber: no
// per-subscriber encoding, no credit, no storage. Every subscriber of the bench attaches on the
// same channel and handle before the publisher starts, so one delivery numbering is valid for
// all of them. No real gateway can beat this on the same machine; the bench reports every
// system as a ratio to it.
//
// With --bare it sends only the bodies (`[body,body,...]`), no transfer envelope: not valid
// wsq.v1, but it tells how much of a gap to a leaner protocol is the framing of wsq.v1 itself.
//
// With --compact it sends each batch as one compact frame (`transfers`, docs/protocol.md 6.4) of
// compact rows: the first `["<id>",body,{"ts":ms,"publisher":"bench"}]`, each next one `[body]`
// (the ids of a batch are consecutive: one ms per batch, seq one higher each). The ceiling of a
// gateway speaking the compact form with rows (it answers `rows` as it answers `compact`).
//
// With --deflate it accepts permessage-deflate with ws's defaults (context kept, every message
// compressed): each subscriber's socket compresses its own copy of the batch, so the
// one-encoding-for-all stops at the compressor. The cheapest compressed wsq.v1 relay.
//
// Usage: node ceiling.mjs PORT [--bare | --compact] [--deflate]
import { WebSocketServer } from 'ws';

const port = Number(process.argv[2] || 0);
const bare = process.argv.includes('--bare');
const compact = process.argv.includes('--compact');
const perMessageDeflate = process.argv.includes('--deflate');
const SENDER_CREDIT = 256;

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port,
  path: '/ws',
  perMessageDeflate,
  skipUTF8Validation: true,
  handleProtocols: (protocols) => (protocols.has('wsq.v1') ? 'wsq.v1' : false),
});

const subscribers = new Set();
let recvCh = 1;
let recvHandle = 0;
let delivery = 0;
let seq = 0;

function relay(ws, transfers) {
  const ms = Date.now();
  const first = transfers[0];
  const parts = new Array(transfers.length);
  const ids = new Array(transfers.length);
  for (let i = 0; i < transfers.length; i++) {
    const id = `${ms}-${seq++}`;
    ids[i] = id;
    const body = JSON.stringify(transfers[i].body);
    parts[i] = bare ? body :
      compact ? (i === 0 ? `["${id}",${body},{"ts":${ms},"publisher":"bench"}]` : `[${body}]`) :
      `{"op":"transfer","ch":${recvCh},"handle":${recvHandle},"delivery":${delivery++},` +
      `"id":"${id}","settled":true,"body":${body},` +
      `"props":{"ts":${ms},"publisher":"bench"}}`;
  }
  let text;
  if (compact) {
    text = `{"op":"transfers","ch":${recvCh},"handle":${recvHandle},"settled":true,` +
      `"delivery":${delivery},"msgs":[${parts.join(',')}]}`;
    delivery += parts.length;
  } else {
    text = '[' + parts.join(',') + ']';
  }
  const batch = Buffer.from(text);
  for (const sub of subscribers) sub.send(batch, { binary: false });
  const answer = [];
  if (!first.settled) {
    answer.push({
      op: 'disposition', ch: first.ch, first: first.delivery,
      last: transfers[transfers.length - 1].delivery, outcome: 'accepted', ids,
    });
  }
  answer.push({ op: 'flow', ch: first.ch, handle: first.handle, credit: transfers.length });
  ws.send(JSON.stringify(answer));
}

wss.on('connection', (ws) => {
  ws.on('message', (data) => {
    let value;
    try {
      value = JSON.parse(data);
    } catch {
      ws.close(1007);
      return;
    }
    const frames = Array.isArray(value) ? value : [value];
    const out = [];
    const transfers = [];
    for (const f of frames) {
      switch (f.op) {
        case 'open':
          out.push({
            op: 'open', node: 'ceiling', idle: 30000, max_sessions: 1024,
            max_frame_bytes: 1048576, tenant: 'bench', sub: 'bench',
            exp: Math.floor(Date.now() / 1000) + 3600,
            ...(f.compact === undefined ? {} : { compact: compact && f.compact === true }),
            ...(f.rows === undefined ? {} : { rows: compact && f.compact === true && f.rows === true }),
          });
          break;
        case 'begin':
          out.push({ op: 'begin', ch: f.ch });
          break;
        case 'attach':
          if (f.role === 'receiver') {
            recvCh = f.ch;
            recvHandle = f.handle;
            subscribers.add(ws);
            out.push({
              op: 'attach', ch: f.ch, handle: f.handle, role: 'receiver', address: f.address,
              mode: 'copy', from: '0-0', recovered: true, settled: true,
            });
          } else {
            out.push({ op: 'attach', ch: f.ch, handle: f.handle, role: 'sender', address: f.address });
            out.push({ op: 'flow', ch: f.ch, handle: f.handle, credit: SENDER_CREDIT });
          }
          break;
        case 'transfer':
          transfers.push(f);
          break;
        case 'close':
          out.push({ op: 'close' });
          break;
        default:
          break; // flow, disposition, heartbeats: nothing to do
      }
    }
    if (out.length) ws.send(JSON.stringify(out));
    if (transfers.length) relay(ws, transfers);
  });
  ws.on('close', () => subscribers.delete(ws));
  ws.on('error', () => subscribers.delete(ws));
});

wss.on('listening', () => console.log(`ceiling listening on ${wss.address().port}`));
