// src/outbox.js: a publish checked, encoded and counted once; the bounds of the outbox; the
// message ids it generates. Pure (no socket).
import assert from "node:assert/strict";
import { afterEach, describe, test } from "node:test";
import { WsqError } from "../../src/errors.js";
import { Outbox, randomId } from "../../src/outbox.js";
import { frame } from "../../src/wire.js";

const BIG = 1 << 20;
const noop = () => {};

/** The error `fn` throws. */
function thrown(fn) {
  try {
    fn();
  } catch (error) {
    return error;
  }
  assert.fail("nothing thrown");
}

describe("Outbox.add", () => {
  test("an item: its order, address, encoded tail, size and generated message id", () => {
    const box = new Outbox(10, BIG, "p-");
    const resolve = () => "r";
    const reject = () => "j";
    const item = box.add("a.b", { x: 1 }, {}, BIG, resolve, reject);
    assert.deepEqual(item, {
      seq: 1,
      address: "a.b",
      tail: '"body":{"x":1},"props":{"message_id":"p-1"}}',
      size: 44 + 128,
      messageId: "p-1",
      resolve,
      reject,
      binding: null,
    });
    assert.equal(box.count, 1);
    assert.equal(box.used, 172);
    const second = box.add("a.b", "é", { messageId: "mine" }, BIG, noop, noop);
    assert.equal(second.seq, 2);
    assert.equal(second.messageId, "mine");
    assert.equal(box.generated, 1, "a given id generates none");
    assert.equal(second.size, Buffer.byteLength(second.tail) + 128);
    assert.equal(box.add("a.b", 1, {}, BIG, noop, noop).messageId, "p-2");
    assert.equal(box.count, 3);
    assert.equal(box.used, 172 + second.size + 38 + 128);
  });

  test("every option on the wire: subject, ttl, content_type, headers", () => {
    const box = new Outbox(10, BIG, "");
    const item = box.add(
      "a",
      null,
      { subject: "a.x", ttl: 1, contentType: 7, headers: { k: "v" }, messageId: "i" },
      BIG,
      noop,
      noop,
    );
    assert.equal(
      item.tail,
      '"body":null,"props":{"subject":"a.x","message_id":"i","ttl":1,"content_type":"7","headers":{"k":"v"}}}',
    );
    assert.equal(box.add("a", 1, { ttl: 31536000000 }, BIG, noop, noop).tail, '"body":1,"props":{"message_id":"1","ttl":31536000000}}');
  });

  test("a bad publish throws and counts nothing", () => {
    const box = new Outbox(10, BIG, "p");
    const bad = [
      [() => box.add("a", 1, null, BIG), TypeError, "options must be an object"],
      [() => box.add("a", 1, [], BIG), TypeError, "options must be an object"],
      [() => box.add("a..b", 1, {}, BIG), "wsq:invalid-frame", 'wsq:invalid-frame: not an address: "a..b"'],
      [() => box.add("a", 1, { subject: "x y" }, BIG), "wsq:invalid-frame", "wsq:invalid-frame: subject: dot-separated tokens of [A-Za-z0-9_-]"],
      [() => box.add("a", 1, { messageId: "" }, BIG), TypeError, "option messageId: a string of 1..1024 characters"],
      [() => box.add("a", 1, { messageId: 5 }, BIG), TypeError, "option messageId: a string of 1..1024 characters"],
      [() => box.add("a", 1, { messageId: "m".repeat(1025) }, BIG), TypeError, "option messageId: a string of 1..1024 characters"],
      [() => box.add("a", 1, { ttl: 0 }, BIG), TypeError, "option ttl: 1..31536000000 ms"],
      [() => box.add("a", 1, { ttl: 31536000001 }, BIG), TypeError, "option ttl: 1..31536000000 ms"],
      [() => box.add("a", 1, { ttl: 1.5 }, BIG), TypeError, "option ttl: 1..31536000000 ms"],
      [() => box.add("a", 1, { headers: [] }, BIG), TypeError, "option headers: an object"],
      [() => box.add("a", 1, { headers: null }, BIG), TypeError, "option headers: an object"],
    ];
    for (const [fn, kind, message] of bad) {
      const error = thrown(fn);
      if (typeof kind === "string") {
        assert.ok(error instanceof WsqError, message);
        assert.equal(error.condition, kind);
      } else assert.ok(error instanceof kind, message);
      assert.equal(error.message, message);
    }
    const subject = thrown(() => box.add("a.b", 1, { subject: "" }, BIG));
    assert.equal(subject.address, "a.b");
    const address = thrown(() => box.add(5, 1, {}, BIG));
    assert.equal(address.address, 5);
    assert.equal(box.count, 0);
    assert.equal(box.used, 0);
    assert.equal(box.seq, 0);
    assert.equal(box.add("a", 1, { messageId: "m".repeat(1024) }, BIG, noop, noop).messageId.length, 1024);
  });

  test("a body that is not JSON is refused as invalid-frame, with its cause", () => {
    const box = new Outbox(10, BIG, "p");
    const cyclic = {};
    cyclic.self = cyclic;
    const error = thrown(() => box.add("a", cyclic, {}, BIG));
    assert.equal(error.condition, "wsq:invalid-frame");
    assert.ok(error.description.startsWith("the body is not JSON: "));
    assert.ok(error.cause instanceof TypeError);
    assert.equal(error.address, "a");
    assert.equal(thrown(() => box.add("a", 10n, {}, BIG)).condition, "wsq:invalid-frame");
  });

  test("too large for the gateway's frame: frame-too-large, counting the overhead", () => {
    const box = new Outbox(10, BIG, "");
    const tail = frame.publishTail("x", { message_id: "1" });
    const size = tail.length + 128;
    assert.equal(box.add("a", "x", {}, size, noop, noop).size, size);
    const error = thrown(() => box.add("a", "x", { messageId: "1" }, size - 1));
    assert.equal(error.condition, "wsq:frame-too-large");
    assert.equal(error.message, `wsq:frame-too-large: the message has ${size} bytes, the gateway takes ${size - 1}`);
    assert.equal(error.address, "a");
    assert.equal(box.count, 1);
  });

  test("full by count or by bytes: resource-limit-exceeded; finish makes room", () => {
    const box = new Outbox(2, BIG, "");
    const a = box.add("a", 1, {}, BIG, noop, noop);
    box.add("a", 1, {}, BIG, noop, noop);
    const full = thrown(() => box.add("a", 1, {}, BIG));
    assert.equal(full.condition, "wsq:resource-limit-exceeded");
    assert.equal(
      full.message,
      `wsq:resource-limit-exceeded: the outbox is full (2 messages, ${2 * a.size} bytes unconfirmed)`,
    );
    assert.equal(full.address, "a");
    box.finish(a, null, "1-0");
    assert.equal(box.count, 1);
    assert.equal(box.used, a.size);
    box.add("a", 1, {}, BIG, noop, noop);

    const size = frame.publishTail(1, { message_id: "1" }).length + 128;
    const bytes = new Outbox(10, 2 * size, "");
    bytes.add("a", 1, {}, BIG, noop, noop);
    bytes.add("a", 2, {}, BIG, noop, noop);
    assert.equal(bytes.used, 2 * size, "exactly at the bound fits");
    assert.equal(thrown(() => bytes.add("a", 3, {}, BIG)).condition, "wsq:resource-limit-exceeded");
    assert.equal(thrown(() => new Outbox(0, BIG, "").add("a", 1, {}, BIG)).condition, "wsq:resource-limit-exceeded");
  });

  test("finish resolves with the id, or rejects with the error", () => {
    const box = new Outbox(10, BIG, "");
    const seen = [];
    const item = box.add("a", 1, {}, BIG, (v) => seen.push(["ok", v]), (e) => seen.push(["err", e]));
    const other = box.add("a", 1, {}, BIG, (v) => seen.push(["ok", v]), (e) => seen.push(["err", e]));
    box.finish(item, null, "5-0");
    const error = new Error("no");
    box.finish(other, error);
    assert.deepEqual(seen, [
      ["ok", "5-0"],
      ["err", error],
    ]);
    assert.equal(box.count, 0);
    assert.equal(box.used, 0);
  });
});

describe("randomId", () => {
  const crypto = Object.getOwnPropertyDescriptor(globalThis, "crypto");
  afterEach(() => Object.defineProperty(globalThis, "crypto", crypto));
  const use = (value) => Object.defineProperty(globalThis, "crypto", { value, configurable: true, writable: true });

  test("randomUUID where there is one", () => {
    use({ randomUUID: () => "uuid-1", getRandomValues: () => assert.fail("not this") });
    assert.equal(randomId(), "uuid-1");
  });

  test("else 16 random bytes in hex", () => {
    use({
      getRandomValues: (bytes) => {
        assert.equal(bytes.length, 16);
        bytes.set([0, 1, 15, 16, 255, 171, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        return bytes;
      },
    });
    assert.equal(randomId(), "00010f10ffab02030405060708090a0b");
  });

  test("else the time and Math.random in base 36", () => {
    use(undefined);
    const random = Math.random;
    const now = Date.now;
    Math.random = () => 0.5;
    Date.now = () => 36 * 36;
    try {
      assert.equal(randomId(), "100-i");
      use({ randomUUID: "not a function", getRandomValues: 5 });
      assert.equal(randomId(), "100-i");
    } finally {
      Math.random = random;
      Date.now = now;
    }
  });

  test("the real one is random", () => {
    assert.notEqual(randomId(), randomId());
  });
});
