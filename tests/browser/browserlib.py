"""Shared by the browser tests: Debian's headless chromium at a phone-sized
viewport (chromium-driver, python3-selenium) and the checks they print."""

import os
import shutil
import signal
import sys
import tempfile

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WIDTH, HEIGHT = 360, 740



class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)
    print(f"ok - {what}", flush=True)



def start_browser(profile, network_log=False):
    """Chromium at the phone's size; with network_log, what it sends and receives can be
    read back with network_events() (the DevTools performance log)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                f"--window-size={WIDTH},{HEIGHT}"):
        opts.add_argument(arg)
    opts.add_experimental_option("mobileEmulation", {
        "deviceMetrics": {"width": WIDTH, "height": HEIGHT, "pixelRatio": 2},
        "userAgent": "Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 "
                     "(KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36"})
    if network_log:
        opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    service = Service(CHROMEDRIVER, popen_kw={"start_new_session": True})
    driver = webdriver.Chrome(service=service, options=opts)
    driver.set_page_load_timeout(30)
    return driver, service


def network_events(driver):
    """The DevTools Network events logged since the last call, as dicts."""
    import json

    events = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method", "").startswith("Network."):
            events.append(message)
    return events


def kill_leftovers(profile, service):
    """Kills chromedriver's process group and any chromium using our profile, by pid."""
    proc = getattr(service, "process", None)
    if proc is not None and proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if profile.encode() in cmdline:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


def wait_for_url(driver, prefix):
    """Waits for the navigation a click started."""
    from selenium.webdriver.support.ui import WebDriverWait
    from selenium.common.exceptions import TimeoutException

    try:
        WebDriverWait(driver, 15).until(
            lambda d: d.current_url.startswith(prefix)
            and d.execute_script("return document.readyState") == "complete")
        return True
    except TimeoutException:
        return False


def main(run, name):
    """Runs run(derenroll, artifact_dir, tmp) with argv[1:], skipping (77) without a browser."""
    if len(sys.argv) != 3:
        print(f"usage: {name} DERENROLL ARTIFACT_DIR", file=sys.stderr)
        return 2
    try:
        import selenium  # noqa: F401
    except ImportError:
        print("1..0 # SKIP python3-selenium is not installed (packaging/setup.sh)")
        return 77
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        print("1..0 # SKIP chromium and chromium-driver are not installed (packaging/setup.sh)")
        return 77
    os.makedirs(sys.argv[2], exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="derenroll-browser-")
    try:
        run(os.path.abspath(sys.argv[1]), sys.argv[2], tmp)
    except Failure as e:
        print(f"not ok - {e}", flush=True)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0
