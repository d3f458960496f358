// The token: a string, or a function asked at every connect, before the token expires (a
// `refresh` on the live socket), and once more after the gateway refused one. Which refusals
// end the client is decided here; reconnecting is client.js's business.

import { EMIT } from "./emitter.js";
import { WsqError, guarded } from "./errors.js";
import { frame } from "./wire.js";

const MAX_TIMER_MS = 2147483647; // setTimeout's ceiling

export class Token {
  constructor(client, source, refreshBefore) {
    this.client = client;
    this.source = source;
    this.refreshBefore = refreshBefore;
    this.refused = null; // the token the gateway last refused, when another was asked for
    this.failures = 0; // refusals since the last open
  }

  /** A function can answer a newer token; a string cannot be refreshed. */
  get refreshable() {
    return typeof this.source === "function";
  }

  /** The token to send now: the static one or the token function's answer, never empty. */
  async get() {
    // Called as the client's method, as it always was (`this` is the client).
    const token = this.refreshable ? await this.source.call(this.client) : this.source;
    if (typeof token !== "string" || token === "")
      throw new TypeError("the token function answered no token");
    return token;
  }

  /** Whether `token` is the one refused last time (the function had nothing newer). */
  isRefused(token) {
    return this.refused !== null && token === this.refused;
  }

  /** The gateway refused the token of `conn`: answers whether to ask the function once more. */
  retryAfterRefusal(conn) {
    if (!this.refreshable || ++this.failures >= 2) return false;
    this.refused = conn.token;
    return true;
  }

  /** An open succeeded: refusals are forgotten. */
  accepted() {
    this.failures = 0;
    this.refused = null;
  }

  /** Refresh `conn`'s token `refreshBefore` ms before it expires (at most a third of its
   * remaining life, for short-lived tokens). */
  schedule(conn) {
    clearTimeout(conn.refreshTimer);
    conn.refreshTimer = null;
    const exp = conn.info?.exp;
    if (!this.refreshable || !exp) return;
    const remaining = exp * 1000 - Date.now();
    const margin = Math.min(this.refreshBefore, Math.max(0, remaining) / 3);
    const delay = Math.min(MAX_TIMER_MS, Math.max(1000, remaining - margin));
    conn.refreshTimer = setTimeout(
      guarded(() => this.refresh(conn)),
      delay,
    );
  }

  async refresh(conn) {
    conn.refreshTimer = null;
    const client = this.client;
    if (client._conn !== conn || !conn.opened || !conn.usable) return;
    let token;
    try {
      token = await this.get();
    } catch (error) {
      if (client._conn !== conn || !conn.usable) return;
      client[EMIT](
        "error",
        new WsqError("wsq-client:token", String(error?.message ?? error), { cause: error }),
      );
      this.#askAgain(conn);
      return;
    }
    if (client._conn !== conn || !conn.usable) return;
    if (token === conn.token) {
      // The function has nothing newer yet: ask again a little later.
      this.#askAgain(conn);
      return;
    }
    conn.token = token;
    conn.send(frame.refresh(token));
  }

  #askAgain(conn) {
    clearTimeout(conn.refreshTimer);
    conn.refreshTimer = setTimeout(
      guarded(() => this.refresh(conn)),
      1000,
    );
  }
}
