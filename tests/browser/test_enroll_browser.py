#!/usr/bin/python3
"""An OAuth enrollment with the customer on a phone, in Debian's headless chromium.

Runs `derenroll sandbox` (argv[1]) on loopback (every vendor, and the relay at
/relay), then `derenroll enroll tesla`, which prints the relay's short link and
waits for the code with the product's relay client. The phone (chromium at 360
px) opens the short link, lands on the sandbox's consent page, presses Approve
and ends on the relay's success page; `derenroll enroll` then saves the record
and exits 0. A second customer presses Deny: the declined page, and exit 1.
Screenshots go to argv[2]. Exit 0 passed, 1 failed, 77 skipped.

Run with /usr/bin/python3: Debian's python3-selenium is not in a pyenv python.
"""

import os
import sys

import browserlib
from browserlib import (WIDTH, check, quit_browser, start_browser, start_sandbox, store_env,
                        stop_processes, wait_for_url)


def start_enroll(exe, config, store, env, customer):
    return browserlib.run_enroll(exe, config, store, env, "tesla", "--customer", customer)


def screenshot(driver, artifacts, name):
    browserlib.save_screenshot(driver, artifacts, f"enroll-{name}")


def run(exe, artifacts, tmp):
    from selenium.webdriver.common.by import By

    env, store = store_env(tmp)
    profile = os.path.join(tmp, "chromium-profile")
    sandbox = driver = service = None
    enrolls = []
    try:
        sandbox, summary, config = start_sandbox(exe, tmp, env)
        relay = summary["url"] + "/relay"
        driver, service = start_browser(profile)

        # Approve on the phone: the waiting `derenroll enroll` gets the code and saves.
        enroll = start_enroll(exe, config, store, env, "Browser Customer")
        enrolls.append(enroll)
        link = enroll.stdout.readline().strip()
        check(link.startswith(relay + "/s/"), f"enroll prints the relay's short link ({link})")
        check(len(link) < 60, "the link is short enough for a small QR code")
        driver.get(link)
        check(driver.find_elements(By.CSS_SELECTOR, "button.approve"),
              "the short link leads to the sandbox's consent page")
        screenshot(driver, artifacts, "consent")
        driver.find_element(By.CSS_SELECTOR, "button.approve").click()
        check(wait_for_url(driver, relay + "/callback"), "Approve returns to the relay")
        body = driver.find_element("tag name", "body").text
        check("You can hand the phone back to your installer" in body,
              "the success page tells the customer what to do next")
        check(driver.execute_script("return document.documentElement.scrollWidth") <= WIDTH,
              "the success page fits the phone")
        screenshot(driver, artifacts, "success")
        out, err = enroll.communicate(timeout=60)
        check(enroll.returncode == 0, f"derenroll enroll saved the record (exit {enroll.returncode}: {err.strip()})")
        check("Enrolled" in out and "Browser Customer" in out and "Tesla" in out,
              "it reports the record")

        # Deny on the phone: the declined page, and the command says so (exit 1).
        enroll = start_enroll(exe, config, store, env, "Declining Customer")
        enrolls.append(enroll)
        link = enroll.stdout.readline().strip()
        driver.get(link)
        driver.find_element(By.CSS_SELECTOR, "button.deny").click()
        check(wait_for_url(driver, relay + "/callback"), "Deny returns to the relay")
        check("Access not given" in driver.find_element("tag name", "body").text,
              "the declined page says no access was given")
        screenshot(driver, artifacts, "declined")
        out, err = enroll.communicate(timeout=60)
        check(enroll.returncode == 1, f"a declined enrollment exits 1 ({enroll.returncode})")
        check("declined" in err, "and says the customer declined")
    finally:
        quit_browser(driver, profile, service)
        stop_processes(enrolls + [sandbox])


if __name__ == "__main__":
    sys.exit(browserlib.main(run, "test_enroll_browser.py"))
