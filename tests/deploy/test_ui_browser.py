"""The web page in a real browser: Debian's Chromium, headless, driven by selenium through /usr/bin/chromedriver,
against a real server (uvicorn on a loopback port) that serves a tiny char GPT, RAG over a few small documents and
the page over a runs folder this test trained runs into. The page loads, the runs table shows the run, its curves
and plots appear when it is selected, two runs compare, the model registry shows its alias, a chat reply streams in
(several growing texts are seen before the last one), a question is answered with its citations, and behind a key
the page asks for it."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from ragtools import PETS, minilm, write_files

from dlforge.deploy.model_registry import ModelRegistry
from dlforge.deploy.serve.app import ServeOptions, create_app
from dlforge.deploy.serve.served import load_served
from dlforge.deploy.serve.ui import ui_app, ui_router
from dlforge.rag.http import RagService, rag_router
from dlforge.rag.ingest import index_folder
from dlforge.runs.rundir import read_metrics
from tests.deploy.test_serve import Server, char_gpt  # noqa: F401 - char_gpt: the fixture, used by name below
from tests.deploy.test_serve_classic import _digit_pngs

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
STEP_S = 0.03  # a pause per generated token, so that the reply's pieces reach the browser apart, as they would
WAIT_S = 20


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    from dlforge.api import train

    root = tmp_path_factory.mktemp("ui-browser") / "runs"
    quiet = ["train.max_epochs=null", "train.max_steps=10", "train.progress=false", "train.tensorboard=false",
             "train.checkpoint_every=null", "train.eval_every=5", "train.log_every=2"]
    train("iris-logistic", quiet, run_dir=root / "iris-run")
    train("digits-cnn", [*quiet, "train.max_steps=4"], run_dir=root / "digits-run")  # an image classifier
    registry = ModelRegistry(root)
    registry.add(root / "iris-run", "iris")
    registry.set_alias("iris", "champion", 1)
    return root


@pytest.fixture(scope="module")
def server(char_gpt, runs):  # noqa: F811 - the fixture imported above
    import torch

    gpt = load_served(str(char_gpt))
    embedding = next(m for m in gpt.model.modules() if isinstance(m, torch.nn.Embedding))  # every step reads it
    embedding.register_forward_pre_hook(lambda *_: time.sleep(STEP_S))
    db = runs.parent / "pets.db"
    index_folder(write_files(runs.parent / "docs", PETS), db, embedder=minilm())
    rag = RagService(db)
    digits = load_served(str(runs / "digits-run"))
    s = Server(create_app([gpt, digits], ServeOptions(runs_dir=str(runs), watch_s=0, log=lambda _: None),
                          [ui_router(runs), rag_router(rag)]))
    s.model, s.runs = gpt.id, runs
    yield s
    s.stop()
    rag.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.fail(f"the browser test needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): "
                    "`make browser` installs them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)  # with the driver's path given too, selenium-manager is never run
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}", "--window-size=1280,2000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_script_timeout(WAIT_S)
    yield driver
    driver.quit()


def wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(condition, message=f"waiting for {what}")


def text_of(driver, css: str) -> str:
    return driver.execute_script("const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                                 css)


def test_the_page_shows_the_run_with_its_curves_plots_and_card(browser, server):
    from selenium.webdriver.common.by import By

    browser.get(f"{server.url}/")
    assert browser.title == "dlforge"
    row = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#runs-table tr[data-name="iris-run"]'),
               "the run in the runs table")[0]
    assert browser.find_element(By.ID, "run-detail").is_displayed() is False
    cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
    assert cells[1:4] == ["iris-run", "iris-logistic", "completed"] and "test/accuracy" in cells[5]

    row.click()  # the run's curves, plots and card
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#run-curves .chart[data-title="loss"] svg path'),
         "the loss curve")
    points = browser.execute_script(
        "return document.querySelector('#run-curves .chart[data-title=\"loss\"] path').getAttribute('d')")
    logged = [r for r in read_metrics(server.runs / "iris-run" / "metrics.jsonl") if "loss" in r]
    assert points.count("M") == 1 and points.count("L") == len(logged) - 1  # a point per row of the log
    assert text_of(browser, "#run-title").startswith("iris-run")
    assert text_of(browser, "#run-card").startswith("# iris-logistic")
    plots = sorted(p.name for p in (server.runs / "iris-run" / "plots").glob("*.png"))
    wait(browser, lambda d: d.execute_script(
        "const imgs = [...document.querySelectorAll('#run-plots img')];"
        "return imgs.length === arguments[0] && imgs.every(i => i.complete && i.naturalWidth > 100);", len(plots)),
         "the plots to load")
    assert [i.get_attribute("data-file") for i in browser.find_elements(By.CSS_SELECTOR, "#run-plots img")] == plots


def test_two_runs_compared_and_the_registry_with_its_alias(browser, server):
    from selenium.webdriver.common.by import By

    browser.get(f"{server.url}/")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#runs-table tr.run")) == 2, "both runs")
    button = browser.find_element(By.ID, "compare-button")
    assert not button.is_enabled()  # two runs or more
    for box in browser.find_elements(By.CSS_SELECTOR, "#runs-table input.pick"):
        box.click()
    assert button.is_enabled() and browser.find_element(By.ID, "run-detail").is_displayed() is False
    button.click()
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#compare-chart path")) == 2, "two curves overlaid")
    assert browser.find_element(By.ID, "compare-metric").get_attribute("value") == "loss"
    legend = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#compare-chart text")][-2:]
    assert sorted(legend) == ["digits-run", "iris-run"]
    header = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#compare-table th")]
    assert header[0] == "metric" and sorted(header[1:]) == ["digits-run", "iris-run"]
    assert "test/accuracy" in text_of(browser, "#compare-table tbody")

    row = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#registry-table tr[data-ref="iris@1"]'),
               "the registry's version")[0]
    assert [td.text for td in row.find_elements(By.TAG_NAME, "td")][:3] == ["iris", "1", "champion"]


def test_a_chat_reply_streams_in(browser, server):
    from selenium.webdriver.common.by import By

    browser.get(f"{server.url}/")
    wait(browser, lambda d: d.find_element(By.ID, "chat-form").is_displayed(), "the chat box")
    assert text_of(browser, "#chat-model") == server.model
    browser.execute_script(  # every state of the reply, as the page changes it
        "window.seen = []; new MutationObserver(() => {"
        "  const m = document.querySelector('#chat-log .message.assistant');"
        "  if (m) window.seen.push(m.textContent);"
        "}).observe(document.getElementById('chat-log'), {subtree: true, childList: true, characterData: true});")
    for field, value in (("chat-max", "24"), ("chat-temperature", "0")):
        box = browser.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
    browser.find_element(By.ID, "chat-input").send_keys("hello")
    browser.find_element(By.ID, "chat-send").click()
    wait(browser, lambda d: d.execute_script(
        "const m = document.querySelector('#chat-log .message.assistant'); return m && m.dataset.done === 'true';"),
         "the end of the reply")
    final = text_of(browser, "#chat-log .message.assistant")
    seen = [t for t in browser.execute_script("return window.seen;") if t]
    partial = [t for t in dict.fromkeys(seen) if t != final]
    assert len(partial) >= 3, f"the reply did not stream in: {seen}"
    assert all(final.startswith(t) for t in partial) and partial == sorted(partial, key=len)
    plain = httpx.post(f"{server.url}/v1/chat/completions", timeout=WAIT_S, json={
        "model": server.model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 24,
        "temperature": 0}).json()
    assert final == plain["choices"][0]["message"]["content"]  # what the page shows is what the server generated


def test_behind_a_key_the_page_asks_for_it_and_sends_it(browser, runs):
    from selenium.webdriver.common.by import By

    guarded = Server(ui_app(runs, "browser-key-1"))
    try:
        browser.get(f"{guarded.url}/")
        form = browser.find_element(By.ID, "key-form")
        wait(browser, lambda d: form.is_displayed(), "the page to ask for the key")
        assert "needs its API key" in text_of(browser, "#runs-note")
        assert not browser.find_elements(By.CSS_SELECTOR, "#runs-table tr.run")
        browser.find_element(By.ID, "key-input").send_keys("browser-key-1")
        browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
        row = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#runs-table tr[data-name="iris-run"]'),
                   "the runs, with the key")[0]
        assert not form.is_displayed() and text_of(browser, "#runs-note") == ""
        row.click()
        wait(browser, lambda d: d.execute_script(  # the plots too: fetched with the key, not linked
            "const imgs = [...document.querySelectorAll('#run-plots img')];"
            "return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 100);"), "the plots")
    finally:
        guarded.stop()


def test_a_question_is_answered_with_its_citations(browser, server):
    from selenium.webdriver.common.by import By

    question = "How long do cats sleep?"
    want = httpx.post(f"{server.url}/v1/rag/ask", json={"question": question}, timeout=WAIT_S).json()
    assert want["found"] and want["citations"]
    browser.get(f"{server.url}/")
    wait(browser, lambda d: d.find_element(By.ID, "rag-form").is_displayed(), "the question box")
    assert text_of(browser, "#rag-note") == ""
    browser.find_element(By.ID, "rag-question").send_keys(question)
    browser.find_element(By.CSS_SELECTOR, "#rag-form button").click()
    wait(browser, lambda d: text_of(d, "#rag-answer") not in ("", "…"), "the answer")
    assert text_of(browser, "#rag-answer") == want["answer"]
    cited = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#rag-citations li")]
    assert len(cited) == len(want["citations"]) and cited[0].startswith(f"[{want['citations'][0]['n']}] cats.md")


def test_uploaded_images_are_classified(browser, server, tmp_path):
    from selenium.webdriver.common.by import By

    paths = _digit_pngs(tmp_path / "digits", 2)
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in paths]
    want = httpx.post(f"{server.url}/v1/predict", data={"model": "digits-run"}, files=files,
                      timeout=WAIT_S).json()["predictions"]
    browser.get(f"{server.url}/")
    wait(browser, lambda d: d.find_element(By.ID, "image-form").is_displayed(), "the upload box")
    assert text_of(browser, "#image-model") == "digits-run"  # the image model only, not the GPT
    browser.find_element(By.ID, "image-files").send_keys("\n".join(str(p) for p in paths))
    browser.find_element(By.CSS_SELECTOR, "#image-form button").click()
    rows = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#image-predictions tbody tr"), "predictions")
    header = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#image-predictions th")]
    assert header[0] == "file" and set(header[1:]) == set(want[0])
    shown = [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]
    assert [r[0] for r in shown] == ["00.png", "01.png"]
    for cells, row in zip(shown, want, strict=True):
        exact = {k: v for k, v in row.items() if isinstance(v, str | int)}  # labels and indices, shown as they are
        assert exact and all(cells[header.index(k)] == str(v) for k, v in exact.items()), (cells, row)
