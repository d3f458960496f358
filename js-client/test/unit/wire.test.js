// src/wire.js: the grammar, the frames the client sends (exact JSON), and the checks on what
// the server sends (a frame that breaks the contract is a Violation). Pure functions.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { WsqError } from "../../src/errors.js";
import {
  AUTH_CONDITIONS,
  DEFAULT_MAX_FRAME_BYTES,
  FINAL_LINK_CONDITIONS,
  MAX_CH,
  MAX_U32,
  OUTCOMES,
  SUBPROTOCOL,
  TRANSFER_OVERHEAD,
  Violation,
  checkFlow,
  checkFrame,
  checkRefresh,
  checkTransfer,
  comparePositions,
  dispositionLast,
  expandTransfers,
  frame,
  fromWire,
  isAddress,
  isObject,
  isPattern,
  isPosition,
  isSubscribable,
  isUint,
  parseMessage,
  readOpen,
  utf8Length,
} from "../../src/wire.js";

describe("constants", () => {
  test("the contract's numbers and sets", () => {
    assert.equal(SUBPROTOCOL, "wsq.v1");
    assert.equal(MAX_U32, 4294967295);
    assert.equal(MAX_CH, 65535);
    assert.equal(DEFAULT_MAX_FRAME_BYTES, 1048576);
    assert.equal(TRANSFER_OVERHEAD, 128);
    assert.deepEqual([...OUTCOMES], ["accepted", "released", "rejected", "modified"]);
    assert.deepEqual(
      [...FINAL_LINK_CONDITIONS],
      ["wsq:forbidden", "wsq:invalid-frame", "wsq:not-found"],
    );
    assert.deepEqual([...AUTH_CONDITIONS], ["wsq:unauthorized", "wsq:token-expired"]);
  });
});

describe("grammar", () => {
  test("addresses: dot-separated tokens of [A-Za-z0-9_-], at most 255 characters", () => {
    for (const ok of ["a", "news.eu", "A-b_9.x", "a.b.c.d", "x".repeat(255)]) {
      assert.equal(isAddress(ok), true, ok);
    }
    for (const bad of [
      "",
      ".a",
      "a.",
      "a..b",
      "a b",
      "a.*",
      ">",
      "é",
      "x".repeat(256),
      " a",
      "a ",
      "a\n",
      "$sys.stats",
      42,
      null,
      undefined,
      ["a"],
    ]) {
      assert.equal(isAddress(bad), false, JSON.stringify(bad));
    }
  });

  test("what a subscription may name: an address, or $sys. and an address", () => {
    assert.equal(isSubscribable("a.b"), true);
    assert.equal(isSubscribable("$sys.stats"), true);
    assert.equal(isSubscribable("$sys.stats.x"), true);
    assert.equal(isSubscribable("$sys."), false);
    assert.equal(isSubscribable("$sys"), false);
    assert.equal(isSubscribable("x$sys.stats"), false);
    assert.equal(isSubscribable("$sys.a b"), false);
    assert.equal(isSubscribable("$sy.stats"), false);
    assert.equal(isSubscribable(`$sys.${"x".repeat(255)}`), true);
    assert.equal(isSubscribable(`$sys.${"x".repeat(256)}`), false);
    assert.equal(isSubscribable(7), false);
    assert.equal(isSubscribable(null), false);
  });

  test("patterns: tokens or *, optionally ending with >; > alone", () => {
    for (const ok of [">", "*", "a", "a.*", "*.b", "a.>", "a.*.>", "*.*", "a-b_c.D9"]) {
      assert.equal(isPattern(ok), true, ok);
    }
    for (const bad of ["", "a.", ".a", "a>", "a.>.b", ">.a", "**", "a*", "a..b", "a b", "x>"]) {
      assert.equal(isPattern(bad), false, bad);
    }
  });

  test("positions: <ms>-<seq>, each part 1 to 19 digits", () => {
    for (const ok of ["0-0", "1-2", `${"9".repeat(19)}-${"9".repeat(19)}`]) {
      assert.equal(isPosition(ok), true, ok);
    }
    for (const bad of ["", "1", "1-", "-1", "a-1", "1-1-1", ` 1-1`, `1-1 `, `${"1".repeat(20)}-0`]) {
      assert.equal(isPosition(bad), false, bad);
    }
  });

  test("positions compare as numbers: -1, 0 or 1, leading zeros aside", () => {
    assert.equal(comparePositions("1-0", "2-0"), -1);
    assert.equal(comparePositions("2-0", "1-0"), 1);
    assert.equal(comparePositions("10-0", "9-0"), 1);
    assert.equal(comparePositions("9-0", "10-0"), -1);
    assert.equal(comparePositions("5-3", "5-4"), -1);
    assert.equal(comparePositions("5-4", "5-3"), 1);
    assert.equal(comparePositions("5-3", "5-3"), 0);
    assert.equal(comparePositions("007-0", "7-0"), 0);
    assert.equal(comparePositions("0-0", "000-0"), 0);
    assert.equal(comparePositions("0-0", "0-1"), -1);
    assert.equal(comparePositions("00-1", "0-01"), 0);
    assert.equal(comparePositions("010-0", "9-0"), 1);
    assert.equal(comparePositions("100-0", "10-0"), 1, "only leading zeros go");
    assert.equal(comparePositions("5-100", "5-10"), 1);
    assert.equal(comparePositions("10-0", "100-0"), -1);
    assert.throws(() => comparePositions("1-0", "x"), { name: "TypeError", message: "not positions: 1-0, x" });
    assert.throws(() => comparePositions("x", "1-0"), TypeError);
  });

  test("isObject and isUint", () => {
    assert.equal(isObject({}), true);
    assert.equal(isObject(null), false);
    assert.equal(isObject([]), false);
    assert.equal(isObject("x"), false);
    assert.equal(isUint(0), true);
    assert.equal(isUint(-1), false);
    assert.equal(isUint(1.5), false);
    assert.equal(isUint("1"), false);
    assert.equal(isUint(Number.MAX_SAFE_INTEGER), true);
    assert.equal(isUint(Number.MAX_SAFE_INTEGER + 1), false);
    assert.equal(isUint(5, 5), true);
    assert.equal(isUint(6, 5), false);
  });

  test("UTF-8 lengths: 1, 2, 3 and 4 bytes; a lone surrogate counts 3", () => {
    assert.equal(utf8Length(""), 0);
    assert.equal(utf8Length("a\u007f"), 2);
    assert.equal(utf8Length("\u0080"), 2);
    assert.equal(utf8Length("é\u07ff"), 4);
    assert.equal(utf8Length("\u0800"), 3);
    assert.equal(utf8Length("€"), 3);
    assert.equal(utf8Length("😀"), 4);
    assert.equal(utf8Length("😀a"), 5);
    assert.equal(utf8Length("\ud83d"), 3); // a high surrogate at the end: one replacement char
    assert.equal(utf8Length("\ude00"), 3); // a low surrogate alone
    assert.equal(utf8Length("\udbff\udfff"), 4);
    assert.equal(utf8Length("\udc00a"), 4);
    assert.equal(utf8Length("\ud7ff"), 3);
    assert.equal(utf8Length("\ud800\udc00"), 4, "the first high surrogate");
    assert.equal(utf8Length("\u0800\u0800"), 6);
    assert.equal(utf8Length("€€"), 6);
    assert.equal(utf8Length("\ue000\ue000"), 6);
    assert.equal(utf8Length("\ue000"), 3);
    for (const s of ["héllo wörld €😀", "abc", "\u0800\u07ff\u0080\u007f"]) {
      assert.equal(utf8Length(s), Buffer.byteLength(s), s);
    }
  });
});

describe("frames the client sends", () => {
  test("session and link frames, exactly", () => {
    assert.deepEqual(frame.open("t", 30000, "me/1", true), {
      op: "open",
      token: "t",
      idle: 30000,
      client: "me/1",
      compact: true,
      rows: true,
    });
    // Rows only with compact: compact false asks neither.
    assert.equal(frame.open("t", 30000, "me/1", false).rows, false);
    assert.deepEqual(frame.begin(3), { op: "begin", ch: 3 });
    assert.deepEqual(frame.end(3), { op: "end", ch: 3 });
    assert.deepEqual(frame.refresh("t2"), { op: "refresh", token: "t2" });
    assert.deepEqual(frame.close(null), { op: "close" });
    assert.deepEqual(frame.close({ condition: "c" }), { op: "close", error: { condition: "c" } });
    assert.deepEqual(frame.detach(1, 2), { op: "detach", ch: 1, handle: 2 });
    assert.deepEqual(frame.flow(1, 2, 3), { op: "flow", ch: 1, handle: 2, credit: 3 });
    assert.deepEqual(frame.disposition(1, 7, "released"), {
      op: "disposition",
      ch: 1,
      first: 7,
      outcome: "released",
    });
    assert.deepEqual(frame.sender(1, 2, "a.b"), {
      op: "attach",
      ch: 1,
      handle: 2,
      role: "sender",
      address: "a.b",
    });
  });

  test("a copy receiver: from, or rewind instead; conflate; filter, settled, presence", () => {
    assert.deepEqual(frame.receiver(0, 1, { address: "a", mode: "copy", from: "$", credit: 5 }), {
      op: "attach",
      ch: 0,
      handle: 1,
      role: "receiver",
      address: "a",
      mode: "copy",
      from: "$",
      credit: 5,
    });
    const all = frame.receiver(2, 3, {
      address: "a",
      mode: "copy",
      from: "1-1",
      rewind: 10,
      conflate: { ms: 50, by: "subject" },
      group: "g",
      lease: 500,
      filter: { subject: "x.*" },
      settled: true,
      presence: true,
      credit: 7,
    });
    assert.deepEqual(all, {
      op: "attach",
      ch: 2,
      handle: 3,
      role: "receiver",
      address: "a",
      mode: "copy",
      rewind: 10,
      conflate: { ms: 50, by: "subject" },
      filter: { subject: "x.*" },
      settled: true,
      presence: true,
      credit: 7,
    });
    assert.deepEqual(Object.keys(all), [
      "op",
      "ch",
      "handle",
      "role",
      "address",
      "mode",
      "rewind",
      "conflate",
      "filter",
      "settled",
      "presence",
      "credit",
    ]);
  });

  test("a move receiver: group and lease, never from, rewind or conflate", () => {
    assert.deepEqual(
      frame.receiver(0, 0, {
        address: "q",
        mode: "move",
        from: "$",
        rewind: 3,
        conflate: { ms: 10 },
        group: "workers",
        lease: 1000,
        settled: false,
        presence: false,
        credit: 1,
      }),
      {
        op: "attach",
        ch: 0,
        handle: 0,
        role: "receiver",
        address: "q",
        mode: "move",
        group: "workers",
        lease: 1000,
        credit: 1,
      },
    );
    assert.deepEqual(frame.receiver(0, 0, { address: "q", mode: "move", credit: 1 }), {
      op: "attach",
      ch: 0,
      handle: 0,
      role: "receiver",
      address: "q",
      mode: "move",
      credit: 1,
    });
  });

  test("a publish's tail and its transfer text", () => {
    assert.equal(frame.publishTail({ a: 1 }, { message_id: "m" }), '"body":{"a":1},"props":{"message_id":"m"}}');
    assert.equal(frame.publishTail(undefined, {}), '"body":null,"props":{}}');
    assert.equal(frame.publishTail(0, {}), '"body":0,"props":{}}');
    const text = frame.transfer(1, 2, 3, frame.publishTail("x", {}));
    assert.equal(
      text,
      '{"op":"transfer","ch":1,"handle":2,"delivery":3,"settled":false,"body":"x","props":{}}',
    );
    assert.deepEqual(JSON.parse(text), {
      op: "transfer",
      ch: 1,
      handle: 2,
      delivery: 3,
      settled: false,
      body: "x",
      props: {},
    });
  });

  test("frame is frozen", () => {
    assert.equal(Object.isFrozen(frame), true);
  });
});

describe("what the server sends", () => {
  const violation = (fn, message) =>
    assert.throws(fn, (e) => e instanceof Violation && (message === undefined || e.message === message));

  test("a message is a frame or a batch of them; JSON text only", () => {
    assert.deepEqual(parseMessage('{"op":"open"}'), [{ op: "open" }]);
    assert.deepEqual(parseMessage("[]"), []);
    assert.deepEqual(parseMessage('[{"op":"a"},{"op":"b"}]'), [{ op: "a" }, { op: "b" }]);
    assert.deepEqual(parseMessage("42"), [42]);
    violation(() => parseMessage(Buffer.from("{}")), "a binary message");
    violation(() => parseMessage("{nope"), "a message that is not JSON");
    assert.ok(new Violation("x") instanceof Error);
  });

  test("a frame needs a known op, and before open only open or close", () => {
    violation(() => checkFrame(null, true), "a frame without an op");
    violation(() => checkFrame([], true), "a frame without an op");
    violation(() => checkFrame({ op: 1 }, true), "a frame without an op");
    violation(() => checkFrame({}, true), "a frame without an op");
    violation(() => checkFrame({ op: "flow" }, false), '"flow" before open');
    checkFrame({ op: "open" }, false);
    checkFrame({ op: "close" }, false);
    violation(() => checkFrame({ op: "x".repeat(100) }, true), `an unknown op "${"x".repeat(64)}"`);
    for (const op of [
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
    ]) {
      checkFrame({ op }, true);
    }
    violation(() => checkFrame({ op: "launch" }, true), 'an unknown op "launch"');
  });

  test("the open answer: defaults and lower bounds", () => {
    assert.deepEqual(readOpen({ op: "open" }), {
      node: null,
      tenant: null,
      sub: null,
      exp: null,
      idle: 0,
      maxSessions: 1024,
      maxFrameBytes: 1048576,
      compact: false,
      rows: false,
    });
    assert.deepEqual(
      readOpen({
        node: "n",
        tenant: "t",
        sub: "s",
        exp: 99,
        idle: 500,
        max_sessions: 3,
        max_frame_bytes: 2048,
        compact: true,
        rows: true,
      }),
      {
        node: "n",
        tenant: "t",
        sub: "s",
        exp: 99,
        idle: 500,
        maxSessions: 3,
        maxFrameBytes: 2048,
        compact: true,
        rows: true,
      },
    );
    const low = readOpen({ idle: -1, max_sessions: 0, max_frame_bytes: 1023, exp: -5, compact: "yes", node: 1 });
    assert.equal(low.idle, 0);
    assert.equal(low.maxSessions, 1024);
    assert.equal(low.maxFrameBytes, 1048576);
    assert.equal(low.exp, null);
    assert.equal(low.compact, false);
    assert.equal(low.rows, false);
    // Rows only ever with compact; a `rows` that is not true is not.
    assert.equal(readOpen({ compact: false, rows: true }).rows, false);
    assert.equal(readOpen({ compact: true, rows: "yes" }).rows, false);
    assert.equal(low.node, null);
    const edge = readOpen({ idle: 0, max_sessions: 1, max_frame_bytes: 1024, exp: 0 });
    assert.equal(edge.maxSessions, 1);
    assert.equal(edge.maxFrameBytes, 1024);
    assert.equal(edge.exp, 0);
    assert.equal(readOpen({ idle: 1.5 }).idle, 0);
  });

  test("flow, transfer, refresh: their fields checked", () => {
    checkFlow({ credit: 0 });
    checkFlow({ credit: MAX_U32 });
    violation(() => checkFlow({ credit: MAX_U32 + 1 }), "a flow without a valid credit");
    violation(() => checkFlow({ credit: -1 }));
    violation(() => checkFlow({}));
    checkTransfer({ id: "1-0", delivery: 0 });
    violation(() => checkTransfer({ id: 5, delivery: 0 }), "a transfer without a valid id");
    violation(() => checkTransfer({ id: ["1-0"], delivery: 0 }), "a transfer without a valid id");
    violation(() => checkTransfer({ id: "5", delivery: 0 }), "a transfer without a valid id");
    violation(() => checkTransfer({ delivery: 0 }), "a transfer without a valid id");
    violation(() => checkTransfer({ id: "1-0", delivery: -1 }), "a transfer without a valid delivery number");
    violation(() => checkTransfer({ id: "1-0" }), "a transfer without a valid delivery number");
    checkRefresh({ exp: 0 });
    violation(() => checkRefresh({}), "a refresh without exp");
    violation(() => checkRefresh({ exp: "1" }), "a refresh without exp");
  });

  test("a compact frame stands for its transfers, numbered from delivery", () => {
    assert.deepEqual(
      expandTransfers({
        delivery: 4,
        settled: true,
        msgs: [
          { id: "1-0", body: "a", props: { s: 1 } },
          { id: "1-1", body: "b" },
        ],
      }),
      [
        { id: "1-0", body: "a", props: { s: 1 }, delivery: 4, settled: true },
        { id: "1-1", body: "b", props: undefined, delivery: 5, settled: true },
      ],
    );
    violation(() => expandTransfers({ msgs: [{}] }), "transfers without a valid delivery number");
    violation(() => expandTransfers({ delivery: 0 }), "transfers without msgs");
    violation(() => expandTransfers({ delivery: 0, msgs: [] }), "transfers without msgs");
    violation(() => expandTransfers({ delivery: 0, msgs: {} }), "transfers without msgs");
    violation(
      () => expandTransfers({ delivery: 2 ** 53 - 5, msgs: Array(10).fill({}) }),
      "transfers numbered too far",
    );
    const last = expandTransfers({ delivery: Number.MAX_SAFE_INTEGER - 9, msgs: Array(10).fill({}) });
    assert.equal(last.at(-1).delivery, Number.MAX_SAFE_INTEGER);
    violation(
      () => expandTransfers({ delivery: 0, msgs: [{}, null] }),
      "transfers with a message that is not an object",
    );
    violation(() => expandTransfers({ delivery: 0, msgs: [[]] }));
  });

  test("compact rows: each shape stands for the object it leaves out fields of", () => {
    const props = { ts: 7, publisher: "p" };
    const objects = [
      { id: "7-0", body: { n: 0 }, props },
      { id: "7-1", body: "one", props },
      { id: "7-2", body: null, props },
      { id: "8-0", body: [1, 2], props },
      { id: "8-1", body: 5, props: { ts: 8 } },
      { id: "8-2", body: false, props: { ts: 8 } },
      { id: "9-4", body: "x", props: { ts: 8 } },
    ];
    const rows = [
      ["7-0", { n: 0 }, props],
      ["one"],
      [null],
      ["8-0", [1, 2]],
      ["8-1", 5, { ts: 8 }],
      [false],
      ["9-4", "x"],
    ];
    const f = (msgs) => ({ delivery: 3, settled: false, msgs });
    const expected = expandTransfers(f(objects));
    assert.deepEqual(expandTransfers(f(rows)), expected);
    assert.deepEqual(
      expected.map((t) => [t.id, t.delivery, t.settled]),
      objects.map((m, i) => [m.id, 3 + i, false]),
    );
    // Objects and rows mixed: a row follows an object as it follows a row.
    const mixed = [objects[0], ["one"], [null], ["8-0", [1, 2]], objects[4], [false], ["9-4", "x"]];
    assert.deepEqual(expandTransfers(f(mixed)), expected);
    // A body that is itself an array stays the body; a one-element row whose body is an array.
    assert.deepEqual(
      expandTransfers(f([["1-9", ["a"], {}], [["b"]], [[]]])).map((t) => [t.id, t.body]),
      [
        ["1-9", ["a"]],
        ["1-10", ["b"]],
        ["1-11", []],
      ],
    );
    // Sequence digits past a power of ten, a long ms kept as written, up to 2^53 - 1 exactly.
    const top = Number.MAX_SAFE_INTEGER;
    assert.deepEqual(
      expandTransfers(f([[`1732200000000-${top - 2}`, 0, {}], [1], [2]])).map((t) => t.id),
      [`1732200000000-${top - 2}`, `1732200000000-${top - 1}`, `1732200000000-${top}`],
    );
  });

  test("compact rows: each message its own shallow copy of the props it shares", () => {
    const shared = { ts: 1, headers: { h: "1" } };
    const out = expandTransfers({ delivery: 0, msgs: [["1-0", "a", shared], ["1-1", "b"], ["c"]] });
    assert.deepEqual(out.map((t) => t.props), [shared, shared, shared]);
    assert.notEqual(out[1].props, out[0].props);
    assert.notEqual(out[2].props, out[1].props);
    out[0].props.mine = true;
    out[1].props.ts = 99;
    assert.deepEqual(out[2].props, { ts: 1, headers: { h: "1" } });
    assert.equal(out[1].props.mine, undefined);
    // Shallow: what the props hold is shared (as equal values are in plain frames too).
    assert.equal(out[2].props.headers, shared.headers);
  });

  test("compact rows that break the form: a Violation", () => {
    const bad = (msgs, message) => violation(() => expandTransfers({ delivery: 0, msgs }), message);
    const first = ["5-0", "a", { ts: 5 }];
    // Lengths other than 1..3.
    bad([[]], "transfers with a row of another length");
    bad([first, []], "transfers with a row of another length");
    bad([first, ["5-1", "b", {}, 1]], "transfers with a row of another length");
    bad([["5-0", "a", {}, 1]], "transfers with a row of another length");
    // A first element of two or one: nothing before it to share.
    bad([["5-0", "a"]], "transfers whose first row leaves out what it shares");
    bad([["a"]], "transfers whose first row leaves out what it shares");
    // Props that are not an object, in the row or taken from the element before.
    for (const props of [null, [], "p", 1, undefined]) {
      bad([["5-0", "a", props]], "transfers with a row whose props are not an object");
      bad([{ id: "5-0", body: "a", props }, ["b"]], "transfers with a row whose props are not an object");
      bad([{ id: "5-0", body: "a", props }, ["5-1", "b"]], "transfers with a row whose props are not an object");
    }
    // A `[body]` row after an id that is not `<ms>-<seq>`.
    for (const id of [5, "5", "5-", "-1", "a-1", "5-1-2", "5-x", " 5-1", "1".repeat(20) + "-1", null, undefined]) {
      bad([[id, "a", {}], ["b"]], "transfers with a row after an invalid id");
      bad([first, [id, "a"], ["b"]], "transfers with a row after an invalid id");
      bad([{ id, body: "a", props: {} }, ["b"]], "transfers with a row after an invalid id");
    }
    // The sequence one higher past 2^53 - 1 (the server never sends that).
    bad([[`1-${Number.MAX_SAFE_INTEGER}`, 0, {}], [1]], "transfers with a row past 2^53");
    bad([["1-99999999999999999", 0, {}], [1]], "transfers with a row past 2^53");
    // Not a row nor an object, after rows.
    bad([first, "b"], "transfers with a message that is not an object");
    // An id that is not one, where no row needs it, is found as the transfer is taken.
    const [t] = expandTransfers({ delivery: 0, msgs: [["x", "a", {}]] });
    violation(() => checkTransfer(t), "a transfer without a valid id");
  });

  test("a disposition's last: first by default, never before first", () => {
    assert.equal(dispositionLast({ first: 3 }), 3);
    assert.equal(dispositionLast({ first: 3, last: 3 }), 3);
    assert.equal(dispositionLast({ first: 3, last: 9 }), 9);
    violation(() => dispositionLast({ first: 3, last: 2 }), "a disposition with a bad last");
    violation(() => dispositionLast({ first: 3, last: "4" }), "a disposition with a bad last");
    violation(() => dispositionLast({}), "a disposition without first");
    violation(() => dispositionLast({ first: -1 }), "a disposition without first");
  });

  test("an error from the wire: a WsqError, bounded, internal-error when malformed", () => {
    const e = fromWire({ condition: "wsq:forbidden", description: "no" }, "link", "a.b");
    assert.ok(e instanceof WsqError);
    assert.equal(e.condition, "wsq:forbidden");
    assert.equal(e.description, "no");
    assert.equal(e.scope, "link");
    assert.equal(e.address, "a.b");
    const none = fromWire(null, "connection");
    assert.equal(none.condition, "wsq:internal-error");
    assert.equal(none.description, "");
    assert.equal(none.scope, "connection");
    assert.equal("address" in none, false);
    const odd = fromWire({ condition: 5, description: 6 }, "session");
    assert.equal(odd.condition, "wsq:internal-error");
    assert.equal(odd.description, "");
    assert.equal(fromWire("wsq:forbidden", "x").condition, "wsq:internal-error");
    const long = fromWire({ condition: "c".repeat(300), description: "d".repeat(5000) }, "link");
    assert.equal(long.condition, "c".repeat(256));
    assert.equal(long.description, "d".repeat(4096));
  });
});
