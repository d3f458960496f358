// src/emitter.js: the on/once/off of Client and Subscription. Issue 14: no test read the
// emitter by itself (the client tests see events arrive, not once/off or a listener that
// throws); no gateway needed here.
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, test } from "node:test";
import { EMIT, Emitter } from "../../src/emitter.js";

describe("Emitter", () => {
  let reported;
  let saved;
  beforeEach(() => {
    reported = [];
    saved = globalThis.reportError;
    globalThis.reportError = (error) => reported.push(error);
  });
  afterEach(() => {
    globalThis.reportError = saved;
  });

  test("on calls its listener on every event, with the emitter as this", () => {
    const e = new Emitter();
    const calls = [];
    const listener = function (...args) {
      calls.push([this, ...args]);
    };
    assert.equal(e.on("x", listener), e);
    assert.equal(e[EMIT]("x", 1, 2), true);
    assert.equal(e[EMIT]("x", 3), true);
    assert.deepEqual(calls, [
      [e, 1, 2],
      [e, 3],
    ]);
    assert.equal(e[EMIT]("other"), false); // nobody listens
  });

  test("a listener must be a function", () => {
    const e = new Emitter();
    const refused = { name: "TypeError", message: "listener must be a function" };
    assert.throws(() => e.on("x", "nope"), refused);
    assert.throws(() => e.once("x", null), refused);
    assert.equal(e.listenerCount("x"), 0);
  });

  test("once calls its listener on the next event only, with its arguments and this", () => {
    const e = new Emitter();
    const calls = [];
    assert.equal(
      e.once("x", function (...args) {
        calls.push([this, ...args]);
      }),
      e,
    );
    assert.equal(e.listenerCount("x"), 1);
    e[EMIT]("x", "a", "b");
    e[EMIT]("x", "c");
    assert.deepEqual(calls, [[e, "a", "b"]]);
    assert.equal(e.listenerCount("x"), 0);
    assert.equal(e[EMIT]("x"), false); // the event is forgotten with its last listener
  });

  test("off removes a listener, one added with once too, and keeps the others", () => {
    const e = new Emitter();
    const calls = [];
    const a = () => calls.push("a");
    const b = () => calls.push("b");
    const c = () => calls.push("c");
    e.on("x", a).on("x", b).once("x", c);
    assert.equal(e.listenerCount("x"), 3);
    assert.equal(e.off("x", a), e);
    assert.equal(e.off("x", c), e);
    assert.equal(e.listenerCount("x"), 1);
    e[EMIT]("x");
    assert.deepEqual(calls, ["b"]);
    assert.equal(e.off("x", b), e);
    assert.equal(e.listenerCount("x"), 0);
    assert.equal(e[EMIT]("x"), false);
    assert.equal(e.off("never", a), e); // an event nobody listened to
    assert.equal(e.listenerCount("never"), 0);
  });

  test("the same listener twice is one listener", () => {
    const e = new Emitter();
    let n = 0;
    const inc = () => n++;
    e.on("x", inc).on("x", inc);
    assert.equal(e.listenerCount("x"), 1);
    e[EMIT]("x");
    assert.equal(n, 1);
  });

  test("a listener that throws is reported, and the others are still called", () => {
    const e = new Emitter();
    const bug = new Error("listener bug");
    const calls = [];
    e.on("x", () => {
      throw bug;
    });
    e.on("x", () => calls.push("after"));
    assert.equal(e[EMIT]("x"), true);
    assert.deepEqual(reported, [bug]);
    assert.deepEqual(calls, ["after"]);
  });

  test("listeners added or removed while an event is emitted apply from the next one", () => {
    const e = new Emitter();
    const calls = [];
    const late = () => calls.push("late");
    const second = () => calls.push("second");
    e.on("x", () => {
      calls.push("first");
      e.on("x", late);
    });
    e.on("x", second);
    e[EMIT]("x");
    assert.deepEqual(calls, ["first", "second"]);
    calls.length = 0;
    e.off("x", second);
    e[EMIT]("x");
    assert.deepEqual(calls, ["first", "late"]);
  });
});
