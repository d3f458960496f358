// The outbox: every publish from `client.publish` until the gateway answers it. A publish is
// checked and encoded once, here (so a bad one is refused before it can break the socket), gets
// a message_id (so a retry after an unknown outcome is stored once), and counts against the
// bounds `outboxSize` and `outboxBytes` until it is settled. sender.js carries it on the wire.

import { WsqError } from "./errors.js";
import { TRANSFER_OVERHEAD, frame, isAddress, isObject, isUint, utf8Length } from "./wire.js";

/** A random prefix for generated message ids. */
export function randomId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  if (c && typeof c.getRandomValues === "function") {
    const bytes = c.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

export class Outbox {
  /** At most `size` publishes and `bytes` bytes unconfirmed; generated ids are `<prefix><n>`. */
  constructor(size, bytes, messageIdPrefix) {
    this.size = size;
    this.bytes = bytes;
    this.messageIdPrefix = messageIdPrefix;
    this.count = 0; // publishes not yet settled
    this.used = 0; // their bytes
    this.seq = 0; // publish order
    this.generated = 0; // message ids generated
  }

  /** A publish as an outbox item, counted: throws (and nothing is counted) when it is invalid,
   * too large for the gateway's `maxFrameBytes`, or the outbox is full. */
  add(address, body, options, maxFrameBytes, resolve, reject) {
    if (!isObject(options)) throw new TypeError("options must be an object");
    if (!isAddress(address)) {
      throw new WsqError("wsq:invalid-frame", `not an address: ${JSON.stringify(address)}`, {
        address,
      });
    }
    const props = {};
    if (options.subject !== undefined) {
      if (!isAddress(options.subject))
        throw new WsqError("wsq:invalid-frame", "subject: dot-separated tokens of [A-Za-z0-9_-]", {
          address,
        });
      props.subject = options.subject;
    }
    const messageId = options.messageId ?? `${this.messageIdPrefix}${++this.generated}`;
    if (typeof messageId !== "string" || messageId.length === 0 || messageId.length > 1024) {
      throw new TypeError("option messageId: a string of 1..1024 characters");
    }
    props.message_id = messageId;
    if (options.ttl !== undefined) {
      if (!(isUint(options.ttl, 31536000000) && options.ttl >= 1))
        throw new TypeError("option ttl: 1..31536000000 ms");
      props.ttl = options.ttl;
    }
    if (options.contentType !== undefined) props.content_type = String(options.contentType);
    if (options.headers !== undefined) {
      if (!isObject(options.headers)) throw new TypeError("option headers: an object");
      props.headers = options.headers;
    }
    let tail;
    try {
      tail = frame.publishTail(body, props);
    } catch (error) {
      throw new WsqError("wsq:invalid-frame", `the body is not JSON: ${error.message}`, {
        address,
        cause: error,
      });
    }
    const size = utf8Length(tail) + TRANSFER_OVERHEAD;
    if (size > maxFrameBytes) {
      throw new WsqError(
        "wsq:frame-too-large",
        `the message has ${size} bytes, the gateway takes ${maxFrameBytes}`,
        { address },
      );
    }
    if (this.count >= this.size || this.used + size > this.bytes) {
      throw new WsqError(
        "wsq:resource-limit-exceeded",
        `the outbox is full (${this.count} messages, ${this.used} bytes unconfirmed)`,
        { address },
      );
    }
    const item = {
      seq: ++this.seq,
      address,
      tail,
      size,
      messageId,
      resolve,
      reject,
      binding: null,
    };
    this.count += 1;
    this.used += size;
    return item;
  }

  /** Settled: out of the outbox, and its publish resolves with `id` or rejects with `error`. */
  finish(item, error, id) {
    this.count -= 1;
    this.used -= item.size;
    if (error) item.reject(error);
    else item.resolve(id);
  }
}
