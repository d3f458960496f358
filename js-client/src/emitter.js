// Events: the on/once/off of Client and Subscription. Emitting is internal (the EMIT symbol), and
// a listener that throws is reported, never thrown into the client.

import { reportListenerError } from "./errors.js";

export const EMIT = Symbol("emit");

export class Emitter {
  #listeners = new Map();

  /** Call `listener` on every `event`; answers this. */
  on(event, listener) {
    if (typeof listener !== "function") throw new TypeError("listener must be a function");
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, (set = new Set()));
    set.add(listener);
    return this;
  }

  /** Call `listener` on the next `event` only. */
  once(event, listener) {
    if (typeof listener !== "function") throw new TypeError("listener must be a function");
    const wrapper = (...args) => {
      this.off(event, wrapper);
      listener.apply(this, args);
    };
    wrapper.listener = listener;
    return this.on(event, wrapper);
  }

  off(event, listener) {
    const set = this.#listeners.get(event);
    if (!set) return this;
    for (const fn of set) if (fn === listener || fn.listener === listener) set.delete(fn);
    if (!set.size) this.#listeners.delete(event);
    return this;
  }

  listenerCount(event) {
    return this.#listeners.get(event)?.size ?? 0;
  }

  [EMIT](event, ...args) {
    const set = this.#listeners.get(event);
    if (!set) return false;
    for (const fn of [...set]) {
      try {
        fn.apply(this, args);
      } catch (error) {
        reportListenerError(error);
      }
    }
    return true;
  }
}
