// src/http_socket.js, the details http_socket.test.js leaves: the stream URL, the event-stream
// syntax (CRLF, "data:" with and without its space, multi-line data, event names), the stream's
// numbering from the server's seq, how batches are joined, the retries' bound, 503 and close().
import assert from "node:assert/strict";
import { test } from "node:test";
import { HTTP_SOCKET_STATES, HttpSocket, streamUrl } from "../../src/http_socket.js";

const tick = async () => {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
};

function scripted() {
  const posts = [];
  let push = null;
  let end = null;
  const fetch = async (url, init) => {
    if (url.endsWith("/v1/stream")) {
      fetch.opening = init;
      fetch.openUrl = url;
      const body = new ReadableStream({
        start(controller) {
          push = (text) => {
            try {
              controller.enqueue(typeof text === "string" ? new TextEncoder().encode(text) : text);
            } catch {
              // the stream failed already (aborted)
            }
          };
          end = () => controller.close();
          // As a real fetch does: the body fails once the request is aborted.
          init.signal.addEventListener("abort", () => controller.error(new DOMException("aborted", "AbortError")));
        },
      });
      return new Response(body, { status: 200 });
    }
    return new Promise((resolve, reject) => {
      posts.push({ url, init, seq: init.headers["wsq-seq"], body: init.body, resolve, reject });
    });
  };
  return { fetch, posts, push: (t) => push(t), end: () => end() };
}

async function opened(maxBytes) {
  const net = scripted();
  const ws = new HttpSocket("wss://gw.example/base/ws/", "wsq.v1", { fetch: net.fetch, maxBytes });
  const received = [];
  const closes = [];
  const opens = [];
  ws.onopen = (e) => opens.push(e.type);
  ws.onmessage = (event) => received.push(event.data);
  ws.onclose = (event) => closes.push([event.code, event.wasClean]);
  assert.equal(ws.readyState, 0);
  assert.throws(() => ws.send("x"), { message: "the stream is not open" });
  await tick();
  assert.deepEqual(opens, ["open"]);
  ws.send('{"op":"open"}');
  await tick();
  return { net, ws, received, closes };
}

test("the stream's URL beside the WebSocket's", () => {
  assert.equal(streamUrl("ws://h/ws"), "http://h/v1/stream");
  assert.equal(streamUrl("wss://h:8443/ws"), "https://h:8443/v1/stream");
  assert.equal(streamUrl("ws://h/a/ws/?x=1#f"), "http://h/a/v1/stream");
  assert.equal(streamUrl("ws://h/wsx"), "http://h/wsx/v1/stream");
  assert.equal(streamUrl("ws://h/"), "http://h/v1/stream");
  assert.equal(streamUrl("ws://h"), "http://h/v1/stream");
  assert.equal(streamUrl("ws://h/a/"), "http://h/a/v1/stream");
  assert.deepEqual(HTTP_SOCKET_STATES, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
  assert.throws(() => new HttpSocket("ws://h/ws", "p", { fetch: 5 }), { name: "TypeError", message: "no fetch implementation" });
});

test("the opening request", async () => {
  const { net, ws } = await opened();
  assert.equal(net.fetch.openUrl, "https://gw.example/base/v1/stream");
  assert.equal(ws.url, "https://gw.example/base/v1/stream");
  assert.equal(ws.protocol, "wsq.v1");
  const init = net.fetch.opening;
  assert.equal(init.method, "POST");
  assert.equal(init.body, '{"op":"open"}');
  assert.deepEqual(init.headers, { "content-type": "application/json", accept: "text/event-stream" });
  assert.equal(init.cache, "no-store");
  assert.ok(init.signal instanceof AbortSignal);
});

test("event-stream syntax: CRLF, data with or without a space, lines joined, events named", async () => {
  const { net, received } = await opened();
  net.push("event: stream\r\ndata: {\"id\":\"i\",\"secret\":\"s\"}\r\n\r\n");
  net.push("data:{\"a\":1}\n\n");
  net.push("data: [1,\ndata: 2]\n\n");
  net.push("event:  other \ndata: x\n\n");
  net.push("id: 5\nretry: 10\n\n"); // no data: no event
  net.push("data: spl");
  net.push("it\n\n");
  await tick();
  assert.deepEqual(received, ['{"a":1}', "[1,\n2]", "x", "split"]);
});

test("POSTs numbered from the server's seq; headers; messages gathered without empty batches", async () => {
  const { net, ws } = await opened();
  net.push('event: stream\ndata: {"id":"a b","secret":"s3","seq":7}\n\n');
  ws.send("[]");
  await tick();
  const [first] = net.posts;
  assert.equal(first.url, "https://gw.example/base/v1/stream/a%20b");
  assert.equal(first.seq, "7");
  assert.deepEqual(first.init.headers, { "content-type": "application/json", "wsq-stream-secret": "s3", "wsq-seq": "7" });
  assert.equal(first.init.method, "POST");
  assert.equal(first.init.cache, "no-store");
  assert.equal(first.body, "[]");
  ws.send("[]");
  ws.send(' [ {"op":"a"} ] ');
  ws.send("[]");
  ws.send('{"op":"b"}');
  first.resolve(new Response(null, { status: 204 }));
  await tick();
  assert.equal(net.posts[1].seq, "8");
  assert.equal(net.posts[1].body, '[{"op":"a"},{"op":"b"}]');
  net.posts[1].resolve(new Response(null, { status: 200 }));
  await tick();
  assert.equal(net.posts.length, 2, "nothing left to post");
  ws.send('{"op":"c"}');
  await tick();
  assert.equal(net.posts[2].body, '{"op":"c"}', "alone: as it is");
  assert.equal(net.posts[2].seq, "9");
});

test("a stream without seq numbers its POSTs from 1", async () => {
  const { net, ws } = await opened();
  net.push('event: stream\ndata: {"id":7,"secret":"s"}\n\n');
  ws.send("[]");
  await tick();
  assert.equal(net.posts[0].seq, "1");
  assert.equal(net.posts[0].url.endsWith("/7"), true);
});

test("a POST gathers up to 64 KiB at most, whatever the gateway's limit", async () => {
  const { net, ws } = await opened(() => 10 << 20);
  net.push('event: stream\ndata: {"id":"i","secret":"s"}\n\n');
  ws.send("[]");
  await tick();
  const part = `"${"x".repeat(30000)}"`; // 30,002 bytes
  ws.send(part);
  ws.send(part);
  ws.send(part);
  net.posts[0].resolve(new Response(null, { status: 204 }));
  await tick();
  // 2 + 30,002 + 1 + 30,002 = 60,007; a third makes 90,010 > 65,536.
  assert.equal(net.posts[1].body, `[${part},${part}]`);
  net.posts[1].resolve(new Response(null, { status: 204 }));
  await tick();
  assert.equal(net.posts[2].body, part);
});

test("a POST that gets no answer is tried three more times, then the stream is closed", async () => {
  const { net, ws, closes } = await opened();
  net.push('event: stream\ndata: {"id":"i","secret":"s"}\n\n');
  ws.send("[]");
  await tick();
  for (let i = 0; i < 3; i++) {
    net.posts.at(-1).reject(new TypeError("network"));
    await tick();
    assert.equal(net.posts.length, i + 2);
    assert.equal(net.posts.at(-1).seq, "1");
  }
  assert.equal(ws.readyState, 1);
  net.posts.at(-1).reject(new TypeError("network"));
  await tick();
  assert.equal(net.posts.length, 4);
  assert.equal(ws.readyState, 3);
  assert.deepEqual(closes, [[1006, false]]);
});

test("a POST answered after close is not sent again", async () => {
  const { net, ws } = await opened();
  net.push('event: stream\ndata: {"id":"i","secret":"s"}\n\n');
  ws.send("[]");
  await tick();
  ws.close();
  net.posts[0].reject(new TypeError("aborted"));
  await tick();
  assert.equal(net.posts.length, 1);
});

test("close: 1000 by default, clean; once; messages after it are not delivered", async () => {
  const { net, ws, received, closes } = await opened();
  ws.close();
  assert.equal(ws.readyState, 2);
  ws.close(4000);
  net.push("data: late\n\n");
  await tick();
  assert.equal(ws.readyState, 3);
  assert.deepEqual(closes, [[1000, true]]);
  assert.deepEqual(received, []);
  ws.close();
  await tick();
  assert.deepEqual(closes, [[1000, true]]);
});

test("close with another code: not clean", async () => {
  const { ws, closes } = await opened();
  ws.close(4001);
  await tick();
  assert.deepEqual(closes, [[4001, false]]);
});

test("an opening refused with 503 closes with 1013; a body-less 200 with 1006", async () => {
  for (const [response, code] of [
    [new Response("busy", { status: 503 }), 1013],
    [new Response(null, { status: 200 }), 1006],
  ]) {
    const ws = new HttpSocket("ws://h/ws", "wsq.v1", { fetch: async () => response });
    const closes = [];
    const errors = [];
    ws.onclose = (e) => closes.push(e.code);
    ws.onerror = (e) => errors.push(e.status);
    await tick();
    ws.send("{}");
    await tick();
    assert.deepEqual(closes, [code]);
    assert.deepEqual(errors, [response.status]);
  }
});

test("a fetch that throws at once closes with 1006", async () => {
  const ws = new HttpSocket("ws://h/ws", "wsq.v1", {
    fetch: () => {
      throw new TypeError("blocked");
    },
  });
  const closes = [];
  ws.onclose = (e) => closes.push(e.code);
  await tick();
  ws.send("{}");
  await tick();
  assert.deepEqual(closes, [1006]);
});

test("closed before it opened: never opens", async () => {
  const ws = new HttpSocket("ws://h/ws", "wsq.v1", { fetch: async () => new Response(null) });
  const events = [];
  ws.onopen = () => events.push("open");
  ws.onclose = (e) => events.push(["close", e.code]);
  ws.close(1000);
  await tick();
  assert.deepEqual(events, [["close", 1000]]);
});

test("a character split across chunks; a field after event: is not a name", async () => {
  const { net, received } = await opened();
  const bytes = new TextEncoder().encode("data: é€\n\n");
  net.push(bytes.slice(0, 7)); // "data: " and the first byte of é
  net.push(bytes.slice(7, 10));
  net.push(bytes.slice(10));
  net.push('event: stream\nid: 3\ndata: {"id":"i","secret":"s"}\n\n');
  await tick();
  assert.deepEqual(received, ["é€"], "the stream event, named before its id field, is not a message");
});

test("events: type message; no handler needed, nor for close and error", async () => {
  const net = scripted();
  const ws = new HttpSocket("ws://h/ws", "wsq.v1", { fetch: net.fetch });
  await tick();
  ws.send("{}");
  await tick();
  net.push("data: x\n\n");
  await tick();
  assert.equal(ws.readyState, 1);
  const types = [];
  ws.onmessage = (e) => types.push(e.type);
  net.push("data: y\n\n");
  await tick();
  assert.deepEqual(types, ["message"]);
  ws.close();
  await tick();
  assert.equal(ws.readyState, 3);
  const refused = new HttpSocket("ws://h/ws", "wsq.v1", { fetch: async () => new Response("", { status: 503 }) });
  const codes = [];
  refused.onclose = (e) => codes.push([e.code, e.reason, e.type]);
  await tick();
  refused.send("{}");
  await tick();
  assert.deepEqual(codes, [[1013, "", "close"]]);
  const told = new HttpSocket("ws://h/ws", "wsq.v1", { fetch: async () => new Response("", { status: 403 }) });
  const errors = [];
  told.onerror = (e) => errors.push([e.type, e.status]);
  await tick();
  told.send("{}");
  await tick();
  assert.deepEqual(errors, [["error", 403]]);
});

test("closed while the stream is read: one close event", async () => {
  const { ws, closes } = await opened();
  ws.close();
  await tick();
  await tick();
  assert.deepEqual(closes, [[1000, true]]);
});

test("a POST gathers exactly up to its limit, counting the brackets and commas", async () => {
  const send = async (limit, texts) => {
    const { net, ws } = await opened(() => limit);
    net.push('event: stream\ndata: {"id":"i","secret":"s"}\n\n');
    ws.send("[]");
    await tick();
    for (const text of texts) ws.send(text);
    net.posts[0].resolve(new Response(null, { status: 204 }));
    await tick();
    return net.posts[1].body;
  };
  const ten = '"12345678"';
  // [ + 10 + , + 17 + ] = 30: fits a limit of 30 exactly.
  assert.equal(await send(30, [ten, `"${"x".repeat(15)}"`]), `[${ten},"${"x".repeat(15)}"]`);
  // 18 more: 31, one over.
  assert.equal(await send(30, [ten, `"${"x".repeat(16)}"`]), ten);
  // 10 + 1 + 10 + 2 = 23, a third of 1 byte would make 25 > 24.
  assert.equal(await send(24, [ten, ten, "1"]), `[${ten},${ten}]`);
});

