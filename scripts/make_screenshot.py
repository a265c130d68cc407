"""Regenerate docs/app.png: the app (offline, bundled demo model) with a segmented example, as a small PNG.

    python scripts/make_screenshot.py                 # writes docs/app.png (needs /usr/bin/chromium + playwright)
    python scripts/make_screenshot.py --output /tmp/app.png --width 1200
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(ROOT / "docs" / "app.png"), help="PNG to write")
    parser.add_argument("--width", type=int, default=1200, help="browser viewport width (CSS px)")
    parser.add_argument("--scale", type=float, default=0.6, help="downscale of the saved PNG")
    parser.add_argument("--example", default="ultrasound.png", help="file in examples/ to segment")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    return parser.parse_args(argv)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(url: str, process: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url + "gradio_api/info", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"app.py did not answer on {url} within {timeout_s} s")


def main(args) -> None:
    from playwright.sync_api import expect, sync_playwright

    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    scratch = Path(tempfile.mkdtemp(prefix="gms-screenshot-"))
    env = {k: v for k, v in os.environ.items() if k not in ("GMS_MODELS", "GMS_DEMO_MODEL")}
    env.update(HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", GRADIO_SERVER_NAME="127.0.0.1",
               GRADIO_SERVER_PORT=str(port), GMS_MODELS_FILE=str(scratch / "none.json"), TMPDIR=str(scratch),
               GRADIO_TEMP_DIR=str(scratch / "gradio"))
    process = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(url, process)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium,
                                                 args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": args.width, "height": 1000})
            page.goto(url, wait_until="domcontentloaded")
            page.locator("#image-file input[type=file]").set_input_files(str(ROOT / "examples" / args.example))
            page.locator("#segment-button").click()
            expect(page.locator("#result-table")).to_contain_text("Segmented area", timeout=120_000)
            page.wait_for_function(
                "() => [...document.querySelectorAll('#overlay img, #preview img')].every(i => i.complete && i.naturalWidth > 0)"
            )
            page.evaluate("window.scrollTo(0, 0)")
            shot = scratch / "page.png"
            page.screenshot(path=str(shot), full_page=False)
            browser.close()
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(shot) as image:
            image = image.convert("RGB")
            image = image.resize((round(image.width * args.scale), round(image.height * args.scale)), Image.LANCZOS)
            # A 256-colour palette keeps the PNG small; the page is mostly flat colour.
            image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(output, format="PNG", optimize=True)
        print(f"wrote {output} ({output.stat().st_size / 1024:.0f} KB)")
    finally:
        process.terminate()
        process.wait(timeout=20)


if __name__ == "__main__":
    main(parse_args())
