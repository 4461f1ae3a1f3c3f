"""The web page of `tubelet serve` in a real headless Chromium (Selenium): upload a file, see its label appear."""

import os
import shutil

import pytest

from tubelet.serve import ServeConfig

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


@pytest.fixture(scope="module")
def browser(tmp_path_factory, chromium_flags):
    """A headless Chromium under Selenium; skipped where Chromium or its driver is missing, except under CI
    (`TUBELET_REQUIRE_BROWSER=1`, set by ``.ci/run``, which installs both), where that fails the test."""
    binary = next(filter(None, map(shutil.which, CHROMIUM)), None)
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        missing = "Chromium" if binary is None else "chromedriver"
        if os.environ.get("TUBELET_REQUIRE_BROWSER") == "1":
            pytest.fail(f"no {missing} on this machine, and TUBELET_REQUIRE_BROWSER=1 asks for one")
        pytest.skip(f"no {missing} on this machine (Debian: apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    # tests/conftest.py's flags but the virtual time budget: this page waits on a real server, in real time
    flags = [f for f in chromium_flags if not f.startswith("--virtual-time-budget")] + ["--disable-dev-shm-usage"]
    for flag in [*flags, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    yield driver
    driver.quit()


def test_upload_shows_the_label_timeline_and_heatmap(browser, checkpoint, video, start_server, labels):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    running = start_server(ServeConfig(checkpoint=str(checkpoint), watch=False))
    expected = running.client.post("/v1/predict", files={"file": (video.name, video.read_bytes())}).json()
    browser.get(running.url + "/")
    browser.find_element(By.ID, "file").send_keys(str(video))
    browser.find_element(By.ID, "go").click()
    wait = WebDriverWait(browser, 60)
    wait.until(lambda b: b.find_element(By.ID, "label").text or b.find_element(By.ID, "error").text)
    assert browser.find_element(By.ID, "error").text == ""
    assert browser.find_element(By.ID, "label").text == expected["label"]
    assert expected["label"] in labels
    bars = browser.find_elements(By.CSS_SELECTOR, "#topk .bar")
    assert len(bars) == len(expected["topk"])
    assert len(browser.find_elements(By.CSS_SELECTOR, "#timeline polyline")) >= 1
    # the explanation's heatmap GIF, fetched from the same server, is drawn
    drawn = "const i = document.getElementById('heatmap'); return i.complete && i.naturalWidth > 0;"
    wait.until(lambda b: b.execute_script(drawn))
