// Publish to a wsq address from a Node backend over the HTTP bridge: `fetch` and `node:crypto`
// only, no package to install (Node 18+).
//
//   WSQ_URL=http://127.0.0.1:8000 WSQ_ISSUER=acme WSQ_SECRET=... \
//     node publish.mjs chat.room1 '{"text":"hello"}' [message_id]
//
// WSQ_TOKEN=... instead of WSQ_ISSUER and WSQ_SECRET publishes with that token. Prints the
// message's position; exit code 2 when an argument or the credentials are missing, 1 with the
// wsq: condition on an error. docs/http-api.md describes the endpoint.
import { createHmac, randomUUID } from "node:crypto";
import { pathToFileURL } from "node:url";

const b64url = (data) => Buffer.from(data).toString("base64url");

/** A short-lived HS256 token signed with the tenant's secret. */
export function mintToken({ issuer, secret, sub, publish = [], subscribe = [], ttl = 300, kid }) {
  const header = { alg: "HS256", typ: "JWT", ...(kid ? { kid } : {}) };
  const now = Math.floor(Date.now() / 1000);
  const claims = { iss: issuer, sub, iat: now, exp: now + ttl, wsq: { publish, subscribe } };
  const signing = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  return `${signing}.${createHmac("sha256", secret).update(signing).digest("base64url")}`;
}

export class WsqError extends Error {
  constructor(status, condition, description, retryAfter) {
    super(`${status} ${condition}: ${description}`);
    Object.assign(this, { status, condition, description, retryAfter });
  }
}

/**
 * Publish messages; answers their positions. Retries 429 / 503 / network errors with one
 * Idempotency-Key, so that a retry never stores a message twice.
 */
export async function publish(base, token, address, messages, { tries = 5 } = {}) {
  const url = `${base.replace(/\/$/, "")}/v1/addresses/${encodeURIComponent(address)}/messages`;
  const key = randomUUID();
  for (let attempt = 1; ; attempt++) {
    let error;
    try {
      const response = await fetch(url, {
        method: "POST",
        headers: {
          authorization: `Bearer ${token}`,
          "content-type": "application/json",
          "idempotency-key": key,
        },
        body: JSON.stringify({ messages }),
        signal: AbortSignal.timeout(10_000),
      });
      const answer = response.status === 204 ? null : await response.json();
      if (response.ok) return answer.ids;
      const { condition, description } = answer?.error ?? {};
      const retryAfter = Number(response.headers.get("retry-after")) || undefined;
      error = new WsqError(response.status, condition, description, retryAfter);
    } catch (exc) {
      error = new WsqError(0, "network", String(exc));
    }
    if (![0, 429, 503].includes(error.status) || attempt >= tries) throw error;
    await new Promise((done) => setTimeout(done, 1000 * (error.retryAfter ?? attempt)));
  }
}

async function main([address, json, messageId]) {
  if (!address || json === undefined) {
    console.error("usage: node publish.mjs <address> <json body> [message_id]");
    process.exit(2);
  }
  const env = process.env;
  if (!env.WSQ_TOKEN && !(env.WSQ_ISSUER && env.WSQ_SECRET)) {
    console.error("set WSQ_TOKEN, or WSQ_ISSUER and WSQ_SECRET");
    process.exit(2);
  }
  const token =
    env.WSQ_TOKEN ||
    mintToken({
      issuer: env.WSQ_ISSUER,
      secret: env.WSQ_SECRET,
      kid: env.WSQ_KID,
      sub: "node-publisher",
      publish: [address],
    });
  const message = { body: JSON.parse(json), ...(messageId ? { message_id: messageId } : {}) };
  try {
    const [position] = await publish(env.WSQ_URL || "http://127.0.0.1:8000", token, address, [
      message,
    ]);
    console.log(position);
  } catch (exc) {
    console.error(exc.message);
    process.exit(1);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main(process.argv.slice(2));
}
