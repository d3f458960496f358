// wsq.v1 over HTTP (docs/protocol.md, "HTTP transport"), for where a WebSocket cannot open: a
// WebSocket-shaped object that Connection drives as it drives a WebSocket. The first message
// sent (the `open`, with whatever is pipelined behind it) is the body of `POST /v1/stream`, whose
// response is an event stream: a `stream` event with the connection's id and secret, then one
// event per message of the server. Every later message goes up in a POST to
// `/v1/stream/{id}`, numbered (`Wsq-Seq`), one POST in flight at a time; messages written while
// one is in flight go in the next, as one batch. A POST whose answer is lost is sent again with
// the same number: the gateway drops what it has taken before, so nothing is applied twice.
//
// It needs `fetch` with a streaming response body (every current browser, Node 20).

import { utf8Length } from "./wire.js";

const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;
/** Bytes one POST gathers from the messages waiting (a single larger message goes alone). */
const POST_BYTES = 64 * 1024;
/** Times a POST that got no answer (a network error) is sent again before the stream is given up. */
const POST_RETRIES = 3;

/** The stream's URL beside a gateway's WebSocket URL: ws://host/ws -> http://host/v1/stream. */
export function streamUrl(wsUrl) {
  const url = new URL(wsUrl);
  url.protocol = url.protocol === "wss:" ? "https:" : "http:";
  // "ws://h/" and "ws://h/a/" too: no slash doubled before the stream's path
  url.pathname = url.pathname.replace(/\/ws\/?$/, "").replace(/\/+$/, "") + "/v1/stream";
  url.search = url.hash = "";
  return url.href;
}

/** A message (a frame or a batch) as the frames of a batch, without the brackets. */
function inner(text) {
  const t = text.trim();
  if (!t.startsWith("[")) return t;
  return t.slice(1, -1).trim();
}

export class HttpSocket {
  constructor(url, protocol, { fetch: fetchImpl = globalThis.fetch, maxBytes = () => POST_BYTES } = {}) {
    if (typeof fetchImpl !== "function") throw new TypeError("no fetch implementation");
    this.url = streamUrl(url);
    this.protocol = protocol; // what the gateway speaks here, as a WebSocket's handshake says
    this.readyState = CONNECTING;
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    // Called unbound: a browser's fetch refuses any `this` but the window ("Illegal invocation").
    this._fetch = (...args) => fetchImpl(...args);
    // The gateway's max_frame_bytes (as its open answer said): a POST gathers no more.
    this._maxBytes = maxBytes;
    this._abort = new AbortController();
    this._id = null;
    this._secret = null;
    this._seq = 0;
    this._queue = []; // messages waiting for the stream's id, or for the POST in flight
    this._posting = false;
    this._started = false;
    this._closeCode = 1006;
    // Open at once (a WebSocket's handshake): the first message sent opens the stream.
    queueMicrotask(() => {
      if (this.readyState !== CONNECTING) return;
      this.readyState = OPEN;
      this.onopen?.({ type: "open" });
    });
  }

  send(text) {
    if (this.readyState !== OPEN) throw new Error("the stream is not open");
    if (!this._started) {
      this._started = true;
      this._stream(String(text));
      return;
    }
    this._queue.push(String(text));
    this._post();
  }

  close(code = 1000) {
    if (this.readyState === CLOSED || this.readyState === CLOSING) return;
    this._closeCode = code;
    this.readyState = CLOSING;
    this._abort.abort();
    queueMicrotask(() => this._closed(code));
  }

  _closed(code) {
    if (this.readyState === CLOSED) return;
    this.readyState = CLOSED;
    this._abort.abort();
    this.onclose?.({ type: "close", code, reason: "", wasClean: code === 1000 });
  }

  // -- down: the event stream ------------------------------------------------------------

  async _stream(first) {
    let response;
    try {
      response = await this._fetch(this.url, {
        method: "POST",
        body: first,
        headers: { "content-type": "application/json", accept: "text/event-stream" },
        cache: "no-store",
        signal: this._abort.signal,
      });
      if (!response.ok || !response.body) {
        // Refused before it opened (origin, draining, a body too large): like a failed handshake.
        this.onerror?.({ type: "error", status: response.status });
        this._closed(response.status === 503 ? 1013 : 1006);
        return;
      }
      await this._read(response.body.getReader());
      this._closed(1000); // the server ended the response: its close was the last event
    } catch {
      this._closed(this._closeCode);
    }
  }

  async _read(reader) {
    const decoder = new TextDecoder();
    let buffer = "";
    let name = "";
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, end).replace(/\r$/, "");
        buffer = buffer.slice(end + 1);
        if (line === "") {
          if (data.length) this._event(name, data.join("\n"));
          name = "";
          data = [];
        } else if (line.startsWith("data:")) {
          data.push(line.slice(line[5] === " " ? 6 : 5));
        } else if (line.startsWith("event:")) {
          name = line.slice(6).trim();
        } // comments (":") and other fields are ignored, as in an EventSource
      }
    }
  }

  _event(name, data) {
    if (this.readyState !== OPEN) return;
    if (name === "stream") {
      const hello = JSON.parse(data);
      this._id = String(hello.id);
      this._secret = String(hello.secret);
      this._seq = Number(hello.seq ?? 1) - 1;
      this._post();
      return;
    }
    this.onmessage?.({ type: "message", data });
  }

  // -- up: numbered POSTs ----------------------------------------------------------------

  /** The messages waiting, as one message of at most POST_BYTES and the gateway's
   * max_frame_bytes, in UTF-8 bytes (or the first alone: Connection kept it under the latter). */
  _take() {
    const first = this._queue.shift();
    if (!this._queue.length) return first;
    const limit = Math.min(POST_BYTES, this._maxBytes());
    const parts = [inner(first)];
    let size = utf8Length(first) + 2;
    while (this._queue.length && size + utf8Length(this._queue[0]) + 1 <= limit) {
      const next = this._queue.shift();
      size += utf8Length(next) + 1;
      parts.push(inner(next));
    }
    if (parts.length === 1) return first;
    return `[${parts.filter((p) => p !== "").join(",")}]`;
  }

  async _post() {
    if (this._posting || this._id === null || !this._queue.length) return;
    this._posting = true;
    const body = this._take();
    const seq = ++this._seq;
    const url = `${this.url}/${encodeURIComponent(this._id)}`;
    let failures = 0;
    try {
      for (;;) {
        if (this.readyState !== OPEN) return;
        let response;
        try {
          response = await this._fetch(url, {
            method: "POST",
            body,
            headers: {
              "content-type": "application/json",
              "wsq-stream-secret": this._secret,
              "wsq-seq": String(seq),
            },
            cache: "no-store",
            signal: this._abort.signal,
          });
        } catch {
          if (++failures > POST_RETRIES) throw new Error("POST failed");
          continue; // no answer: the same number again (the gateway drops a repeat)
        }
        if (!response.ok) throw new Error(`POST answered ${response.status}`);
        break;
      }
    } catch {
      // The stream is gone (404), refused what we sent, or cannot be reached: like a lost socket.
      this.close(1006);
      return;
    } finally {
      this._posting = false;
    }
    this._post();
  }
}

export const HTTP_SOCKET_STATES = { CONNECTING, OPEN, CLOSING, CLOSED };
