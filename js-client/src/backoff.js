// When to try again: full-jitter exponential backoff for reconnects and link retries, the prompt
// return after `wsq:going-away`, and what counts as a connection that lasted.

// A connection that stayed up this long resets the backoff: one that dies right after its open
// (a node that accepts and fails) keeps backing off instead of looping.
export const STABLE_MS = 5000;

export class Backoff {
  /** `base` and `ceiling` in ms: attempt n waits a random time in [0, min(ceiling, base·2ⁿ)). */
  constructor(base, ceiling) {
    this.base = base;
    this.ceiling = ceiling;
    this.attempts = 0; // failed connections since the last stable one (the exponent)
  }

  /** Full jitter: uniformly random up to an exponentially growing ceiling. */
  delay(attempt) {
    const ceiling = Math.min(this.ceiling, this.base * 2 ** Math.min(attempt, 30));
    return Math.floor(Math.random() * ceiling);
  }

  /** The delay after one more failed connection. */
  next() {
    return this.delay(this.attempts++);
  }

  /** A draining node: come back promptly (jittered, so a node's clients spread out). */
  soon() {
    return Math.floor(Math.random() * Math.min(this.base, 1000));
  }
}
