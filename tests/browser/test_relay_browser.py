#!/usr/bin/python3
"""The relay's pages in Debian's headless chromium at a phone-sized viewport.

Runs `derenroll relay` (argv[1]) on loopback and a tiny consent page of its own,
registers a short link like the wizard does, opens it in the browser, clicks
Approve and checks the success page, while a client long-polls the relay for the
code. Then the declined, error, expired and not-found pages. Screenshots go to
argv[2] (build/tests/artifacts). Exit 0 passed, 1 failed, 77 skipped.

The same journey against the sandbox's own consent page, with the product's
relay client waiting for the code (`derenroll enroll`), is test_enroll_browser.py.

Run with /usr/bin/python3: Debian's python3-selenium is not in a pyenv python.
"""

import http.server
import json
import os
import queue
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import browserlib
from browserlib import WIDTH, Failure, check, quit_browser, start_browser, wait_for_url

CONSENT_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sandbox sign-in</title></head>
<body style="font-family:sans-serif;padding:16px">
<h1>Sandbox Energy</h1>
<p>derenroll test wants to read your solar system.</p>
<form action="{redirect_uri}" method="get">
<input type="hidden" name="code" value="{code}">
<input type="hidden" name="state" value="{state}">
<button id="approve" type="submit">Approve</button>
</form>
<form action="{redirect_uri}" method="get">
<input type="hidden" name="error" value="access_denied">
<input type="hidden" name="state" value="{state}">
<button id="decline" type="submit">Decline</button>
</form>
</body></html>
"""


class ConsentHandler(http.server.BaseHTTPRequestHandler):
    """GET /authorize?redirect_uri=..&state=..: a consent page like a vendor's."""

    issued = {}  # state -> code

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        q = urllib.parse.parse_qs(url.query)
        if url.path != "/authorize" or "state" not in q or "redirect_uri" not in q:
            self.send_error(404)
            return
        state = q["state"][0]
        code = "sandbox-code-" + secrets.token_urlsafe(12)
        ConsentHandler.issued[state] = code
        esc = lambda s: s.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
        body = CONSENT_PAGE.format(redirect_uri=esc(q["redirect_uri"][0]),
                                   code=esc(code), state=esc(state)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass


def free_port():
    """A port nothing listens on right now (the relay needs it for its public URL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Relay:
    """`derenroll relay` on 127.0.0.1."""

    def __init__(self, exe, tmp):
        self.secret = secrets.token_urlsafe(32)
        secret_file = os.path.join(tmp, "relay-secret")
        with open(os.open(secret_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(self.secret + "\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("DERENROLL_")}
        env.update(HOME=tmp, XDG_CONFIG_HOME=os.path.join(tmp, "config"),
                   XDG_STATE_HOME=os.path.join(tmp, "state"))
        if os.environ.get("DERENROLL_DATADIR"):
            env["DERENROLL_DATADIR"] = os.environ["DERENROLL_DATADIR"]
        port = free_port()
        self.proc = subprocess.Popen(
            [exe, "relay", "--listen", f"127.0.0.1:{port}", "--secret-file", secret_file,
             "--public-url", f"http://127.0.0.1:{port}"],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 10
        self.base = None
        while self.base is None and time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            m = re.search(r" port (\d+) ", line)
            if m:
                self.base = f"http://127.0.0.1:{m.group(1)}"
        if self.base is None:
            self.stop()
            raise Failure("the relay did not start")

    def _read(self):
        for line in self.proc.stderr:
            self.lines.put(line)
            sys.stderr.write("relay: " + line)

    def api(self, method, path, body=None):
        req = urllib.request.Request(self.base + path, method=method,
                                     data=json.dumps(body).encode() if body else None,
                                     headers={"Authorization": "Bearer " + self.secret,
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=40) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def link(self, target, state, vendor):
        status, body = self.api("POST", "/v1/links",
                                {"target": target, "state": state, "ttl": 600, "vendor": vendor})
        check(status == 201, f"link registered ({status})")
        return json.loads(body)["url"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def poll_result(relay, state, out):
    """The wizard's side: long-poll until the result comes (or 60 s)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            status, body = relay.api("GET", f"/v1/results/{state}?wait=25")
        except OSError as e:
            out["error"] = str(e)
            return
        if status == 200:
            out["result"] = json.loads(body)
            return
        if status != 204:
            out["error"] = status
            return
    out["error"] = "timeout"


def page_reads_well(driver, name, artifacts, must_contain):
    text = driver.find_element("tag name", "body").text
    for words in must_contain:
        check(words in text, f"{name} page says '{words}'")
    width = driver.execute_script("return document.documentElement.scrollWidth")
    check(width <= WIDTH, f"{name} page fits {WIDTH} px without sideways scrolling ({width})")
    font = driver.execute_script(
        "return parseFloat(getComputedStyle(document.querySelector('p')).fontSize)")
    check(font >= 16, f"{name} page text is at least 16 px ({font})")
    check(not driver.execute_script(
        "return performance.getEntriesByType('resource').length"),
        f"{name} page loads nothing else")
    path = os.path.join(artifacts, f"relay-{name}.png")
    driver.save_screenshot(path)
    print(f"# screenshot: {path}", flush=True)


def run(exe, artifacts, tmp):
    from selenium.webdriver.common.by import By

    profile = os.path.join(tmp, "chromium-profile")
    relay = server = driver = service = None
    try:
        relay = Relay(exe, tmp)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ConsentHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        consent = f"http://127.0.0.1:{server.server_address[1]}/authorize"
        callback = relay.base + "/callback"

        def authorize_url(state):
            return consent + "?" + urllib.parse.urlencode(
                {"client_id": "demo", "redirect_uri": callback, "state": state})

        driver, service = start_browser(profile)

        # Approve: short link -> consent page -> Approve -> success page; the client gets the code.
        state = secrets.token_urlsafe(16)
        short = relay.link(authorize_url(state), state, "tesla")
        out = {}
        poller = threading.Thread(target=poll_result, args=(relay, state, out))
        poller.start()
        driver.get(short)
        check(driver.title == "Sandbox sign-in", "the short link leads to the consent page")
        driver.find_element(By.ID, "approve").click()
        check(wait_for_url(driver, callback), "Approve returns to the relay")
        page_reads_well(driver, "success", artifacts,
                        ["All done", "Tesla", "You can hand the phone back to your installer"])
        poller.join(timeout=70)
        result = out.get("result") or {}
        check(result.get("code") == ConsentHandler.issued.get(state),
              "the waiting client received the code")
        check(result.get("state") == state, "with its state")
        status, _ = relay.api("GET", f"/v1/results/{state}")
        check(status == 404, "the result is handed out once")
        driver.refresh()
        page_reads_well(driver, "used", artifacts, ["Already done"])

        # Decline.
        state = secrets.token_urlsafe(16)
        driver.get(relay.link(authorize_url(state), state, "sma"))
        driver.find_element(By.ID, "decline").click()
        check(wait_for_url(driver, callback), "Decline returns to the relay")
        page_reads_well(driver, "declined", artifacts, ["Access not given", "SMA"])
        status, body = relay.api("GET", f"/v1/results/{state}")
        check(status == 200 and json.loads(body).get("error") == "access_denied",
              "the client learns the customer declined")

        # An error from the vendor, a late callback, an unknown short link.
        state = secrets.token_urlsafe(16)
        relay.link(authorize_url(state), state, "enphase")
        driver.get(f"{callback}?state={state}&error=server_error")
        page_reads_well(driver, "error", artifacts, ["Something went wrong", "Enphase"])
        driver.get(f"{callback}?state={secrets.token_urlsafe(16)}&code=x")
        page_reads_well(driver, "expired", artifacts, ["This link has expired"])
        driver.get(relay.base + "/s/ZZZZZZZ")
        page_reads_well(driver, "notfound", artifacts, ["This link does not work"])

        check(relay.stop() == 0, "the relay stops cleanly on SIGTERM")
    finally:
        quit_browser(driver, profile, service)
        if server is not None:
            server.shutdown()
            server.server_close()
        if relay is not None:
            relay.stop()


if __name__ == "__main__":
    sys.exit(browserlib.main(run, "test_relay_browser.py"))
