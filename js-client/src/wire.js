// The wsq.v1 wire (docs/protocol.md), as far as the client needs it: the grammar of addresses,
// patterns and positions, the frames the client sends (encoding), and the checks on what the
// server sends (validation: a frame that breaks the contract throws a Violation, and the
// connection closes with wsq:invalid-frame). No state: that is connection.js's and sessions.js's.

import { WsqError } from "./errors.js";

export const SUBPROTOCOL = "wsq.v1";

export const MAX_U32 = 4294967295;
export const MAX_CH = 65535;
export const DEFAULT_MAX_FRAME_BYTES = 1048576;
export const OUTCOMES = new Set(["accepted", "released", "rejected", "modified"]);
// A link refused for one of these will be refused again: no retry, the user is told.
export const FINAL_LINK_CONDITIONS = new Set([
  "wsq:forbidden",
  "wsq:invalid-frame",
  "wsq:not-found",
]);
export const AUTH_CONDITIONS = new Set(["wsq:unauthorized", "wsq:token-expired"]);
// Room for a transfer frame's fields around the body and props when sizing a publish.
export const TRANSFER_OVERHEAD = 128;

// -- grammar -----------------------------------------------------------------------------

const ADDRESS_RE = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;
const PATTERN_RE = /^([A-Za-z0-9_-]+|\*)(\.([A-Za-z0-9_-]+|\*))*(\.>)?$|^>$/;
// A position `<ms>-<seq>`: each part 1 to 19 decimal digits, so every one fits 64 bits (the
// gateway's rule: the pattern `^[0-9]{1,19}-[0-9]{1,19}$`). Defined here only.
const POSITION_RE = /^([0-9]{1,19})-([0-9]{1,19})$/;

export function isAddress(value) {
  return typeof value === "string" && value.length <= 255 && ADDRESS_RE.test(value);
}

// The gateway's own addresses ("$sys." then an address, docs/protocol.md section 8: $sys.stats):
// a copy receiver with the operator right may subscribe; nobody publishes to them.
const SYS_PREFIX = "$sys.";

/** What a subscription may name: an address, or one of the gateway's own ($sys.…). */
export function isSubscribable(value) {
  return (
    isAddress(value) ||
    (typeof value === "string" && value.startsWith(SYS_PREFIX) && isAddress(value.slice(SYS_PREFIX.length)))
  );
}

/** A subject pattern: an address whose tokens may be `*`, or end with `>`. */
export function isPattern(value) {
  return PATTERN_RE.test(String(value));
}

/** Whether `value`, as a string, is a position `"<ms>-<seq>"`. */
export function isPosition(value) {
  return POSITION_RE.test(value);
}

/** Compare two positions `"<ms>-<seq>"` as numbers: < 0, 0 or > 0. */
export function comparePositions(a, b) {
  const ma = POSITION_RE.exec(a);
  const mb = POSITION_RE.exec(b);
  if (!ma || !mb) throw new TypeError(`not positions: ${a}, ${b}`);
  return compareDigits(ma[1], mb[1]) || compareDigits(ma[2], mb[2]);
}

function compareDigits(a, b) {
  // Any length without BigInt: strip leading zeros, then length, then lexical order.
  const x = a.replace(/^0+(?=\d)/, "");
  const y = b.replace(/^0+(?=\d)/, "");
  if (x.length !== y.length) return x.length < y.length ? -1 : 1;
  return x < y ? -1 : x > y ? 1 : 0;
}

export const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
export const isUint = (v, max = Number.MAX_SAFE_INTEGER) =>
  Number.isInteger(v) && v >= 0 && v <= max;

export function utf8Length(text) {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

// -- what the client sends ---------------------------------------------------------------

export const frame = Object.freeze({
  // `compact`: ask for the compact delivery form (`transfers`) and its rows (`rows`, only with
  // compact); a gateway without them ignores them.
  open: (token, idle, client, compact) => ({ op: "open", token, idle, client, compact, rows: compact }),
  begin: (ch) => ({ op: "begin", ch }),
  end: (ch) => ({ op: "end", ch }),
  refresh: (token) => ({ op: "refresh", token }),
  close: (error) => (error ? { op: "close", error } : { op: "close" }),
  detach: (ch, handle) => ({ op: "detach", ch, handle }),
  flow: (ch, handle, credit) => ({ op: "flow", ch, handle, credit }),
  disposition: (ch, first, outcome) => ({ op: "disposition", ch, first, outcome }),
  sender: (ch, handle, address) => ({ op: "attach", ch, handle, role: "sender", address }),

  /** A receiver attach; `link` holds the subscription's fields that go on the wire. */
  receiver(ch, handle, link) {
    const f = { op: "attach", ch, handle, role: "receiver" };
    f.address = link.address;
    f.mode = link.mode;
    if (link.mode === "copy") {
      // rewind and from are exclusive: a rewind replaces the start position.
      if (link.rewind !== undefined) f.rewind = link.rewind;
      else f.from = link.from;
      if (link.conflate !== undefined) f.conflate = link.conflate;
    }
    if (link.mode === "move") {
      if (link.group !== undefined) f.group = link.group;
      if (link.lease !== undefined) f.lease = link.lease;
    }
    if (link.filter !== undefined) f.filter = link.filter;
    if (link.settled) f.settled = true;
    if (link.presence) f.presence = true;
    f.credit = link.credit;
    return f;
  },

  /** A publish's body and props, encoded once: a transfer frame's JSON without its `{`. */
  publishTail: (body, props) =>
    JSON.stringify({ body: body === undefined ? null : body, props }).slice(1),

  /** A client transfer's text around a publish's encoded tail. */
  transfer: (ch, handle, delivery, tail) =>
    `{"op":"transfer","ch":${ch},"handle":${handle},"delivery":${delivery},` +
    `"settled":false,${tail}`,
});

// -- what the server sends ---------------------------------------------------------------

/** Thrown inside frame handling when the server broke the protocol. */
export class Violation extends Error {}

const OPS = new Set([
  "open",
  "begin",
  "end",
  "attach",
  "flow",
  "transfer",
  "transfers",
  "disposition",
  "detach",
  "refresh",
  "close",
  "presence",
]);

/** The frames of one WebSocket message: a frame, or a batch of them (`[]` is a heartbeat). */
export function parseMessage(data) {
  if (typeof data !== "string") throw new Violation("a binary message");
  let value;
  try {
    value = JSON.parse(data);
  } catch {
    throw new Violation("a message that is not JSON");
  }
  return Array.isArray(value) ? value : [value];
}

/** A frame with a known op, and before the server's open only `open` or `close`. */
export function checkFrame(f, opened) {
  if (!isObject(f) || typeof f.op !== "string") throw new Violation("a frame without an op");
  if (!opened && f.op !== "open" && f.op !== "close") throw new Violation(`"${f.op}" before open`);
  if (!OPS.has(f.op)) throw new Violation(`an unknown op "${String(f.op).slice(0, 64)}"`);
}

/** The server's open answer: its idle, frame limit, and what the client tells the user. */
export function readOpen(f) {
  const num = (v, fallback, min) => (isUint(v) && v >= min ? v : fallback);
  const idle = num(f.idle, 0, 0);
  const maxFrameBytes = num(f.max_frame_bytes, DEFAULT_MAX_FRAME_BYTES, 1024);
  return {
    node: typeof f.node === "string" ? f.node : null,
    tenant: typeof f.tenant === "string" ? f.tenant : null,
    sub: typeof f.sub === "string" ? f.sub : null,
    exp: isUint(f.exp) ? f.exp : null,
    idle,
    maxSessions: num(f.max_sessions, 1024, 1),
    maxFrameBytes,
    compact: f.compact === true,
    rows: f.compact === true && f.rows === true,
  };
}

export function checkFlow(f) {
  if (!isUint(f.credit, MAX_U32)) throw new Violation("a flow without a valid credit");
}

export function checkTransfer(f) {
  if (typeof f.id !== "string" || !POSITION_RE.test(f.id)) {
    throw new Violation("a transfer without a valid id");
  }
  if (!isUint(f.delivery)) throw new Violation("a transfer without a valid delivery number");
}

/** A compact frame (`transfers`): its messages, numbered from `delivery`, as the per-message
 * transfers they stand for (each checked as one when it is taken). An element is an object
 * `{id, body, props}` or a row (docs/protocol.md 6.4, compact rows): `[id, body, props]`,
 * `[id, body]` (the previous element's props) or `[body]` (the previous element's id with its
 * sequence one higher, and its props). Each message of a row gets its own shallow copy of the
 * props it shares, so a handler changing its message's props leaves the next one's alone. */
export function expandTransfers(f) {
  if (!isUint(f.delivery)) throw new Violation("transfers without a valid delivery number");
  const msgs = f.msgs;
  if (!Array.isArray(msgs) || msgs.length === 0) throw new Violation("transfers without msgs");
  if (!isUint(f.delivery + msgs.length - 1)) throw new Violation("transfers numbered too far");
  const out = new Array(msgs.length);
  const settled = f.settled;
  let delivery = f.delivery;
  // The previous element's id and props; its id split as `<ms>-<seq>` only once a `[body]`
  // row needs it (`ms` null until then), then carried along the run of `[body]` rows.
  let id;
  let props;
  let ms = null;
  let seq = 0;
  for (let i = 0; i < msgs.length; i++, delivery++) {
    const m = msgs[i];
    if (!Array.isArray(m)) {
      if (!isObject(m)) throw new Violation("transfers with a message that is not an object");
      id = m.id;
      props = m.props;
      ms = null;
      out[i] = { id, body: m.body, props, delivery, settled };
      continue;
    }
    const n = m.length;
    if (n === 3) {
      id = m[0];
      props = m[2];
      if (!isObject(props)) throw new Violation("transfers with a row whose props are not an object");
      ms = null;
      out[i] = { id, body: m[1], props, delivery, settled };
      continue;
    }
    if (n !== 1 && n !== 2) throw new Violation("transfers with a row of another length");
    if (i === 0) throw new Violation("transfers whose first row leaves out what it shares");
    if (!isObject(props)) throw new Violation("transfers with a row whose props are not an object");
    if (n === 2) {
      id = m[0];
      ms = null;
      out[i] = { id, body: m[1], props: { ...props }, delivery, settled };
    } else {
      if (ms === null) {
        const split = typeof id === "string" ? POSITION_RE.exec(id) : null;
        if (split === null) throw new Violation("transfers with a row after an invalid id");
        ms = split[1];
        seq = Number(split[2]);
      }
      if (seq >= Number.MAX_SAFE_INTEGER) throw new Violation("transfers with a row past 2^53");
      seq += 1;
      id = `${ms}-${seq}`;
      out[i] = { id, body: m[0], props: { ...props }, delivery, settled };
    }
  }
  return out;
}

/** The last delivery a disposition settles (`last` defaults to `first`). */
export function dispositionLast(f) {
  if (!isUint(f.first)) throw new Violation("a disposition without first");
  const last = f.last === undefined ? f.first : f.last;
  if (!isUint(last) || last < f.first) throw new Violation("a disposition with a bad last");
  return last;
}

export function checkRefresh(f) {
  if (!isUint(f.exp)) throw new Violation("a refresh without exp");
}

/** A WsqError from an error the server sent (`{condition, description}`), bounded in size. */
export function fromWire(error, scope, address) {
  const ok = error !== null && typeof error === "object";
  const condition =
    ok && typeof error.condition === "string" ? error.condition : "wsq:internal-error";
  const description = ok && typeof error.description === "string" ? error.description : "";
  return new WsqError(condition.slice(0, 256), description.slice(0, 4096), { scope, address });
}
