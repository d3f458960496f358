// What a Node user writes: a `ws` server relaying every message a publisher sends on /pub to
// every socket connected on /sub, one WebSocket frame per message. A subscriber is told "ok"
// once it is registered, so that the bench never publishes before it counts.
//
// With --deflate it accepts permessage-deflate with ws's own defaults (`perMessageDeflate: true`:
// what a Node user turning it on writes): context kept, so every message is compressed (ws 8
// applies its 1 KiB `threshold` only under no_context_takeover).
//
// Usage: node broadcast.mjs PORT [--deflate]
import { WebSocketServer } from 'ws';

const port = Number(process.argv[2] || 0);
const perMessageDeflate = process.argv.includes('--deflate');
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate });
const subscribers = new Set();

wss.on('connection', (ws, req) => {
  if (req.url === '/sub') {
    subscribers.add(ws);
    ws.on('close', () => subscribers.delete(ws));
    ws.on('error', () => subscribers.delete(ws));
    ws.send('ok');
    return;
  }
  ws.on('message', (data, isBinary) => {
    for (const sub of subscribers) sub.send(data, { binary: isBinary });
  });
});

wss.on('listening', () => console.log(`node-ws broadcaster listening on ${wss.address().port}`));
