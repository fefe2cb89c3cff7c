"""The status page in a real browser: headless Chromium (Debian's chromium and chromium-driver)
driven with Selenium, against the collector served on a loopback port with a known history.

It asserts what a person sees (90 bars per service, the outage's window and evidence, the SLA
report's figures), moves to a bar with the Tab key and reads the figure it shows, checks the page
fits a phone's width, and saves screenshots in test-artifacts/ (gitignored).
"""

from __future__ import annotations

import asyncio
import re
import shutil
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from collector.rules.periods import month_bounds
from collector.status.format import minutes, percent
from test_status_page import History, collector_app, day_label, history, make_state  # noqa: E402 (tests dir)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

selenium = pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")
if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip("headless Chromium needs Debian's packages: apt-get install -y chromium chromium-driver",
                allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402


# Per service, the [width, height] of each bar that is rendered on screen.
VISIBLE_BARS = """
return [...document.querySelectorAll('ol.bars')].map(list =>
  [...list.querySelectorAll('a.bar')]
    .map(bar => bar.getBoundingClientRect())
    .filter(box => box.width > 0 && box.height > 0)
    .map(box => [box.width, box.height]));
"""


class Http:
    """The small part of aiohttp's test client that history() uses, over a real socket."""

    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base, self.session = base, session

    def post(self, path: str, **kwargs):
        return self.session.post(self.base + path, **kwargs)


def browser(profile: Path) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1280,900", "--lang=en-GB"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def after_content(driver, element) -> str:
    """What the bar's CSS tooltip (::after) shows, as the browser computed it."""
    return driver.execute_script("return getComputedStyle(arguments[0], '::after').content;", element)


def full_page_screenshot(driver, path: Path, width: int) -> None:
    height = driver.execute_script("return document.documentElement.scrollHeight;")
    driver.set_window_size(width, min(max(height, 600), 8000))
    driver.execute_script("window.scrollTo(0, 0);")
    driver.save_screenshot(str(path))


def look_at_the_pages(base: str, h: History, profile: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    driver = browser(profile)
    try:
        driver.get(base + "/")
        assert driver.title == "Service status"

        # Keyboard: Tab from the top reaches the skip link, the header's links (stop reloading, the
        # feed), the first service's name, then its first bar.
        ActionChains(driver).send_keys(Keys.TAB).perform()
        assert driver.switch_to.active_element.text == "Skip to outages and maintenance"
        for name in ("stop", "Atom feed", "history", "incidents", "api"):
            driver.switch_to.active_element.send_keys(Keys.TAB)
            assert driver.switch_to.active_element.text == name
        driver.switch_to.active_element.send_keys(Keys.TAB)
        first = driver.switch_to.active_element
        assert first.get_attribute("class") == "bar lvl-nodata"
        assert first.get_attribute("aria-label").endswith(": no data")
        assert after_content(driver, first) == f'"{first.get_attribute("aria-label")}"'

        # Every service has 90 bars a person can see (one script call: 450 WebDriver calls are slow).
        sizes = driver.execute_script(VISIBLE_BARS)
        assert [len(s) for s in sizes] == [90] * 5
        assert all(w >= 2 and h >= 20 for s in sizes for w, h in s), sizes[0][:3]
        page = driver.find_element(By.TAG_NAME, "body").text
        assert "1 service has a verified outage in progress." in page
        start, end = (m.strftime("%Y-%m-%d %H:%M UTC") for m in (h.outage_start, h.outage_end))
        web_outage = driver.find_element(By.XPATH, "//article[.//h4[normalize-space()='Verified outage: web']]")
        assert web_outage.text.startswith(f"Verified outage: web\nStart\n{start}\nEnd\n{end}\nDuration\n6 min\n")
        assert "web: failed in 6 of 6 rounds; agents that failed: a1, a2, a3 in all 6 rounds" in web_outage.text
        legend = driver.find_element(By.CSS_SELECTOR, "ul.legend").text
        assert legend.split("\n") == ["100 %: no verified outage", "99 % to under 100 %", "95 % to under 99 %",
                                      "under 95 %",
                                      "amber: up but degraded for part of the day (slower than its checks' limit), no verified outage",
                                      "hatched: some rounds that day had no verdict (too few agents reported); not counted as up",
                                      "grey: no data, no result that day"]

        # The evidence table is folded away until asked for.
        table = web_outage.find_element(By.CSS_SELECTOR, "details table")
        assert not table.is_displayed()
        web_outage.find_element(By.TAG_NAME, "summary").click()
        assert table.is_displayed() and "a1 6 0 0" in table.text

        # From the bar before the outage's day, one Tab moves onto it; its figure is shown.
        web_bars = driver.find_elements(By.CSS_SELECTOR, "ol.bars")[-1].find_elements(By.CSS_SELECTOR, "a.bar")
        driver.execute_script("arguments[0].focus();", web_bars[-5])
        driver.switch_to.active_element.send_keys(Keys.TAB)
        focused = driver.switch_to.active_element
        label = (f"{day_label(h.day)}: 99.048 % available, 6 min verified outage; "
                 "13 h 30 min without a verdict (not counted as up)")
        assert focused.get_attribute("aria-label") == label
        assert after_content(driver, focused) == f'"{label}"'
        outline = driver.execute_script("return getComputedStyle(arguments[0]).outlineStyle;", focused)
        assert outline == "solid"
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", focused)
        driver.save_screenshot(str(ARTIFACTS / "status-page-focused-bar.png"))
        full_page_screenshot(driver, ARTIFACTS / "status-page.png", 1280)

        # Dark mode follows the reader's system (prefers-color-scheme): a dark page, light text.
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia",
                               {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        driver.get(base + "/")
        background, text = driver.execute_script(
            "const s = getComputedStyle(document.body); return [s.backgroundColor, s.color];")
        luminance = lambda css: sum(int(v) for v in re.findall(r"\d+", css)[:3])  # noqa: E731
        assert luminance(background) < 200 < luminance(text), (background, text)
        full_page_screenshot(driver, ARTIFACTS / "status-page-dark.png", 1280)
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia",
                               {"features": [{"name": "prefers-color-scheme", "value": "light"}]})

        # A phone: nothing wider than the screen, the bars still all there.
        driver.set_window_size(390, 844)
        driver.get(base + "/")
        overflow = driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;")
        assert overflow <= 0
        assert [len(s) for s in driver.execute_script(VISIBLE_BARS)] == [90] * 5
        driver.save_screenshot(str(ARTIFACTS / "status-page-phone.png"))

        # Select the outage's day: the month's SLA report for that contract.
        driver.set_window_size(1280, 900)
        driver.get(base + "/")
        vision = driver.find_elements(By.CSS_SELECTOR, "ol.bars")[-2].find_elements(By.CSS_SELECTOR, "a.bar")
        vision[-4].click()
        assert driver.current_url.endswith(f"/policies/vision/{h.day:%Y-%m}")
        month_start, month_end = month_bounds(f"{h.day:%Y-%m}", "UTC")
        total = (month_end - month_start) / timedelta(minutes=1)
        availability = driver.find_element(By.ID, "figure-availability").text
        # about an hour of the month has evidence: the verdict is undetermined, never "met"
        assert availability.startswith("Availability\n")
        assert f" to {percent((total - 6) / total * 100)}\ntarget 99.5 %: undetermined:" in availability
        budget = driver.find_element(By.ID, "figure-budget").text
        assert budget == (f"Downtime budget left\n{minutes(total * 0.005 - 6)}\n"
                          f"of {minutes(total * 0.005)} allowed at 99.5 %")
        outages = driver.find_element(By.ID, "outages").text
        assert f"{h.outage_start:%Y-%m-%d %H:%M} UTC {h.outage_end:%Y-%m-%d %H:%M} UTC 6 min 0 min 6 min" in outages
        maintenance = driver.find_element(By.ID, "maintenance").text
        assert "breaks a rule" in maintenance and "notice" in maintenance
        full_page_screenshot(driver, ARTIFACTS / "report-page.png", 1280)

        # A service's own page: its bars, figures and history with the outage's evidence.
        driver.get(base + "/services/vision")
        assert driver.title == "vision: status and history"
        assert [len(s) for s in driver.execute_script(VISIBLE_BARS)] == [90, 90]  # the service and its component web
        assert "Verified outage: vision" in driver.find_element(By.ID, "incidents").text
        full_page_screenshot(driver, ARTIFACTS / "service-page.png", 1280)
    finally:
        driver.quit()


async def test_a_person_sees_bars_outage_evidence_and_report_in_chromium(tmp_path) -> None:
    state = make_state(f"sqlite+aiosqlite:///{tmp_path / 'collector.sqlite'}")
    runner = web.AppRunner(collector_app(state))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = site._server.sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            h = await history(Http(base, session), state)
        # The browser blocks; the server must keep answering on this loop meanwhile.
        await asyncio.to_thread(look_at_the_pages, base, h, tmp_path / "chromium-profile")
    finally:
        await runner.cleanup()
