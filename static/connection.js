// The connection of a page (/ and /ops) and what it shows of it: one wsq-client Client with one
// subscription, the state badge (#state, true from the first paint: the HTML says "connecting…"
// and the page connects as it loads), the node line (#node) and the error list (#errors).
// The client multiplexes, heartbeats, reconnects, resumes and refreshes the token by itself.

import { Client } from "/wsq-client.js";

const CLIENT_IDLE_MS = 20000; // the longest server silence we tolerate (sent in our open)
const MAX_ERRORS = 50;

const STATE_LABELS = {
  "need-token": "waiting for a token",
  connecting: "connecting…",
  open: "connected",
  subscribed: "live",
  reconnecting: "reconnecting",
  closed: "disconnected",
};

/** A wsq: error as text: its condition and description. */
export function describeError(error) {
  if (!error || typeof error !== "object") return String(error);
  if (typeof error.condition !== "string") return String(error.message ?? error);
  return `${error.condition}${error.description ? `: ${error.description}` : ""}`;
}

/** A <time> of `ms` (Unix ms) in the reader's clock, 24 h. */
export function timeElement(ms) {
  const time = document.createElement("time");
  if (Number.isFinite(ms)) {
    const when = new Date(ms);
    time.dateTime = when.toISOString();
    time.textContent = when.toLocaleTimeString("en-GB");
  }
  return time;
}

/**
 * ui: {state, node, errors, connection (the <details> of the token form)}; token: a PageToken;
 * subscribe(client): the page's one Subscription on that client; label: what "live" is about.
 * Callbacks: onSubscriptionError(error) (the page may explain it), onDisconnected().
 */
export class PageConnection {
  constructor({ ui, token, clientName, subscribe, label, onSubscriptionError, onDisconnected }) {
    this.ui = ui;
    this.token = token;
    this.clientName = clientName;
    this.subscribe = subscribe;
    this.label = label;
    this.onSubscriptionError = onSubscriptionError ?? (() => {});
    this.onDisconnected = onDisconnected ?? (() => {});
    this.client = null; // the current Client, or null when disconnected on purpose
    this.sub = null; // the current subscription
    this.everConnected = false; // the current client had a connection (reconnecting vs connecting)
  }

  setState(state, detail) {
    this.ui.state.dataset.state = state;
    this.ui.state.textContent = STATE_LABELS[state] + (detail ? ` — ${detail}` : "");
  }

  addError(text) {
    const li = document.createElement("li");
    li.append(timeElement(Date.now()), " ", text);
    this.ui.errors.prepend(li);
    while (this.ui.errors.children.length > MAX_ERRORS) this.ui.errors.lastElementChild.remove();
  }

  askForToken(why) {
    this.setState("need-token", why);
    this.ui.connection.open = true;
  }

  connect() {
    this.stop();
    this.everConnected = false;
    const c = new Client("/ws", { token: this.token.forClient, idle: CLIENT_IDLE_MS, clientName: this.clientName });
    this.client = c;
    const showState = (state) => {
      if (this.client !== c) return;
      if (state === "connecting") this.setState(this.everConnected ? "reconnecting" : "connecting");
      else if (state === "connected") {
        this.everConnected = true;
        const live = this.sub?.attached;
        this.setState(live ? "subscribed" : "open", live ? this.label : "");
      } else if (state === "disconnected") {
        this.ui.node.textContent = "";
        this.setState("reconnecting");
        this.onDisconnected();
      }
    };
    c.on("state", showState);
    // The client is "connecting" from its constructor, before this listener could hear it.
    showState(c.state);
    c.on("open", (info) => {
      if (this.client === c) this.ui.node.textContent = `node ${info.node} · tenant ${info.tenant} · sub ${info.sub}`;
    });
    c.on("error", (error) => {
      if (this.client !== c || error.condition === "wsq-client:closed") return;
      this.addError(describeError(error));
      if (error.fatal) {
        this.client = null;
        this.sub = null;
        this.ui.node.textContent = "";
        this.onDisconnected();
        this.askForToken("the token was refused: paste a new one and press Connect");
      }
    });

    const s = this.subscribe(c);
    this.sub = s;
    s.on("attached", () => {
      if (this.sub === s) this.setState("subscribed", this.label);
    });
    s.on("gap", () => this.addError("some messages were dropped by retention while this page was away"));
    s.on("error", (error) => {
      if (this.sub !== s) return;
      this.sub = null;
      // The client's own error event lists it in #errors (both hear a refused link).
      this.setState("open", `not subscribed (${error.condition})`);
      this.onSubscriptionError(error);
    });
  }

  stop() {
    const c = this.client;
    this.client = null;
    this.sub = null;
    c?.close();
  }

  /** The Connect form and the Disconnect button: `form`, `disconnect`. */
  wire(form, disconnect) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!this.token.present) {
        this.askForToken("paste a token and press Connect");
        return;
      }
      this.connect();
    });
    disconnect.addEventListener("click", () => {
      this.stop();
      this.ui.node.textContent = "";
      this.setState("closed");
      this.onDisconnected();
    });
  }

  /** The token from #token=… or /dev/token, then connect; else ask for one. */
  async start() {
    if (await this.token.start()) this.connect();
    else this.askForToken("paste a token (or open this page with #token=…) and press Connect");
  }
}
