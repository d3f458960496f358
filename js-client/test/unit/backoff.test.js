// src/backoff.js: when the client tries again. Issue 14: no test read these bounds (the
// reconnect tests only see that it reconnects). Math.random is pinned to its extremes, so each
// delay is exactly the bottom or the top of its range; no gateway needed here.
import assert from "node:assert/strict";
import { afterEach, describe, test } from "node:test";
import { Backoff, STABLE_MS } from "../../src/backoff.js";

const random = Math.random;
afterEach(() => {
  Math.random = random;
});

/** The largest a delay can be: Math.random just under 1 gives the top of [0, ceiling). */
function top() {
  Math.random = () => 1 - 2 ** -40;
}

describe("Backoff", () => {
  test("attempt n waits up to min(ceiling, base * 2^n), never the ceiling itself", () => {
    top();
    const b = new Backoff(100, 3000);
    assert.deepEqual(
      [0, 1, 2, 3, 4, 5, 10].map((n) => b.delay(n)),
      [99, 199, 399, 799, 1599, 2999, 2999],
    );
  });

  test("the exponent stops growing at 30", () => {
    top();
    const b = new Backoff(1, Number.MAX_SAFE_INTEGER);
    assert.equal(b.delay(30), 2 ** 30 - 1);
    assert.equal(b.delay(31), 2 ** 30 - 1);
    assert.equal(b.delay(1000), 2 ** 30 - 1);
  });

  test("a delay is a whole number of ms from 0 up", () => {
    Math.random = () => 0;
    const b = new Backoff(100, 3000);
    assert.equal(b.delay(3), 0);
    Math.random = () => 0.5;
    assert.equal(b.delay(0), 50);
    Math.random = () => 0.333;
    assert.equal(b.delay(0), 33);
  });

  test("each failed connection counts one more attempt", () => {
    top();
    const b = new Backoff(100, 100_000);
    assert.equal(b.attempts, 0);
    assert.deepEqual([b.next(), b.next(), b.next()], [99, 199, 399]);
    assert.equal(b.attempts, 3);
  });

  test("a draining node's clients come back within the base, and within a second", () => {
    top();
    assert.equal(new Backoff(100, 3000).soon(), 99);
    assert.equal(new Backoff(5000, 30_000).soon(), 999);
    Math.random = () => 0.5;
    assert.equal(new Backoff(5000, 30_000).soon(), 500);
  });

  test("a connection that lasted five seconds is a stable one", () => {
    assert.equal(STABLE_MS, 5000);
  });
});
