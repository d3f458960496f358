// Errors: the WsqError every failure reaches the user as, and how the client reports a bug (its
// own or a listener's) without throwing it into the platform's event loop.

/** An error with a wsq condition (`wsq:forbidden`, …) or a client one (`wsq-client:closed`, …). */
export class WsqError extends Error {
  constructor(condition, description = "", details = {}) {
    super(
      description ? `${condition}: ${description}` : condition,
      details.cause !== undefined ? { cause: details.cause } : undefined,
    );
    this.name = "WsqError";
    this.condition = condition;
    this.description = description;
    this.scope = details.scope ?? "client";
    this.fatal = details.fatal ?? false;
    if (details.address !== undefined) this.address = details.address;
  }
}

export function reportListenerError(error) {
  // A listener's own bug must not break the client; surface it the way the platform does.
  if (typeof globalThis.reportError === "function") globalThis.reportError(error);
  else console.error("wsq-client: a listener threw", error);
}

/** `fn` for a callback the platform calls (socket events, timers, microtasks): a bug of ours in
 * there is reported, never thrown into the event loop (where Node would end the process). */
export function guarded(fn) {
  return (...args) => {
    try {
      const result = fn(...args);
      if (result && typeof result.catch === "function") result.catch(reportListenerError);
    } catch (error) {
      reportListenerError(error);
    }
  };
}
