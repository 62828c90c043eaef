"""A person's view: headless Chromium (Debian's) opens the demo, uploads an X-ray, sees it, then decision and heatmap."""
import shutil

import pytest
from playwright.sync_api import expect, sync_playwright

import app
from modeling import Predictor
from tests.helpers import REPO, free_port

pytestmark = pytest.mark.slow  # a browser start

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def test_upload_shows_decision_and_heatmap(tiny_model_dir, tmp_path):
    demo = app.build_demo(Predictor.from_pretrained(tiny_model_dir))
    port = free_port()
    app.serve(demo, "127.0.0.1", port)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")
            expect(page.get_by_text("Research aid, not a diagnosis")).to_be_visible(timeout=30_000)
            page.locator("input[type=file]").first.set_input_files(str(REPO / "examples" / "pneumonia-person1_virus_6.jpeg"))
            expect(page.locator("#upload-preview img")).to_be_visible(timeout=30_000)  # shown before any analysis
            page.get_by_role("button", name="Analyse", exact=True).click()
            decision = page.locator("#decision")
            expect(decision).to_contain_text("P(pneumonia) =", timeout=60_000)
            assert any(words in decision.inner_text() for words in ("Pneumonia suspected", "No pneumonia detected"))
            heatmap = page.locator("#heatmap img")
            expect(heatmap).to_be_visible(timeout=30_000)
            # visible comes before decoded: wait, within a bound, for the image to finish loading, then read its size
            page.wait_for_function("() => { const img = document.querySelector('#heatmap img'); "
                                   "return img !== null && img.complete && img.naturalWidth > 0; }", timeout=30_000)
            assert heatmap.evaluate("img => img.naturalWidth") == 224
            expect(page.get_by_text("validation sensitivity was")).to_be_visible()
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
            browser.close()
    finally:
        app.stop(demo)
