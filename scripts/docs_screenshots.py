"""Fresh pictures of the web app for the README and docs: the viewer on a hemorrhage (the bundled PHE-SICH sample
0021_13) and the worklist, taken from a real `strokescan serve` on 127.0.0.1 with headless Debian Chromium.

    .venv/bin/python scripts/docs_screenshots.py [--out docs/screenshots]

The server runs in a temporary folder with the bundled sample scans (PHE-SICH, CC BY 4.0; GE, BSD-2) and stops at
the end; nothing identifying is shown (identifiers off).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
PASSWORD = "screenshots-only-" + os.urandom(6).hex()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the samples' analyses")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    with tempfile.TemporaryDirectory() as web_dir:
        env = {**os.environ, "STROKESCAN_WEB_DIR": web_dir, "STROKESCAN_ADMIN_PASSWORD": PASSWORD}
        server = subprocess.Popen([str(Path(sys.executable).with_name("strokescan")), "serve", "--port", str(port)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                deadline = time.monotonic() + 60
                while True:
                    try:
                        page.goto(f"{base}/login")
                        break
                    except Exception:  # the server is still starting
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.5)
                page.fill("input[name=username]", "admin")
                page.fill("input[name=password]", PASSWORD)
                page.click("button[type=submit], input[type=submit]")
                deadline = time.monotonic() + a.timeout
                while page.locator(".status-queued, .status-running").count() > 0 or not page.locator(".status-done").count():
                    if time.monotonic() > deadline:
                        raise TimeoutError("the samples were not analysed in time")
                    time.sleep(3)
                    page.reload()
                page.screenshot(path=str(a.out / "worklist.png"), full_page=True)
                page.locator("a", has_text="PHE-SICH 0021 slice 13").first.click()
                page.wait_for_selector("#viewer")
                page.wait_for_timeout(1500)
                page.screenshot(path=str(a.out / "viewer.png"), full_page=True)
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"wrote {a.out / 'worklist.png'} and {a.out / 'viewer.png'}")


if __name__ == "__main__":
    main()
