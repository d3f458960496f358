// src/http_socket.js on its own, against a scripted fetch: the opening request, the numbered
// POSTs (one in flight, what waits gathered into the next within the byte limit), a POST
// retried with its number after a network error, and the end of the stream.
import assert from "node:assert/strict";
import { test } from "node:test";
import { HttpSocket } from "../../src/http_socket.js";

const tick = () => new Promise((resolve) => setTimeout(resolve, 5));

/** A fetch whose stream response the test feeds, and whose POSTs it answers by hand. */
function scripted() {
  const posts = [];
  let push = null;
  let end = null;
  const fetch = async (url, init) => {
    if (url.endsWith("/v1/stream")) {
      const body = new ReadableStream({
        start(controller) {
          push = (text) => controller.enqueue(new TextEncoder().encode(text));
          end = () => controller.close();
        },
      });
      fetch.opening = init.body;
      return new Response(body, { status: 200 });
    }
    return new Promise((resolve, reject) => {
      posts.push({ url, init, seq: init.headers["wsq-seq"], body: init.body, resolve, reject });
    });
  };
  return { fetch, posts, push: (t) => push(t), end: () => end() };
}

async function opened(maxBytes = () => 1 << 20) {
  const net = scripted();
  const ws = new HttpSocket("ws://gw.example/ws", "wsq.v1", { fetch: net.fetch, maxBytes });
  const received = [];
  const closes = [];
  ws.onmessage = (event) => received.push(event.data);
  ws.onclose = (event) => closes.push(event.code);
  await tick();
  assert.equal(ws.readyState, 1);
  ws.send('{"op":"open"}');
  await tick();
  return { net, ws, received, closes };
}

test("the first message opens the stream; events become messages", async () => {
  const { net, received } = await opened();
  assert.equal(net.fetch.opening, '{"op":"open"}');
  net.push('event: stream\ndata: {"id":"abc","secret":"s3","seq":1}\n\n');
  net.push('data: {"op":"open"}\n\ndata: []\n\n: a comment\n\n');
  await tick();
  assert.deepEqual(received, ['{"op":"open"}', "[]"]);
});

test("POSTs are numbered, one in flight; what waits goes in the next, as one batch", async () => {
  const { net, ws } = await opened();
  ws.send('{"op":"begin","ch":1}'); // before the id is known: waits
  net.push('event: stream\ndata: {"id":"abc","secret":"s3","seq":1}\n\n');
  await tick();
  assert.equal(net.posts.length, 1);
  const [first] = net.posts;
  assert.equal(first.url, "http://gw.example/v1/stream/abc");
  assert.equal(first.init.headers["wsq-stream-secret"], "s3");
  assert.equal(first.seq, "1");
  ws.send('{"op":"begin","ch":2}');
  ws.send('[{"op":"begin","ch":3},{"op":"begin","ch":4}]');
  ws.send("[]");
  await tick();
  assert.equal(net.posts.length, 1, "one in flight");
  first.resolve(new Response(null, { status: 204 }));
  await tick();
  assert.equal(net.posts.length, 2);
  assert.equal(net.posts[1].seq, "2");
  assert.deepEqual(JSON.parse(net.posts[1].body), [
    { op: "begin", ch: 2 },
    { op: "begin", ch: 3 },
    { op: "begin", ch: 4 },
  ]);
});

test("a POST gathers no more than the gateway's max_frame_bytes", async () => {
  const { net, ws } = await opened(() => 60);
  net.push('event: stream\ndata: {"id":"abc","secret":"s3","seq":1}\n\n');
  ws.send("[]");
  await tick();
  const frame = (ch) => `{"op":"begin","ch":${ch},"pad":"éé"}`; // 33 bytes, 31 characters
  ws.send(frame(1));
  ws.send(frame(2));
  net.posts[0].resolve(new Response(null, { status: 204 }));
  await tick();
  assert.deepEqual(JSON.parse(net.posts[1].body), { op: "begin", ch: 1, pad: "éé" });
  net.posts[1].resolve(new Response(null, { status: 204 }));
  await tick();
  assert.deepEqual(JSON.parse(net.posts[2].body), { op: "begin", ch: 2, pad: "éé" });
});

test("a POST without an answer is sent again with its number; a refused one ends it", async () => {
  const { net, ws, closes } = await opened();
  net.push('event: stream\ndata: {"id":"abc","secret":"s3","seq":1}\n\n');
  ws.send("[]");
  await tick();
  net.posts[0].reject(new TypeError("network error"));
  await tick();
  assert.equal(net.posts.length, 2);
  assert.equal(net.posts[1].seq, "1", "the same number again");
  net.posts[1].resolve(new Response(null, { status: 404 }));
  await tick();
  assert.equal(ws.readyState, 3);
  assert.deepEqual(closes, [1006]);
});

test("the end of the response is a close; a refused opening too", async () => {
  const { net, closes } = await opened();
  net.end();
  await tick();
  assert.deepEqual(closes, [1000]);
  const refusing = async () => new Response("{}", { status: 403 });
  const ws = new HttpSocket("ws://gw.example/ws", "wsq.v1", { fetch: refusing });
  const codes = [];
  ws.onclose = (event) => codes.push(event.code);
  await tick();
  ws.send("{}");
  await tick();
  assert.deepEqual(codes, [1006]);
});
