// One socket: a Connection owns one WebSocket from `open` to its loss. It batches what the client
// sends (under the gateway's max_frame_bytes), heartbeats and notices silence, answers `close`,
// and drops the socket with wsq:invalid-frame when the server breaks the contract (wire.js says
// what breaks it). Its sessions and links are sessions.js's; whether and when to reconnect is
// client.js's business.
//
// It calls back into its client: _lost(conn, {code}) when the socket is gone, _opened(conn) and
// _refreshed(conn, exp) on the server's open and refresh, [EMIT]("error", …); and reads _conn,
// _idle, _connectTimeout, _closeTimeout and _maxFrameBytes.

import { EMIT } from "./emitter.js";
import { WsqError, guarded } from "./errors.js";
import { Sessions } from "./sessions.js";
import {
  SUBPROTOCOL,
  Violation,
  checkFrame,
  checkRefresh,
  frame,
  isObject,
  parseMessage,
  readOpen,
  utf8Length,
} from "./wire.js";

const OPEN = 1; // WebSocket.OPEN, the same in every implementation
const CLOSED = 3;

export class Connection {
  constructor(client, ws, token) {
    this.client = client;
    this.ws = ws;
    this.token = token;
    this.opened = false; // the server's open arrived
    this.dead = false;
    this.closeSent = false;
    this.closeReceived = null; // the server's close: its error, or true without one
    this.info = null;
    this.serverIdle = 0;
    this.maxFrameBytes = client._maxFrameBytes;
    this.sessions = new Sessions(this);
    this.out = [];
    this.flushQueued = false;
    this.startedAt = Date.now();
    this.openedAt = 0;
    this.lastRecv = this.startedAt;
    this.lastSent = this.startedAt;
    this.period = 1000;
    this.timer = null;
    this.refreshTimer = null;
    this.closeTimer = null;
    this.killTimer = null;
  }

  /** Listen to the socket's events. */
  listen() {
    const ws = this.ws;
    ws.onopen = guarded(() => this.onSocketOpen());
    ws.onmessage = guarded((event) => this.onSocketMessage(event.data));
    ws.onclose = guarded((event) => this.onSocketClose(event));
    ws.onerror = () => {}; // a close event follows
  }

  get usable() {
    return !this.dead && !this.closeSent && !this.closeReceived;
  }

  /** The WebSocket is open (it can be written). */
  get writable() {
    return this.ws.readyState === OPEN;
  }

  // -- sending ---------------------------------------------------------------------------

  send(f) {
    this.sendText(JSON.stringify(f));
  }

  sendText(text) {
    if (!this.usable) return;
    this.out.push(text);
    if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(guarded(() => this.flush()));
    }
  }

  /** Everything queued, in as few WebSocket messages as max_frame_bytes allows. */
  flush() {
    this.flushQueued = false;
    if (this.dead || this.ws.readyState !== OPEN || this.out.length === 0) return;
    const out = this.out;
    this.out = [];
    const limit = this.maxFrameBytes;
    let batch = [];
    let size = 2;
    const write = () => {
      this.write(batch.length === 1 ? batch[0] : `[${batch.join(",")}]`);
      batch = [];
      size = 2;
    };
    for (const text of out) {
      const bytes = utf8Length(text);
      if (batch.length && size + bytes + 1 > limit) write();
      batch.push(text);
      size += bytes + 1;
    }
    if (batch.length) write();
  }

  write(text) {
    if (this.dead || this.ws.readyState !== OPEN) return;
    try {
      this.ws.send(text);
      this.lastSent = Date.now();
    } catch (error) {
      this.client._lost(this, { error: new WsqError("wsq-client:socket", String(error)) });
    }
  }

  /** Our close, at once (nothing queued behind it goes out). */
  sendClose(error) {
    if (this.dead || this.closeSent) return;
    this.flush();
    this.closeSent = true;
    this.write(JSON.stringify(frame.close(error)));
  }

  /** Give the server `closeTimeout` ms to close the socket after the close handshake. */
  loseLater() {
    clearTimeout(this.closeTimer);
    this.closeTimer = setTimeout(
      guarded(() => this.client._lost(this, {})),
      this.client._closeTimeout,
    );
  }

  // -- timers: heartbeats and silence ----------------------------------------------------

  startTimer(period) {
    clearInterval(this.timer);
    this.period = period;
    this.timer = setInterval(
      guarded(() => this.tick()),
      period,
    );
  }

  stopTimers() {
    clearInterval(this.timer);
    clearTimeout(this.refreshTimer);
    clearTimeout(this.closeTimer);
    this.timer = this.refreshTimer = this.closeTimer = null;
  }

  tick() {
    if (this.dead) return;
    const client = this.client;
    const now = Date.now();
    if (!this.opened) {
      if (now - this.startedAt > client._connectTimeout && !this.closeReceived) {
        client[EMIT](
          "error",
          new WsqError("wsq:idle-timeout", "the gateway did not answer open", {
            scope: "connection",
          }),
        );
        this.drop(null);
      }
      return;
    }
    if (client._idle > 0 && now - this.lastRecv > client._idle && !this.closeReceived) {
      client[EMIT](
        "error",
        new WsqError("wsq:idle-timeout", `nothing from the gateway for ${client._idle} ms`, {
          scope: "connection",
        }),
      );
      this.drop({ condition: "wsq:idle-timeout", description: "nothing received" });
      return;
    }
    // Something at least every half of the server's idle: [] when there was nothing to say.
    if (this.serverIdle > 0 && now - this.lastSent >= this.serverIdle / 2 - this.period - 10) {
      this.flush();
      if (Date.now() - this.lastSent >= this.serverIdle / 2 - this.period - 10 && this.usable)
        this.write("[]");
    }
  }

  // -- the socket's events ---------------------------------------------------------------

  onSocketOpen() {
    if (this.dead || this.client._conn !== this) return;
    const protocol = this.ws.protocol;
    if (typeof protocol === "string" && protocol !== "" && protocol !== SUBPROTOCOL) {
      this.violation(`the server chose the subprotocol ${protocol}`);
      return;
    }
    this.flush();
  }

  onSocketClose(event) {
    if (this.dead) return;
    this.client._lost(this, { code: event?.code });
  }

  onSocketMessage(data) {
    if (this.dead || this.client._conn !== this) return;
    this.lastRecv = Date.now();
    let frames;
    try {
      frames = parseMessage(data);
    } catch (error) {
      this.violation(error.message);
      return;
    }
    for (const f of frames) {
      if (this.dead) return;
      if (this.closeReceived) continue; // nothing counts after the server's close
      try {
        this.onFrame(f);
      } catch (error) {
        this.violation(
          error instanceof Violation ? error.message : `a frame the client failed on: ${error}`,
        );
        return;
      }
    }
  }

  violation(description) {
    const error = { condition: "wsq:invalid-frame", description: `the server sent ${description}` };
    this.client[EMIT](
      "error",
      new WsqError(error.condition, error.description, { scope: "connection" }),
    );
    this.drop(error);
  }

  /** Drop the socket now, after our close (with `error`) when it can still be written. */
  drop(error) {
    if (this.dead) return;
    this.sendClose(error);
    this.client._lost(this, {});
  }

  // -- what the server sends -------------------------------------------------------------

  onFrame(f) {
    checkFrame(f, this.opened);
    switch (f.op) {
      case "open":
        return this.onOpen(f);
      case "refresh":
        checkRefresh(f);
        this.info.exp = f.exp;
        this.client._refreshed(this, f.exp);
        return;
      case "close":
        return this.onClose(f);
      default:
        return this.sessions.onFrame(f);
    }
  }

  onOpen(f) {
    if (this.opened) throw new Violation("a second open");
    this.opened = true;
    this.openedAt = Date.now();
    this.info = readOpen(f);
    this.serverIdle = this.info.idle;
    this.maxFrameBytes = this.info.maxFrameBytes;
    // Tick often enough to keep our gaps under half the server's idle and to notice its silence.
    const shortest = Math.min(this.serverIdle || Infinity, this.client._idle || Infinity);
    this.startTimer(Math.max(50, Math.min(1000, Math.floor(shortest / 4))));
    this.client._opened(this);
  }

  onClose(f) {
    this.closeReceived = isObject(f.error) ? f.error : true;
    if (this.closeSent) {
      this.client._lost(this, {}); // the answer to our close: done
      return;
    }
    this.sendClose(null);
    // The server closes the socket; drop it ourselves if that does not happen soon.
    this.loseLater();
  }

  // -- losing the socket -----------------------------------------------------------------

  /** Dead from now on: no timer, no event; the WebSocket is closed. `gone` settles once it
   * really is (close() waits for it): `ws` would otherwise wait up to 30 s for a silent peer's
   * close handshake and keep Node alive meanwhile. */
  release() {
    this.dead = true;
    this.stopTimers();
    const ws = this.ws;
    ws.onopen = ws.onmessage = null;
    ws.onerror = () => {};
    this.gone = new Promise((resolve) => {
      if (ws.readyState === CLOSED) {
        resolve();
        return;
      }
      ws.onclose = () => {
        clearTimeout(this.killTimer);
        resolve();
      };
      try {
        ws.close(1000);
      } catch {
        // closing a socket that never connected may throw in some implementations
      }
      this.killTimer = setTimeout(() => {
        try {
          if (typeof ws.terminate === "function") ws.terminate();
        } catch {
          // already gone
        }
        resolve();
      }, this.client._closeTimeout);
    });
  }
}
