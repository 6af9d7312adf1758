"""The page of `actionclip serve` in a real browser: Debian's headless Chromium driven by Selenium (no browser or
driver download: both paths are given). `.ci/run` installs chromium and chromium-driver."""

import os
import shutil
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
webdriver = pytest.importorskip("selenium.webdriver")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

import actionclip  # noqa: E402
from serve_helpers import serve_process  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARM_WRESTLING = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "peer_videos" / "mmaction2_demo_arm_wrestling.mp4"
LABELS = ["arm wrestling", "playing guitar", "swimming", "cooking", "dancing", "reading"]

pytestmark = [
    pytest.mark.skipif(
        not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
        reason="no chromium/chromedriver (apt-get install chromium chromium-driver)",
    ),
    pytest.mark.skipif(not ARM_WRESTLING.is_file(), reason=f"no peer video {ARM_WRESTLING}"),
]


@pytest.fixture
def browser(monkeypatch):
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not fetch anything
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=900,1300"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def test_upload_a_clip_and_read_the_ranked_labels(browser, tmp_path):
    checkpoint = actionclip.save(actionclip.create_model("test-tiny", seed=0).eval(), tmp_path / "ckpt")
    with serve_process(checkpoint, tmp_path / "tmp", "--workers", "1") as (url, _):
        browser.get(url)
        wait = WebDriverWait(browser, 60)
        wait.until(lambda driver: len(Select(driver.find_element(By.ID, "label-set")).options) == 4)
        Select(browser.find_element(By.ID, "label-set")).select_by_value("ucf101")
        assert len(browser.find_element(By.ID, "labels").get_property("value").splitlines()) == 101

        browser.find_element(By.ID, "video").send_keys(str(ARM_WRESTLING))
        box = browser.find_element(By.ID, "labels")
        box.clear()
        box.send_keys("\n".join(LABELS))
        browser.find_element(By.ID, "submit").click()
        wait.until(expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, "#results li")))
        rows = browser.find_elements(By.CSS_SELECTOR, "#results li")
        shown = [(row.find_element(By.CLASS_NAME, "label").text, row.find_element(By.CLASS_NAME, "score").text) for row in rows]
        frames = browser.find_elements(By.CSS_SELECTOR, "#frames img")
        assert browser.find_element(By.ID, "video-name").text == ARM_WRESTLING.name
        assert not browser.find_element(By.ID, "key-row").is_displayed()  # no --api-key
        browser.save_screenshot(str(tmp_path / "page.png"))
        if os.environ.get("ACTIONCLIP_SERVE_SCREENSHOT"):  # the picture of docs/serve.md
            shutil.copy(tmp_path / "page.png", os.environ["ACTIONCLIP_SERVE_SCREENSHOT"])

        with open(ARM_WRESTLING, "rb") as video:
            expected = httpx.post(
                f"{url}/v1/classify", files={"video": (ARM_WRESTLING.name, video)}, data={"labels": ",".join(LABELS)}, timeout=60
            ).json()["results"][0]
        assert shown == [(label, f"{100 * score:.1f}%") for label, score in zip(expected["labels"], expected["scores"])]
        assert len(shown) == 5 and len(frames) == 8
        assert all(frame.get_property("naturalWidth") > 0 for frame in frames)  # the thumbnails decoded

        browser.set_window_size(390, 844)  # a phone: nothing wider than the screen
        assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        browser.save_screenshot(str(tmp_path / "phone.png"))

        browser.get(f"{url}/docs")  # Swagger UI from the app itself: the browser reaches nothing else
        wait.until(lambda driver: driver.find_elements(By.CSS_SELECTOR, '[data-path="/v1/classify"]'))
    assert (tmp_path / "page.png").stat().st_size > 0
