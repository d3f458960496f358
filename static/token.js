// Where the pages (/ and /ops) get their token, one way for both: from the URL's fragment
// (#token=…, read once and taken out of the address bar), else from GET /dev/token when GET
// /demo/config says this page may have one (development mode, on this machine), else from the
// paste field. A token goes to this gateway only, and is never logged.

/** A token given in the URL's fragment (#token=…): read once, then taken out of the address bar
 * and the history entry (a fragment never reaches a server, nor a Referer). */
function takeFragmentToken() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (token === null) return null;
  params.delete("token");
  const rest = params.toString();
  history.replaceState(null, "", `${location.pathname}${location.search}${rest ? `#${rest}` : ""}`);
  return token.trim() || null;
}

/** The JSON answer of a GET on this gateway, or null (an error status, or no answer). */
export async function fetchJson(path) {
  try {
    const response = await fetch(path, { cache: "no-store" });
    return response.ok ? await response.json() : null;
  } catch {
    return null;
  }
}

/** This tab's name for development tokens ("guest-1a2b"), kept for the tab's life. */
function guestName() {
  let name = sessionStorage.getItem("wsq-demo-sub");
  if (!name) {
    name = `guest-${Math.random().toString(16).slice(2, 6)}`;
    sessionStorage.setItem("wsq-demo-sub", name);
  }
  return name;
}

/** The token of a page: `input` is its paste field (a password input). */
export class PageToken {
  constructor(input) {
    this.input = input;
    this.devTokens = false; // GET /demo/config said /dev/token answers this page
    this.devToken = null; // the last token from /dev/token
    // The token function given to the Client: asked at connect, reconnect and before expiry.
    this.forClient = () => this._forClient();
  }

  /** Fills the field from #token=… or /dev/token; true when the page has a token to try.
   * /demo/config is asked first, so that a gateway with tenants never sees a request for
   * /dev/token (a 404 in the console). */
  async start() {
    const given = takeFragmentToken();
    const config = await fetchJson("/demo/config");
    this.devTokens = config?.dev_token === true;
    if (given) {
      this.input.value = given;
      return true;
    }
    this.devToken = await this._fetchDevToken();
    if (this.devToken) this.input.value = this.devToken;
    return this.devToken !== null;
  }

  /** Whether Connect has something to connect with. */
  get present() {
    return this.input.value.trim() !== "" || this.devToken !== null;
  }

  async _fetchDevToken() {
    if (!this.devTokens) return null;
    const answer = await fetchJson(`/dev/token?sub=${encodeURIComponent(guestName())}`);
    return typeof answer?.token === "string" ? answer.token : null;
  }

  /** A development token is fetched fresh each time, unless the user put another one in the
   * field. */
  async _forClient() {
    const typed = this.input.value.trim();
    if (this.devToken !== null && (typed === "" || typed === this.devToken)) {
      const fresh = await this._fetchDevToken();
      if (fresh) {
        this.devToken = fresh;
        this.input.value = fresh;
        return fresh;
      }
    }
    if (!typed) throw new Error("no token: paste one and press Connect");
    return typed;
  }
}
