// src/errors.js: the WsqError every failure reaches the user as, and how a bug in a callback is
// reported instead of thrown into the event loop. Mutation testing (scripts/mutate --only js
// --js-files src/errors.js) found these read by no test; no gateway needed here.
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, test } from "node:test";
import { guarded, reportListenerError, WsqError } from "../../src/errors.js";

describe("WsqError", () => {
  test("carries its condition, description, scope, fatality and address", () => {
    const cause = new Error("socket reset");
    const error = new WsqError("wsq:forbidden", "no right to publish on a.b", {
      scope: "link",
      fatal: true,
      address: "a.b",
      cause,
    });
    assert.ok(error instanceof Error);
    assert.equal(error.name, "WsqError");
    assert.equal(error.message, "wsq:forbidden: no right to publish on a.b");
    assert.equal(error.condition, "wsq:forbidden");
    assert.equal(error.description, "no right to publish on a.b");
    assert.equal(error.scope, "link");
    assert.equal(error.fatal, true);
    assert.equal(error.address, "a.b");
    assert.equal(error.cause, cause);
  });

  test("defaults: client scope, not fatal, no address, no cause, the condition as message", () => {
    const error = new WsqError("wsq-client:closed");
    assert.equal(error.message, "wsq-client:closed");
    assert.equal(error.description, "");
    assert.equal(error.scope, "client");
    assert.equal(error.fatal, false);
    assert.equal("address" in error, false);
    assert.equal("cause" in error, false);
  });
});

describe("reporting a callback's bug", () => {
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

  test("reportListenerError hands the error to the platform's reportError", () => {
    const error = new Error("listener bug");
    reportListenerError(error);
    assert.deepEqual(reported, [error]);
  });

  test("without reportError it is logged, with what it is", () => {
    globalThis.reportError = undefined;
    const logged = [];
    const original = console.error;
    console.error = (...args) => logged.push(args);
    try {
      const error = new Error("listener bug");
      reportListenerError(error);
      assert.deepEqual(logged, [["wsq-client: a listener threw", error]]);
    } finally {
      console.error = original;
    }
  });

  test("guarded passes arguments through, and reports a throw instead of raising it", () => {
    const seen = [];
    guarded((a, b) => seen.push(a + b))(2, 3);
    assert.deepEqual(seen, [5]);
    const error = new Error("boom");
    assert.doesNotThrow(() =>
      guarded(() => {
        throw error;
      })(),
    );
    assert.deepEqual(reported, [error]);
  });

  test("guarded reports a rejected promise, and ignores a value that is not one", async () => {
    const error = new Error("async boom");
    guarded(async () => {
      throw error;
    })();
    guarded(() => ({ catch: 5 }))();
    guarded(() => 0)();
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(reported, [error]);
  });
});
