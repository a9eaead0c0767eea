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


def run_enroll(exe, config, store, env, *args):
    """`derenroll --config CONFIG --store STORE enroll ARGS...`, its output piped."""
    import subprocess

    return subprocess.Popen([exe, "--config", config, "--store", store, "enroll", *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True, start_new_session=True)


def save_screenshot(driver, artifacts, name):
    """artifacts/NAME.png, named in the TAP output."""
    path = os.path.join(artifacts, f"{name}.png")
    driver.save_screenshot(path)
    print(f"# screenshot: {path}", flush=True)


def clean_env(tmp):
    """The environment of a test's programs: no DERENROLL_* of the caller, a home in tmp."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DERENROLL_")}
    env.update(HOME=tmp, XDG_CONFIG_HOME=f"{tmp}/config", XDG_DATA_HOME=f"{tmp}/data",
               XDG_STATE_HOME=f"{tmp}/state")
    return env


def store_env(tmp):
    """clean_env() with a passphrase for a store in tmp: the environment and the store's path."""
    env = clean_env(tmp)
    with open(os.path.join(tmp, "passphrase"), "w") as f:
        f.write("browser test passphrase\n")
    os.chmod(os.path.join(tmp, "passphrase"), 0o600)
    env["DERENROLL_PASSPHRASE_FILE"] = os.path.join(tmp, "passphrase")
    return env, os.path.join(tmp, "store")


def start_sandbox(exe, tmp, env):
    """`derenroll sandbox` on loopback: the process, its summary line and its config's path."""
    import json
    import subprocess

    config = os.path.join(tmp, "config.ini")
    proc = subprocess.Popen([exe, "sandbox", "--listen", "127.0.0.1:0", "--write-config", config],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
                            start_new_session=True)
    line = proc.stdout.readline()
    check(line, "the sandbox prints its line")
    return proc, json.loads(line), config


def quit_browser(driver, profile, service):
    """Ends the browser and whatever of it is left."""
    if driver is not None:
        try:
            driver.quit()
        except Exception:
            pass
    kill_leftovers(profile, service)


def stop_processes(procs):
    """Terminates the programs a test started that still run, killing the stubborn."""
    import subprocess

    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def in_sandbox_world(exe, tmp, body):
    """Runs body(world) with `derenroll sandbox` and the browser started, and stops both and
    the programs body put in world["procs"]. world: env, store, config, summary, driver, procs."""
    env, store = store_env(tmp)
    profile = os.path.join(tmp, "chromium-profile")
    world = {"env": env, "store": store, "procs": [], "driver": None}
    service = None
    try:
        sandbox, world["summary"], world["config"] = start_sandbox(exe, tmp, env)
        world["procs"].append(sandbox)
        world["driver"], service = start_browser(profile)
        body(world)
    finally:
        quit_browser(world["driver"], profile, service)
        stop_processes(world["procs"])


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
        print("1..0 # SKIP python3-selenium is not installed (packaging/setup.sh --tests)")
        return 77
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        print("1..0 # SKIP chromium and chromium-driver are not installed (packaging/setup.sh --tests)")
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
