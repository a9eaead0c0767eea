// The sandbox's stand-in for Derapi's derapi-join.js (derapi/derapi join/,
// October 2024; VENDORS.md "Derapi", the widget). It keeps the real widget's
// module API and makes the same calls in the same way, so that the Join page
// and the relay's proxy are tested against that contract:
//  - an ES module with `export default { createJoin }` (a classic <script>
//    load fails on `export`, as with the real one);
//  - createJoin(sessionToken, onSuccess, onClose, derapiToken, apiUrl)
//    returns {open, close}; onSuccess() and onClose() take no arguments, and
//    onClose fires only from the close button (the failure view has none);
//  - GET {apiUrl}/join/session/{id}/vendors (a bare array of
//    {id, name, base64Logo, oAuthEndpoint}) and .../fetch-token, with
//    Authorization: Bearer {derapiToken}, api-version, Content-Type;
//  - with oAuthEndpoint: window.open(oAuthEndpoint, "*", "popup"), poll
//    popup.closed each second, then fetch-token once: success only if the
//    answer has access_token;
//  - without (solaredge, solis): key fields and
//    GET {apiUrl}/join/{id}/auth-granted?state={session}&code={keyId}:{secret}
//    without headers; not 2xx, or a body containing "failed", is a failure.
// Unlike the real one it is plain, readable code with a few class names for
// tests; it has no styling worth the name.

const API_VERSION = "v2024-09-01";

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text) e.textContent = text;
  return e;
}

class Join {
  constructor(sessionToken, onSuccess, onClose, derapiToken, apiUrl) {
    this.session = sessionToken;
    this.onSuccess = onSuccess;
    this.onClose = onClose;
    this.token = derapiToken;
    this.api = apiUrl;
    this.vendors = undefined;
    this.selected = undefined;
    this.succeeded = false;
    this.failed = false;
    this.root = undefined;
  }

  headers() {
    const h = new Headers();
    h.append("Authorization", "Bearer " + this.token);
    h.append("Content-Type", "application/json");
    h.append("api-version", API_VERSION);
    return h;
  }

  url(path) {
    return new URL(this.api + path, this.api).toString();
  }

  async fetchVendors() {
    const r = await fetch(this.url("/join/session/" + this.session + "/vendors"),
                          {method: "GET", headers: this.headers()});
    return await r.json();
  }

  async fetchToken() {
    const r = await fetch(this.url("/join/session/" + this.session + "/fetch-token"),
                          {method: "GET", headers: this.headers()});
    if (!(await r.json()).access_token) throw new Error("failed to create token");
  }

  async authGranted(vendor, keyId, secret) {
    const code = keyId + ":" + secret;
    const r = await fetch(this.url("/join/" + vendor.id + "/auth-granted?state=" + this.session +
                                   "&code=" + code), {method: "GET", headers: new Headers()});
    if (!r.ok) throw new Error("custom oAuth failed: " + r.status);
    if ((await r.text()).includes("failed")) throw new Error("custom oAuth failed");
  }

  success() {
    this.succeeded = true;
    this.render();
    this.onSuccess();
  }

  failure() {
    this.failed = true;
    this.render();
  }

  closeButton() {
    const b = el("button", {"class": "derapi-join-close", "aria-label": "Close"}, "\u00d7");
    b.addEventListener("click", () => this.close());
    return b;
  }

  backButton() {
    const b = el("button", {"class": "derapi-join-back"}, "Back to Vendor Selection");
    b.addEventListener("click", () => {
      this.selected = undefined;
      this.failed = false;
      this.render();
    });
    return b;
  }

  oauthView(vendor) {
    const view = el("div", {"class": "derapi-join-oauth"},
                    "Redirecting to " + vendor.name + " to join your account.");
    const popup = window.open(vendor.oAuthEndpoint, "*", "popup");
    if (popup) {
      const timer = setInterval(() => {
        if (popup.closed) {
          clearInterval(timer);
          this.fetchToken().then(() => this.success()).catch(() => this.failure());
        }
      }, 1000);
    }
    return view;
  }

  keyView(vendor) {
    const view = el("div", {"class": "derapi-join-keys"});
    view.appendChild(el("img", {src: vendor.base64Logo, alt: vendor.name}));
    view.appendChild(el("label", {"for": "derapi-join-username-input"}, "API Key ID"));
    const id = el("input", {type: "text", id: "derapi-join-username-input"});
    view.appendChild(id);
    let secret;
    if (vendor.id != "solaredge") {
      view.appendChild(el("label", {"for": "derapi-join-password-input"}, "API Key Secret"));
      secret = el("input", {type: "password", id: "derapi-join-password-input"});
      view.appendChild(secret);
    }
    const join = el("button", {"class": "derapi-join-submit"}, "JOIN");
    join.addEventListener("click", () => {
      join.disabled = true;
      this.authGranted(vendor, id.value, secret ? secret.value : "")
        .then(() => this.success()).catch(() => this.failure());
    });
    view.appendChild(join);
    return view;
  }

  render() {
    if (!this.root) this.openDialog();
    this.root.textContent = "";
    if (this.succeeded) {
      this.root.appendChild(this.closeButton());
      this.root.appendChild(el("div", {"class": "derapi-join-success"},
                               "Thank you for linking your " + this.selected.name + " account."));
    } else if (this.failed) {
      this.root.appendChild(this.backButton());
      this.root.appendChild(el("div", {"class": "derapi-join-failed"},
                               "Failed to Join your " + this.selected.name + " account."));
    } else if (this.selected) {
      this.root.appendChild(this.backButton());
      this.root.appendChild(this.selected.oAuthEndpoint ? this.oauthView(this.selected)
                                                        : this.keyView(this.selected));
    } else {
      this.root.appendChild(this.closeButton());
      this.root.appendChild(el("div", {}, "Derapi Join"));
      this.root.appendChild(el("div", {}, "Select your provider from the list below"));
      if (this.vendors && this.vendors.length > 0) {
        for (const v of this.vendors) {
          const b = el("button", {"class": "derapi-join-vendor", "data-vendor": v.id,
                                  "aria-label": v.name});
          b.appendChild(el("img", {src: v.base64Logo, alt: v.name}));
          b.addEventListener("click", () => {
            this.selected = v;
            this.render();
          });
          this.root.appendChild(b);
        }
      } else {
        this.root.appendChild(el("div", {"class": "derapi-join-loading"}, "Loading..."));
      }
    }
  }

  openDialog() {
    this.root = el("dialog", {"class": "derapi-join"});
    document.body.appendChild(this.root);
    if (!this.root.open) this.root.showModal();
  }

  open() {
    this.openDialog();
    this.render();
    this.fetchVendors().then((v) => {
      this.vendors = v;
      if (this.root) this.render();
    });
  }

  close() {
    if (this.root) {
      if (this.root.open) this.root.close();
      document.body.removeChild(this.root);
      this.root = undefined;
    }
    this.onClose();
  }
}

export default {
  createJoin(sessionToken, onSuccess, onClose, derapiToken, apiUrl) {
    const join = new Join(sessionToken, onSuccess, onClose, derapiToken,
                          apiUrl || "https://api.derapi.com");
    return {open: () => join.open(), close: () => join.close()};
  },
};
