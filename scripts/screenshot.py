"""Regenerate docs/screenshot.png: the demo on the bundled model after analysing an example.

    python -m scripts.screenshot [--model weights/pneumonia-resnet50]
"""
import argparse
import shutil
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]

import app
from benchmarks.load_test import free_port
from modeling import Predictor

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=str(ROOT / "weights" / "pneumonia-resnet50"))
    parser.add_argument("--image", default=str(ROOT / "examples" / "pneumonia-person1_virus_6.jpeg"))
    args = parser.parse_args()
    demo = app.build_demo(Predictor.from_pretrained(args.model))
    port = free_port()
    app.serve(demo, "127.0.0.1", port)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                                 args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator("input[type=file]").first.set_input_files(args.image)
            page.get_by_role("button", name="Analyse", exact=True).click()
            expect(page.locator("#decision")).to_contain_text("P(pneumonia) =", timeout=120_000)
            expect(page.locator("#heatmap img")).to_be_visible(timeout=60_000)
            expect(page.locator("#upload-preview img")).to_be_visible(timeout=60_000)
            page.screenshot(path=str(ROOT / "docs" / "screenshot.png"), full_page=True)
            browser.close()
    finally:
        app.stop(demo)
    print(f"wrote {ROOT / 'docs' / 'screenshot.png'}")


if __name__ == "__main__":
    main()
