"""The dashboard in a real headless browser (Debian's chromium through selenium and
chromium-driver): it shows a running job and a model's tested context, and its cancel button
cancels the job. Skips when chromium is not installed, except under CI=true."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.configs import config_for
from helpers.serve import ServerThread
from helpers.waiting import wait_for

from lmstrix.core.inference_manager import InferenceManager
from lmstrix.core.jobs import JobManager
from lmstrix.core.models import ModelRegistry
from lmstrix.serve import create_app
from lmstrix.testing import LMStudioEmulator

pytestmark = pytest.mark.slow

MODEL = "llama-3.2-1b-instruct"
LONG = " ".join(f"word{i}" for i in range(2000))


def _browser() -> Any:
    chromium = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        reason = (
            "chromium and chromium-driver are not installed "
            "(apt-get install chromium chromium-driver)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: the browser test must run, not skip)")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.fixture
def browser() -> Iterator[Any]:
    b = _browser()
    yield b
    b.quit()


def _text(browser: Any, selector: str) -> str:
    """The text of the first element matching ``selector`` now ("" if none): read in one
    script call, since the page redraws its tables every second."""
    text = browser.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
        selector,
    )
    return str(text)


def test_dashboard_shows_a_running_job_and_cancels_it(browser: Any, tmp_path: Path) -> None:
    emu = LMStudioEmulator(clock="real", tokens_per_second=50.0, load_seconds=0.0).start()
    config = config_for(emu, database={"url": f"sqlite:///{tmp_path / 'lmstrix.db'}"})
    try:
        with (
            ServerThread(create_app(config)) as server,
            InferenceManager(config=config, timeout=120) as manager,
            JobManager(config) as jobs,
        ):
            manager.infer(MODEL, "hi")  # fills the registry
            ModelRegistry(config=config).update_model(MODEL, {"tested_context": 12345}, host="h1")
            job = manager.submit(MODEL, f"repeat {LONG}", max_tokens=3000)
            wait_for(lambda: jobs.get_job(job.id).status == "running", what="the job running")

            browser.get(server.url + "/")
            row = f"#running tr[data-id='{job.id}']"
            wait_for(lambda: "running" in _text(browser, row), 30, "the running row")
            models = _text(browser, "#models")
            assert "12345" in models and MODEL in models

            # The button as the user presses it (a redraw may replace it under a WebDriver
            # click, so the click is dispatched in the page).
            browser.execute_script(
                "document.querySelector(arguments[0]).click();", f"{row} button.cancel"
            )
            wait_for(lambda: jobs.get_job(job.id).status == "cancelled", 30, "the cancel")
            recent = f"#recent tr[data-id='{job.id}']"
            wait_for(
                lambda: "cancelled" in _text(browser, recent), 30, "the page to show it cancelled"
            )
    finally:
        emu.stop()
