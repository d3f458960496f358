// src/index.d.ts against what src/index.js really exports. The test imports index.js, writes
// what it finds as type assertions on `typeof import("…/index.js")` (which TypeScript reads from
// index.d.ts) and has tsc check them: an export, a class member or a constant's value that one
// side has and the other lacks fails here, naming it.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import * as wsq from "../src/index.js";

const INDEX = fileURLToPath(new URL("../src/index.js", import.meta.url));
const TSC = path.join(
  path.dirname(createRequire(import.meta.url).resolve("typescript/package.json")),
  "bin",
  "tsc",
);

const isClass = (v) =>
  typeof v === "function" && /^class\b/.test(Function.prototype.toString.call(v));

/** Public member names of `object` and its prototypes: not `_private` ones, nor those every
 * object has (`constructor`, `toString`, …), which TypeScript does not list either. */
function members(object) {
  const names = new Set();
  for (let o = object; o && o !== Object.prototype; o = Object.getPrototypeOf(o)) {
    for (const name of Object.getOwnPropertyNames(o)) {
      if (!name.startsWith("_") && !(name in Object.prototype)) names.add(name);
    }
  }
  return [...names].sort();
}

/** One instance of each exported class, built the way the client builds them; the client is
 * closed again before anything is checked (its timers would keep the test alive). */
async function instances() {
  class IdleSocket {
    readyState = 0;
    send() {}
    close() {
      this.readyState = 3;
    }
  }
  const client = new wsq.Client("ws://127.0.0.1:9/ws", { token: "t", WebSocket: IdleSocket });
  const subscription = client.subscribe("a.b", () => {});
  const message = new wsq.Message(subscription, null, { id: "1-0", delivery: 0, body: null });
  const error = new wsq.WsqError("wsq:forbidden", "no", { address: "a.b", cause: "why" });
  await client.close();
  return { Client: client, Subscription: subscription, Message: message, WsqError: error };
}

const union = (names) => (names.length ? names.map((n) => JSON.stringify(n)).join(" | ") : "never");

test("index.d.ts declares exactly what index.js exports", async () => {
  const made = await instances();
  const lines = [
    `import * as wsq from ${JSON.stringify(INDEX)};`,
    "type Declared = keyof typeof wsq;",
    '/** "ok" when T is never, else T itself: assigning "ok" then fails naming what is left. */',
    'type None<T> = [T] extends [never] ? "ok" : T;',
  ];
  const labels = new Map(); // line number -> what a failure there means
  /** `export const <id>: <type> = <value>;`, which tsc refuses when `label` is the case. */
  const check = (label, id, type, value = '"ok"') => {
    lines.push(`export const ${id}: ${type} = ${value};`);
    labels.set(lines.length, label);
  };
  const exported = Object.keys(wsq).sort();
  lines.push(`type Exported = ${union(exported)};`);
  const onlyJs = "None<Exclude<Exported, Declared>>";
  const onlyDts = "None<Exclude<Declared, Exported>>";
  check("exported by index.js, not declared in index.d.ts", "js", onlyJs);
  check("declared in index.d.ts, not exported by index.js", "dts", onlyDts);
  for (const name of exported) {
    const value = wsq[name];
    const type = `(typeof wsq)[${JSON.stringify(name)}]`;
    const alias = exported.find((other) => other !== name && wsq[other] === value);
    if (name === "default" && alias) {
      const other = `(typeof wsq)[${JSON.stringify(alias)}]`;
      const differ = `Exclude<${type}, ${other}> | Exclude<${other}, ${type}>`;
      check(`default is ${alias} in index.js`, "default_", `None<${differ}>`);
    } else if (isClass(value)) {
      const instance = made[name];
      if (!instance) {
        check(`no ${name} to compare: teach instances() to build one`, `${name}_`, '"missing"');
        continue;
      }
      const runtime = union(members(instance));
      const declared = `keyof InstanceType<${type}>`;
      check(
        `${name}: public members in index.js, not declared in index.d.ts`,
        `${name}_js`,
        `None<Exclude<${runtime}, ${declared}>>`,
      );
      check(
        `${name}: public members declared in index.d.ts, not in index.js`,
        `${name}_dts`,
        `None<Exclude<${declared}, ${runtime}>>`,
      );
    } else if (typeof value === "function") {
      const fn = `${type} extends (...args: any[]) => any ? "ok" : "not a function"`;
      check(`${name} is a function in index.js`, `${name}_`, fn);
    } else {
      const literal = JSON.stringify(value);
      check(`${name} is ${literal} in index.js`, `${name}_`, type, literal);
    }
  }

  const dir = mkdtempSync(path.join(os.tmpdir(), "wsq-exports-"));
  try {
    const file = path.join(dir, "exports.mts");
    writeFileSync(file, `${lines.join("\n")}\n`);
    const args = ["--noEmit", "--strict", "--skipLibCheck", "false", "--target", "es2022"];
    args.push("--module", "nodenext", "--moduleResolution", "nodenext", "--types", "", file);
    const run = spawnSync(process.execPath, [TSC, ...args], { encoding: "utf8" });
    const output = `${run.stdout}${run.stderr}`;
    const failures = output
      .split("\n")
      .map((line) => {
        const at = /exports\.mts\((\d+),\d+\): error \w+: (.*)/.exec(line);
        return at && `${labels.get(Number(at[1])) ?? "index.d.ts"}: ${at[2]}`;
      })
      .filter(Boolean);
    assert.deepEqual(failures, [], output);
    assert.equal(run.status, 0, output);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
