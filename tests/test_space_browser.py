"""The Space in a real browser: headless Debian Chromium, driven by Playwright, against the app on 127.0.0.1.

Playwright's own browser download needs a CDN this machine cannot reach, so the test drives the system
`/usr/bin/chromium` through `executable_path`; `make test` installs the package when it is missing, and without it
this test fails (it does not skip: a missing browser must not pass as a green run).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported

import pytest
import soundfile

from conftest import tone
from test_space import PROMPT, build_model_folder, expected_probabilities, launch, load_app_module

pytestmark = pytest.mark.slow  # drives the Space in headless Chromium

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LABELS = ["a dog barking", "a siren", "rain falling", "a church bell", "wind"]


def test_classify_a_clip_in_chromium(tmp_path):
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} not found: install Debian's chromium (`apt-get install -y chromium`, as `make test` does)",
            pytrace=False,
        )
    from playwright.sync_api import expect, sync_playwright

    model, processor = build_model_folder(tmp_path / "model", logit_scale=3000.0)
    clip = tmp_path / "clip.wav"
    soundfile.write(clip, tone(3.0, 523.0, sr=44100), 44100)
    expected = expected_probabilities(model, processor, clip, LABELS)
    top = max(expected, key=expected.get)

    app = load_app_module()
    demo = app.build_demo(str(tmp_path / "model"))
    url = launch(app, demo)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"),  # a fresh user-data-dir
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_FLAGS,
                viewport={"width": 1280, "height": 1000},
            )
            try:
                page = browser.new_page()
                page.goto(url, wait_until="domcontentloaded", timeout=60_000)
                page.get_by_role("button", name="Classify").wait_for(timeout=60_000)
                page.locator("input[type=file]").first.set_input_files(str(clip))
                # the upload is done when the player shows the clip's waveform controls
                expect(page.get_by_label("Play", exact=False).first).to_be_visible(timeout=30_000)
                page.get_by_label("Labels").fill("\n".join(LABELS))
                page.get_by_role("button", name="Classify").click()
                shown = page.get_by_test_id("label-output-value").first
                expect(shown).to_have_text(top, timeout=60_000)
                # the chart lists every label with its percentage (Gradio rounds to whole percents)
                chart = page.get_by_test_id("label").filter(has=shown)
                for label in expected:
                    expect(chart).to_contain_text(label)
                expect(chart).to_contain_text(f"{round(100 * expected[top])}%")
                expect(chart.get_by_test_id("status-tracker")).to_have_class(re.compile(r"\bhide\b"))  # not pending
                prompts_box = page.get_by_label("Prompts used")
                expect(prompts_box).to_have_value("\n".join(PROMPT.format(label=x) for x in LABELS), timeout=10_000)
                page.screenshot(path=str(tmp_path / "classify.png"), full_page=True)
            finally:
                browser.close()
    finally:
        demo.close()
    assert (tmp_path / "classify.png").stat().st_size > 10_000
