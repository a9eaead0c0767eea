#!/usr/bin/python3
"""Derapi Join sessions through the relay's Join page, in Debian's headless chromium.

Runs `derenroll sandbox` (argv[1]) and `derenroll enroll VENDOR --method join
--join-mode session`, which prints the relay's short link. The phone opens it:
the relay's /join page imports the widget as an ES module (the sandbox's
stand-in, which keeps the real widget's API and calls) and hands it the
relay's proxy as apiUrl.
- Tesla (OAuth): the widget opens the consent page in a popup; the customer
  approves and closes it; the widget's one fetch-token goes through the proxy,
  which keeps Derapi's answer for the laptop and gives the browser a
  placeholder; `derenroll enroll` saves the record.
- Solis (keys): a wrong secret shows the widget's failure view (no close
  button), Back, the right keys: auth-granted through the proxy, saved.
- Nothing the browser sent or received carries the company's Derapi secret or
  a working Derapi token (every token-like string is tried against the
  sandbox's Derapi) or the customer's tokens (read back from the store).
- The close button (onClose) reaches the laptop at once as a clear failure;
  a widget failure followed by a closed tab ends in a clear timeout message.
- The stand-in is a real ES module: a classic <script> load throws.
Screenshots go to argv[2]. Exit 0 passed, 1 failed, 77 skipped.
"""

import configparser
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import browserlib
from browserlib import (check, network_events, quit_browser, start_browser,
                        start_sandbox, store_env, stop_processes, wait_for_url)

TOKENISH = re.compile(r"[A-Za-z0-9_\-.~+/=]{16,}")


def start_enroll(exe, config, store, env, vendor, customer, *extra):
    return browserlib.run_enroll(exe, config, store, env, vendor, "--method", "join",
                                 "--join-mode", "session", "--customer", customer, *extra)


def screenshot(driver, artifacts, name):
    browserlib.save_screenshot(driver, artifacts, f"join-{name}")


def wait_for(driver, what, css, timeout=20):
    from selenium.webdriver.support.ui import WebDriverWait
    from selenium.webdriver.common.by import By
    from selenium.common.exceptions import TimeoutException

    try:
        return WebDriverWait(driver, timeout).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, css) or False)[0]
    except TimeoutException:
        raise browserlib.Failure(f"{what}: no {css} on {driver.current_url}")


def wait_text(driver, text, timeout=20):
    """Waits for `text` in the body of the page a click leads to."""
    from selenium.webdriver.support.ui import WebDriverWait
    from selenium.common.exceptions import TimeoutException, WebDriverException

    def has(d):
        try:
            return text in d.find_element("tag name", "body").text
        except WebDriverException:
            return False
    try:
        return WebDriverWait(driver, timeout).until(has)
    except TimeoutException:
        return False


# Every fetch() answer a page got, kept in the tab's sessionStorage: the
# DevTools log loses response bodies once the page navigates (onSuccess does).
RECORD_FETCH = """
(() => {
  const original = window.fetch;
  window.fetch = async function (...args) {
    const r = await original.apply(this, args);
    try {
      const seen = JSON.parse(sessionStorage.getItem('fetched') || '[]');
      seen.push({url: r.url, status: r.status, body: await r.clone().text()});
      sessionStorage.setItem('fetched', JSON.stringify(seen));
    } catch (e) { /* not this page's storage */ }
    return r;
  };
})();
"""


class Received:
    """Everything the browser sent and received: the DevTools log, and fetch() answers."""

    def __init__(self):
        self.texts = []
        self.authorizations = set()
        self.urls = []
        self.fetched = []

    def collect(self, driver):
        fetched = driver.execute_script(
            "const f = sessionStorage.getItem('fetched'); sessionStorage.removeItem('fetched');"
            "return f;")
        for answer in json.loads(fetched or "[]"):
            self.fetched.append(answer)
            self.texts.append(answer["body"])
        for ev in network_events(driver):
            params = ev.get("params", {})
            if ev["method"] == "Network.requestWillBeSent":
                req = params.get("request", {})
                self.urls.append(req.get("url", ""))
                self.texts.append(req.get("url", ""))
                for k, v in req.get("headers", {}).items():
                    self.texts.append(f"{k}: {v}")
                    if k.lower() == "authorization":
                        self.authorizations.add(v)
            elif ev["method"] == "Network.responseReceived":
                resp = params.get("response", {})
                self.texts.append(json.dumps(resp.get("headers", {})))
                try:
                    body = driver.execute_cdp_cmd("Network.getResponseBody",
                                                  {"requestId": params["requestId"]})
                    self.texts.append(body.get("body", ""))
                except Exception:
                    pass  # a redirect or a body already gone: its headers are kept
        self.texts.append(driver.page_source)

    def contains(self, secret):
        return any(secret in t for t in self.texts)


def derapi_accepts(api_url, token):
    """Whether the sandbox's Derapi takes `token` as the company's token."""
    req = urllib.request.Request(api_url + "/sites", headers={
        "Authorization": f"Bearer {token}", "api-version": "v2024-09-01",
        "X-Authorization-solaredge": "placeholder"})
    try:
        with urllib.request.urlopen(req, timeout=10):
            return True
    except urllib.error.HTTPError as e:
        return e.code != 401
    except urllib.error.URLError:
        return False


def revealed(exe, config, store, env):
    """Every secret value of the store's records (show --json --reveal)."""
    out = subprocess.run([exe, "--config", config, "--store", store, "list", "--json"],
                         env=env, text=True, capture_output=True, check=True).stdout
    values = []
    for rec in json.loads(out):
        shown = subprocess.run([exe, "--config", config, "--store", store, "show", rec["id"],
                                "--json", "--reveal"],
                               env=env, text=True, capture_output=True, check=True).stdout
        walk = [json.loads(shown)]
        while walk:
            v = walk.pop()
            if isinstance(v, dict):
                for k, x in v.items():
                    if isinstance(x, str) and len(x) >= 8 and re.search(
                            r"token|secret|key", k) and not k.endswith("_at"):
                        values.append(x)
                    else:
                        walk.append(x)
            elif isinstance(v, list):
                walk.extend(v)
    return values


def open_page(driver, enroll, relay):
    link = enroll.stdout.readline().strip()
    check(link.startswith(relay + "/s/"), f"enroll prints the relay's short link ({link})")
    driver.get(link)
    check(driver.current_url.startswith(relay + "/join?session="),
          "the short link leads to the relay's Join page")
    return link


def run(exe, artifacts, tmp):
    from selenium.webdriver.common.by import By

    env, store = store_env(tmp)
    profile = os.path.join(tmp, "chromium-profile")
    sandbox = driver = service = None
    enrolls = []
    seen = Received()
    try:
        sandbox, summary, config = start_sandbox(exe, tmp, env)
        ini = configparser.ConfigParser(interpolation=None)
        ini.read(config)
        relay = summary["url"] + "/relay"
        derapi_api = ini["derapi"]["api_url"]
        derapi_secret = ini["derapi"]["client_secret"]
        solis = summary["credentials"]["solis"]
        driver, service = start_browser(profile, network_log=True)
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_FETCH})

        # The stand-in is an ES module: a classic load throws on `export`.
        script = ini["derapi"]["join_script_url"]
        driver.get(script)
        result = driver.execute_async_script("""
            const url = arguments[0], done = arguments[arguments.length - 1];
            const errors = [];
            window.addEventListener('error', (e) => errors.push(String(e.message)));
            const s = document.createElement('script');
            s.src = url;
            s.onload = () => import(url).then(
                (m) => done({errors, createJoin: typeof m.default.createJoin}),
                (e) => done({errors, importError: String(e)}));
            document.head.appendChild(s);
        """, script)
        check(any("export" in e for e in result["errors"]),
              f"a classic <script> load of the stand-in throws on export ({result['errors']})")
        check(result.get("createJoin") == "function",
              "imported as a module, its default export has createJoin")

        # Tesla: the popup, approved and closed by the customer; fetch-token through the proxy.
        enroll = start_enroll(exe, config, store, env, "tesla", "Join Tesla Customer")
        enrolls.append(enroll)
        open_page(driver, enroll, relay)
        main = driver.current_window_handle
        wait_for(driver, "the widget lists the session's vendors",
                 "button.derapi-join-vendor[data-vendor=tesla]").click()
        screenshot(driver, artifacts, "tesla-redirecting")
        for _ in range(100):
            if len(driver.window_handles) > 1:
                break
            time.sleep(0.1)
        popups = [h for h in driver.window_handles if h != main]
        check(popups, "the widget opens the vendor's page in a popup")
        driver.switch_to.window(popups[0])
        wait_for(driver, "the popup shows the consent page", "button.approve").click()
        check(wait_text(driver, "close this window"), "after Approve the popup says to close it")
        driver.close()
        driver.switch_to.window(main)
        check(wait_for_url(driver, relay + "/callback"),
              "the widget's onSuccess brings the page to the relay's success page")
        check("You can hand the phone back to your installer" in
              driver.find_element(By.TAG_NAME, "body").text, "the success page says what next")
        screenshot(driver, artifacts, "tesla-success")
        out, err = enroll.communicate(timeout=60)
        check(enroll.returncode == 0,
              f"derenroll enroll saved the Tesla record (exit {enroll.returncode}: {err.strip()})")
        check("Join Tesla Customer" in out and "Tesla" in out, "it reports the record")
        seen.collect(driver)
        proxied = [u for u in seen.urls if "/relay/join/api/join/session/" in u]
        check(any(u.endswith("/vendors") for u in proxied)
              and any(u.endswith("/fetch-token") for u in proxied),
              "the widget's vendors and fetch-token calls went to the relay's proxy")
        check(not any(u.startswith(derapi_api + "/join/session/") and "/authorize" not in u
                      for u in seen.urls),
              "the browser never called Derapi's API itself")

        # Solis: keys; a wrong secret fails (no close button), Back, the right ones.
        enroll = start_enroll(exe, config, store, env, "solis", "Join Solis Customer")
        enrolls.append(enroll)
        open_page(driver, enroll, relay)
        wait_for(driver, "the widget lists Solis",
                 "button.derapi-join-vendor[data-vendor=solis]").click()
        wait_for(driver, "Solis asks for keys", "#derapi-join-username-input").send_keys(
            solis["key_id"])
        driver.find_element(By.ID, "derapi-join-password-input").send_keys("not-the-secret")
        driver.find_element(By.CSS_SELECTOR, "button.derapi-join-submit").click()
        wait_for(driver, "a wrong key fails", ".derapi-join-failed")
        check(not driver.find_elements(By.CSS_SELECTOR, "button.derapi-join-close"),
              "the failure view has no close button")
        screenshot(driver, artifacts, "solis-failed")
        driver.find_element(By.CSS_SELECTOR, "button.derapi-join-back").click()
        wait_for(driver, "Back lists the vendors again",
                 "button.derapi-join-vendor[data-vendor=solis]").click()
        wait_for(driver, "Solis asks for keys again", "#derapi-join-username-input").send_keys(
            solis["key_id"])
        driver.find_element(By.ID, "derapi-join-password-input").send_keys(solis["key_secret"])
        driver.find_element(By.CSS_SELECTOR, "button.derapi-join-submit").click()
        check(wait_for_url(driver, relay + "/callback"),
              "auth-granted through the proxy: the page reaches the relay's success page")
        out, err = enroll.communicate(timeout=60)
        check(enroll.returncode == 0,
              f"derenroll enroll saved the Solis record (exit {enroll.returncode}: {err.strip()})")
        check("Join Solis Customer" in out, "it reports the Solis record")
        seen.collect(driver)
        check(any("/relay/join/api/join/solis/auth-granted?" in u for u in seen.urls),
              "the widget's auth-granted went to the relay's proxy")

        # What the browser got: no company secret or token, no customer token.
        check(not seen.contains(derapi_secret), "the company's Derapi client secret never "
              "reached the browser")
        check(seen.authorizations <= {"Bearer held-by-the-relay"},
              f"the only Authorization the widget sent is the placeholder ({seen.authorizations})")
        candidates = sorted({m for t in seen.texts for m in TOKENISH.findall(t)
                             if not m.startswith(("http", "data:", "iVBOR"))})
        working = [c for c in candidates[:400] if derapi_accepts(derapi_api, c)]
        check(not working, f"no string the browser received is a working Derapi token "
              f"({len(candidates)} tried)")
        secrets = [v for v in revealed(exe, config, store, env) if v != solis["key_secret"]
                   and v != solis["key_id"]]
        check(secrets, "the store holds the customers' tokens")
        check(not any(seen.contains(v) for v in secrets),
              "no customer token the store holds ever reached the browser")
        fetch_answers = [a["body"] for a in seen.fetched if a["url"].endswith("/fetch-token")]
        check(fetch_answers and all("kept-by-the-relay" in b for b in fetch_answers),
              f"fetch-token's answer to the browser was the relay's placeholder ({fetch_answers})")
        vendor_answers = [a["body"] for a in seen.fetched if a["url"].endswith("/vendors")]
        check(vendor_answers and all(b.startswith("[") for b in vendor_answers),
              "the vendor lists the browser got are bare arrays")

        # The close button: the laptop learns at once that the customer closed it.
        enroll = start_enroll(exe, config, store, env, "tesla", "Closing Customer")
        enrolls.append(enroll)
        open_page(driver, enroll, relay)
        wait_for(driver, "the widget shows its close button", "button.derapi-join-close").click()
        check(wait_for_url(driver, relay + "/callback"), "onClose tells the relay")
        out, err = enroll.communicate(timeout=60)
        check(enroll.returncode == 1, f"a closed Join window fails the enrollment "
              f"({enroll.returncode})")
        check("closed the Join window" in err, f"and says so ({err.strip()})")

        # A failed widget and a closed tab: the laptop's own poll, then a clear timeout.
        enroll = start_enroll(exe, config, store, env, "tesla", "Vanishing Customer",
                              "--timeout", "15")
        enrolls.append(enroll)
        open_page(driver, enroll, relay)
        main = driver.current_window_handle
        wait_for(driver, "the widget lists Tesla",
                 "button.derapi-join-vendor[data-vendor=tesla]").click()
        for _ in range(100):
            if len(driver.window_handles) > 1:
                break
            time.sleep(0.1)
        for h in driver.window_handles:
            if h != main:
                driver.switch_to.window(h)
                driver.close()  # closed without approving
        driver.switch_to.window(main)
        wait_for(driver, "fetch-token without an authorization fails", ".derapi-join-failed")
        screenshot(driver, artifacts, "tesla-failed")
        driver.get("about:blank")  # the customer closes the tab
        out, err = enroll.communicate(timeout=90)
        check(enroll.returncode == 1, f"the laptop gives up ({enroll.returncode})")
        check("did not finish in the Join page in time" in err and "Join widget failed" in err,
              f"with a message that says why ({err.strip()})")
    finally:
        quit_browser(driver, profile, service)
        stop_processes(enrolls + [sandbox])


if __name__ == "__main__":
    sys.exit(browserlib.main(run, "test_join_browser.py"))
