// Test support: a real gateway (`python -m wsq serve`) and a real redis-server, each a child
// process on a free port; tokens signed here with node:crypto; a WebSocket that counts sockets.
import { spawn } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { accessSync, constants, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach } from "node:test";
import WebSocket, { WebSocketServer } from "ws";
import { Client } from "../src/index.js";

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
export const PYTHON = process.env.WSQ_PYTHON ?? path.join(REPO, ".venv", "bin", "python");
export const TENANT = "acme";
export const SECRET = `js-client-tests-${randomBytes(24).toString("hex")}`;

const b64url = (value) => Buffer.from(value).toString("base64url");

/** An HS256 token of tenant acme (or `secret`/`iss` given), rights `>` unless told. */
export function token({
  sub = "alice",
  publish = [">"],
  subscribe = [">"],
  ttl = 3600,
  iss = TENANT,
  secret = SECRET,
} = {}) {
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT", kid: "k1" }));
  const claims = { iss, sub, iat: now, exp: now + ttl, wsq: { publish, subscribe } };
  const payload = b64url(JSON.stringify(claims));
  const signature = createHmac("sha256", secret).update(`${header}.${payload}`).digest("base64url");
  return `${header}.${payload}.${signature}`;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Poll `check` until it answers something truthy; fail after `timeout` ms with `what`. */
export async function waitFor(check, what = "condition", timeout = 10000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** A WebSocket class for the client that records every socket it creates. */
export function countingWebSocket() {
  const sockets = [];
  class Counting extends WebSocket {
    constructor(...args) {
      super(...args);
      sockets.push(this);
    }
  }
  return { WebSocket: Counting, sockets };
}

function tempDir(prefix) {
  return mkdtempSync(path.join(os.tmpdir(), prefix));
}

function waitExit(proc) {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => proc.once("exit", () => resolve()));
}

/** A real `wsq serve` on its own port and config; kill it and start it again on that port. */
export class Gateway {
  static async start({ broker = "memory://", idleMs = 2000, extraTenant = "" } = {}) {
    const gw = new Gateway(broker, idleMs, extraTenant, await freePort());
    await gw.start();
    return gw;
  }

  constructor(broker, idleMs, extraTenant, port) {
    if (!existsSync(PYTHON))
      throw new Error(`no Python at ${PYTHON}: run scripts/test (or set WSQ_PYTHON)`);
    this.broker = broker;
    this.port = port;
    this.url = `ws://127.0.0.1:${port}/ws`;
    this.http = `http://127.0.0.1:${port}`;
    this.dir = tempDir("wsq-js-gw-");
    this.config = path.join(this.dir, "wsq.toml");
    writeFileSync(
      this.config,
      [
        "[server]",
        `idle_ms = ${idleMs}`,
        "",
        `[tenants.${TENANT}]`,
        `keys = [ { kid = "k1", alg = "HS256", secret = "${SECRET}" } ]`,
        "dedup_window_ms = 600000",
        "redelivery_delay_ms = 100",
        extraTenant,
      ].join("\n"),
    );
    this.proc = null;
    this.output = "";
  }

  async start() {
    const env = Object.fromEntries(
      Object.entries(process.env).filter(([k]) => !k.startsWith("WSQ_")),
    );
    const args = ["-m", "wsq", "serve", "--config", this.config, "--port", String(this.port)];
    args.push("--broker", this.broker, "--log-level", "warning");
    const proc = spawn(PYTHON, args, { cwd: REPO, env, stdio: ["ignore", "pipe", "pipe"] });
    this.proc = proc;
    const keep = (chunk) => {
      this.output = (this.output + chunk).slice(-20000);
    };
    proc.stdout.on("data", keep);
    proc.stderr.on("data", keep);
    const deadline = Date.now() + 20000;
    for (;;) {
      if (proc.exitCode !== null)
        throw new Error(`wsq serve exited ${proc.exitCode}:\n${this.output}`);
      try {
        const res = await fetch(`${this.http}/healthz`);
        if (res.status === 200) return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline)
        throw new Error(`wsq serve did not become healthy:\n${this.output}`);
      await sleep(50);
    }
  }

  async kill(signal = "SIGKILL") {
    const proc = this.proc;
    if (!proc) return;
    this.proc = null;
    proc.kill(signal);
    await waitExit(proc);
  }

  async stop() {
    await this.kill("SIGKILL");
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The first executable `name` in a folder of PATH, as a shell would find it, or undefined. */
export function onPath(name) {
  return (process.env.PATH || "")
    .split(path.delimiter)
    .filter(Boolean)
    .map((dir) => path.join(dir, name))
    .find((p) => {
      try {
        accessSync(p, constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
}

/** A throwaway redis-server (no persistence), or null when it is not installed (locally). */
export async function startRedis() {
  const exe = onPath("redis-server");
  if (!exe) {
    if (process.env.CI === "true")
      throw new Error("redis-server is not installed (required in CI)");
    return null;
  }
  const port = await freePort();
  const dir = tempDir("wsq-js-redis-");
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
  const proc = spawn(exe, [...args, "--dir", dir], { stdio: "ignore" });
  const deadline = Date.now() + 10000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`redis-server exited ${proc.exitCode}`);
    const ok = await new Promise((resolve) => {
      const socket = net.connect(port, "127.0.0.1");
      socket.on("error", () => resolve(false));
      socket.on("connect", () => socket.write("PING\r\n"));
      socket.on("data", (data) => {
        socket.destroy();
        resolve(data.toString().startsWith("+PONG"));
      });
    });
    if (ok) break;
    if (Date.now() > deadline) {
      proc.kill("SIGKILL");
      throw new Error("redis-server did not start");
    }
    await sleep(20);
  }
  return {
    url: `redis://127.0.0.1:${port}/0`,
    async stop() {
      proc.kill("SIGKILL");
      await waitExit(proc);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Collect what a subscription handler receives. */
export function collector() {
  const got = [];
  const handler = (msg) => {
    got.push(msg);
  };
  return { got, handler, bodies: () => got.map((m) => m.body) };
}

/** A WebSocket server on a free port of 127.0.0.1 that speaks wsq.v1 (the subprotocol), once
 * it listens: `{ wss, url }`, `url` being its `/ws` address. */
export async function wsqServer() {
  const wss = new WebSocketServer({
    host: "127.0.0.1",
    port: 0,
    handleProtocols: (protocols) => (protocols.has("wsq.v1") ? "wsq.v1" : false),
  });
  await new Promise((resolve) => wss.once("listening", resolve));
  return { wss, url: `ws://127.0.0.1:${wss.address().port}/ws` };
}

/** `newClient(url, options)`: a Client with the tests' defaults (the `ws` WebSocket, a 50 ms
 * reconnect delay, then `defaults()`, then `options`), closed after each test of the file. */
export function clientsClosedAfterEach(defaults = () => ({})) {
  const clients = [];
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
  });
  return (url, options = {}) => {
    const c = new Client(url, { WebSocket, reconnectDelay: 50, ...defaults(), ...options });
    clients.push(c);
    return c;
  };
}

/** A WebSocket proxy in front of `target`: it can go silent towards the client (muteDown) and
 * cut the client's socket, to lose the gateway's answers the way a network does. */
export async function wsProxy(target) {
  const { wss, url } = await wsqServer();
  const proxy = {
    url,
    connections: 0,
    muteDown: false,
    muteUp: false, // the client's messages are dropped on their way to the gateway
    lastUp: 0, // when (Date.now()) the proxy last passed a client message on
    onUp: null, // (text, cut) => void: sees every client message before it is forwarded
    sockets: new Set(),
    cutAll() {
      for (const s of proxy.sockets) s.terminate();
    },
    close() {
      proxy.cutAll();
      return new Promise((resolve) => wss.close(() => resolve()));
    },
  };
  wss.on("connection", (down) => {
    proxy.connections += 1;
    const up = new WebSocket(target, "wsq.v1");
    proxy.sockets.add(down);
    proxy.sockets.add(up);
    const waiting = [];
    const cut = () => {
      down.terminate();
      up.terminate();
    };
    up.on("open", () => {
      for (const text of waiting.splice(0)) up.send(text);
    });
    down.on("message", (data) => {
      const text = data.toString();
      proxy.onUp?.(text, cut);
      if (proxy.muteUp) return;
      proxy.lastUp = Date.now();
      if (up.readyState === WebSocket.OPEN) up.send(text);
      else if (up.readyState === WebSocket.CONNECTING) waiting.push(text);
    });
    up.on("message", (data) => {
      if (!proxy.muteDown && down.readyState === WebSocket.OPEN) down.send(data.toString());
    });
    for (const s of [up, down]) {
      s.on("error", () => {});
      s.on("close", () => {
        proxy.sockets.delete(s);
        cut();
      });
    }
  });
  return proxy;
}
