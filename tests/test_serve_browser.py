"""The web page in a real headless Chromium (Debian's `chromium` + `chromium-driver`, driven by Selenium):
on a phone-sized window it streams a chat answer, then uploads a document and shows its summary, then
turns a request into calls and an adb command. `.ci/run` installs the browser; without it the test skips
and says how to install it.
"""

from __future__ import annotations

import shutil

import httpx
import pytest

from conftest import DOC_SUMMARY, DOC_TEXT
from test_serve import serve_in_thread

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                       reason="needs the system Chromium and its driver: apt-get install -y chromium chromium-driver"),
]


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=390,844"):  # a phone's viewport
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_page_chat_document_and_intent(browser, doc_ckpt, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 120)
    with serve_in_thread(doc_ckpt) as server:
        browser.get(server.url + "/")
        wait.until(lambda d: "tiny" in d.find_element(By.ID, "model-name").text)
        # phone-sized: nothing wider than the screen
        assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")

        # chat: type, Enter, watch the answer arrive in pieces
        box = browser.find_element(By.ID, "chat-input")
        box.send_keys("hello there", Keys.ENTER)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".msg.assistant.done")))
        answer = browser.find_element(By.CSS_SELECTOR, ".msg.assistant.done")
        assert browser.find_element(By.CSS_SELECTOR, ".msg.user").text == "hello there"
        assert int(answer.get_attribute("data-chunks")) > 1, "the answer did not stream"
        assert answer.get_attribute("textContent").strip()
        assert browser.find_element(By.ID, "status").text == ""

        # documents: upload, summarize, see the model's summary
        browser.find_element(By.CSS_SELECTOR, "nav button[data-panel=documents]").click()
        doc = tmp_path / "fox.txt"
        doc.write_text(DOC_TEXT)
        browser.find_element(By.ID, "doc-file").send_keys(str(doc))
        browser.find_element(By.ID, "doc-run").click()
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#doc-result.done")))
        assert browser.find_element(By.ID, "doc-result").text == DOC_SUMMARY
        assert "document tokens" in browser.find_element(By.ID, "doc-meta").text

        # intent: a request becomes calls and an adb command
        browser.find_element(By.CSS_SELECTOR, "nav button[data-panel=intent]").click()
        browser.find_element(By.ID, "intent-text").send_keys("wake me up at 7:30 tomorrow", Keys.ENTER)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#intent-calls.done")))
        expected = httpx.post(server.url + "/v1/intent", json={"text": "wake me up at 7:30 tomorrow"},
                              timeout=120).json()
        calls_text = browser.find_element(By.ID, "intent-calls").text
        assert [c["name"] for c in expected["calls"]] and all(c["name"] in calls_text for c in expected["calls"])
        assert browser.find_element(By.ID, "intent-adb").text == "\n".join(a for a in expected["adb"] if a)
        assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
