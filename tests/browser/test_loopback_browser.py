#!/usr/bin/python3
"""The customer signs in on the installer's laptop (loopback), in Debian's headless chromium.

Runs `derenroll sandbox` (argv[1]) on loopback, with a config that has no relay and no
Tesla redirect URI, so `derenroll enroll tesla` listens on 127.0.0.1 itself and prints the
authorize link. The browser opens it, presses Deny, and must land on the listener's own
page saying the customer declined, although `derenroll enroll` ends (exit 1) the moment the
refusal arrives. A second customer presses Approve: the "you can close this tab" page, and
the record is saved (exit 0). Screenshots go to argv[2]. Exit 0 passed, 1 failed, 77
skipped.

Run with /usr/bin/python3: Debian's python3-selenium is not in a pyenv python.
"""

import configparser
import os
import sys
import urllib.parse

import browserlib
from browserlib import check, wait_for_url


def loopback_config(config):
    """A copy of the sandbox's config without the relay or Tesla's redirect URI."""
    ini = configparser.ConfigParser(interpolation=None)
    ini.optionxform = str
    ini.read(config)
    ini.remove_section("relay")
    ini.remove_option("vendor.tesla", "redirect_uri")
    path = config + ".loopback"
    # It holds the sandbox's client secrets: only for us, as the sandbox's own.
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        ini.write(f)
    return path


def customer(exe, world, name, button):
    """`derenroll enroll tesla` for `name`, who presses `button`: the page, and the ended
    command (its exit status, output and errors)."""
    from selenium.webdriver.common.by import By

    driver = world["driver"]
    enroll = browserlib.run_enroll(exe, world["config"], world["store"], world["env"], "tesla",
                                   "--customer", name)
    world["procs"].append(enroll)
    link = enroll.stdout.readline().strip()
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)
    listener = query.get("redirect_uri", [""])[0]
    check(listener.startswith("http://127.0.0.1:") and listener.endswith("/callback"),
          f"enroll listens on this computer ({listener})")
    driver.get(link)
    driver.find_element(By.CSS_SELECTOR, button).click()
    check(wait_for_url(driver, listener + "?"), "the sign-in returns to the listener")
    body = driver.find_element("tag name", "body").text
    out, err = enroll.communicate(timeout=60)
    return body, enroll.returncode, out, err


def run(exe, artifacts, tmp):
    def body(world):
        world["config"] = loopback_config(world["config"])
        page, status, _, err = customer(exe, world, "Declining Customer", "button.deny")
        browserlib.save_screenshot(world["driver"], artifacts, "loopback-declined")
        check("You declined" in page and "the installer will see that you declined" in page,
              f"the listener's page says the customer declined ({page[:120]!r})")
        check(status == 1 and "declined" in err,
              f"derenroll enroll exits 1 and says the customer declined ({status})")

        page, status, out, err = customer(exe, world, "Approving Customer", "button.approve")
        browserlib.save_screenshot(world["driver"], artifacts, "loopback-approved")
        check("received your approval" in page and "close this tab" in page,
              f"the listener's page thanks the customer ({page[:120]!r})")
        check(status == 0 and "Enrolled" in out and "Approving Customer" in out,
              f"derenroll enroll saved the record (exit {status}: {err.strip()})")

    browserlib.in_sandbox_world(exe, tmp, body)


if __name__ == "__main__":
    sys.exit(browserlib.main(run, "test_loopback_browser.py"))
