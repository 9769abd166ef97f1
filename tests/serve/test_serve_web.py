"""The page at `r1 serve`'s root in a real browser (Debian's chromium + chromedriver, driven by
Selenium): for each family it submits one input and reads back the rendered answer, which must be
`r1.load(run).predict`'s; the page loads nothing from outside the server.

`.ci/run` installs chromium; where it is missing the test skips and says why. With
R1_SCREENSHOTS=DIR it saves one screenshot per family (docs/web-*.png were made so)."""
from __future__ import annotations

import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

import r1
from r1.bench.load import wait_ready
from r1.serve import ServeConfig, create_app
from r1.serve.web import STATIC
from tests.conftest import ROOT
from tests.serve.helpers import running_server

EXAMPLES = ROOT / "examples"
QUESTION = "what is the shape of the red object?"
PROMPT = "to be or not to be"


def test_the_page_names_no_outside_url():
    for path in STATIC.iterdir():
        text = path.read_text()
        urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", text) + re.findall(r"""url\(([^)]*)\)""", text)
        urls += re.findall(r"""fetch\(\s*["'`]([^"'`]*)""", text)
        for url in urls:
            assert not re.match(r"^([a-z][a-z0-9+.-]*:|//|/)", url.strip(), re.I), f"{path.name}: {url}"


def _browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (make install installs it)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("no chromium + chromedriver on this machine (Debian: apt-get install chromium chromium-driver; "
                    ".ci/run installs them)")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=900,820"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts)


@pytest.fixture(scope="module")
def browser():
    b = _browser()
    b.set_page_load_timeout(30)
    yield b
    b.quit()


@contextmanager
def page(browser, run: Path):
    cfg = ServeConfig(model=str(run), max_batch=4, max_new_tokens=40, warmup_runs=1, inference="thread")
    with running_server(create_app(cfg)) as (base, _):
        wait_ready(base, timeout=90)
        browser.get(base + "/")
        _wait(browser, "ready")
        yield base


def _wait(browser, *states: str, timeout: float = 30.0) -> str:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, timeout).until(lambda b: b.execute_script("return document.body.dataset.state") in states)
    return browser.execute_script("return document.body.dataset.state")


def _text(browser, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.ID, element_id).text


def _submit_image(browser, image: Path, question: str | None = None) -> None:
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, "file").send_keys(str(image))
    if question is not None:
        browser.find_element(By.ID, "question").send_keys(question)
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 10).until(lambda b: b.find_element(By.ID, "run-image").is_enabled())
    browser.find_element(By.ID, "run-image").click()
    assert _wait(browser, "done", "error") == "done", _text(browser, "error")


def _shot(browser, family: str) -> None:
    folder = os.environ.get("R1_SCREENSHOTS")
    if folder:
        browser.save_screenshot(str(Path(folder) / f"web-{family}.png"))


def _outside_requests(browser, base: str) -> list[str]:
    names = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    return [n for n in names if not n.startswith(base + "/")]


@pytest.mark.integration  # a real browser and four servers: ~8 s
def test_each_family_in_a_real_browser(browser, trained_digits, det_run, trained_mm, lm_run):
    from selenium.webdriver.common.by import By

    digit, scene, clevr = EXAMPLES / "digit-3.png", EXAMPLES / "digit-scene.png", EXAMPLES / "sortofclevr-scene.png"
    with page(browser, trained_digits) as base:  # classification: class probabilities
        _submit_image(browser, digit)
        local = r1.load(trained_digits).predict([Image.open(digit)], top_k=5)[0]
        assert _text(browser, "answer") == local["label"]
        rows = browser.find_elements(By.CSS_SELECTOR, "#bars tr")
        assert [r.text.split()[0] for r in rows] == [t["label"] for t in local["top"]]
        assert "answered by variant digits" in _text(browser, "answered")
        assert not _outside_requests(browser, base)
        _shot(browser, "cls")
    with page(browser, det_run):  # detection: boxes drawn on the image
        _submit_image(browser, scene)
        local = r1.load(det_run).predict([Image.open(scene)])[0]
        n = len(local["boxes"])
        assert n > 0 and _text(browser, "answer") == f"{n} detection{'s' * (n != 1)}"
        assert browser.execute_script("return document.getElementById('canvas').hidden") is False
        _shot(browser, "det")
    with page(browser, trained_mm):  # a question about an image
        _submit_image(browser, clevr, QUESTION)
        local = r1.load(trained_mm).predict([(Image.open(clevr), QUESTION)], top_k=5)[0]
        assert _text(browser, "answer") == local["answer"]
        _shot(browser, "mm")
    with page(browser, lm_run):  # streamed generation
        prompt = browser.find_element(By.ID, "prompt")
        prompt.send_keys(PROMPT)
        for field, value in (("max-tokens", "24"), ("temperature", "0")):
            el = browser.find_element(By.ID, field)
            el.clear()
            el.send_keys(value)
        browser.find_element(By.ID, "run-text").click()
        assert _wait(browser, "done", "error") == "done", _text(browser, "error")
        local = r1.load(lm_run).predict([PROMPT], max_new_tokens=24, temperature=0.0)[0]
        assert browser.execute_script("return document.getElementById('generated').textContent") == local["text"]
        assert "answered by variant lm" in _text(browser, "answered") and "finished: length" in _text(browser, "answered")
        _shot(browser, "lm")
