"""Headless Chromium driven by Selenium for the dashboard tests (Debian's chromium and
chromium-driver; as root it needs --no-sandbox)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM = Path("/usr/bin/chromium")


def chrome() -> Any:
    """A headless Chromium session logging the browser console (skips without chromium)."""
    if not (CHROMEDRIVER.exists() and CHROMIUM.exists()):
        pytest.skip("chromium and chromium-driver are not installed (apt-get install them)")
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(str(CHROMEDRIVER)))


def console_errors(driver: Any) -> list[dict[str, Any]]:
    """The console entries of level SEVERE since the last call (errors, failed loads)."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def wait_for(driver: Any, condition: Any, timeout: float = 30) -> Any:
    """``condition(driver)`` once truthy, polled by Selenium until ``timeout`` seconds."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def open_page(driver: Any, base: str, page: str) -> None:
    """Navigate to ``page`` of the dashboard at ``base`` and wait until it has rendered."""
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/ui/#/{page}")

    def rendered(d: Any) -> bool:
        found = d.find_elements(By.CSS_SELECTOR, f'#page[data-page="{page}"][data-loaded]')
        return bool(found)

    wait_for(driver, rendered)


def texts(driver: Any, selector: str, attribute: str | None = None) -> list[str]:
    """The text (or ``attribute``) of every element matching ``selector``, read in one script
    run: pages that refresh themselves replace their elements between two WebDriver calls."""
    script = (
        "return [...document.querySelectorAll(arguments[0])]"
        ".map((e) => arguments[1] ? e.getAttribute(arguments[1]) : e.textContent.trim())"
    )
    return driver.execute_script(script, selector, attribute)
