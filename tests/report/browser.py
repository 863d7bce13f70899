"""Open a report page in headless Chromium and read back what it drew (Debian's `chromium`
package; Google Chrome works too). Uses only the command line: `--dump-dom` after the page's
scripts ran (`--virtual-time-budget` lets timers and promises finish) returns the DOM, in which
the page wrote its status (pythia.report.page); `--screenshot` saves a PNG in the same run."""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from pythia.report.page import STATUS_ID

INSTALL_HINT = "install Chromium to run the browser check: sudo apt-get install chromium (Debian/Ubuntu)"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    env = os.environ.get("PYTHIA_CHROMIUM")
    if env:
        return env
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def _flags(profile: Path) -> list[str]:
    # --no-sandbox: CI containers run as root, where Chromium's sandbox refuses to start.
    return ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--hide-scrollbars", "--mute-audio", f"--user-data-dir={profile}", "--virtual-time-budget=30000"]


def open_page(browser: str, page: Path, profile: Path, screenshot: Path | None = None, size=(1400, 2400),
              selftest: bool = True, timeout: float = 180) -> dict:
    """Load `page`, return the JSON it wrote into #report-status once every figure was drawn
    (with `selftest`, after it switched every menu to its last option and back), and save a
    screenshot of the window when asked (one browser run does both)."""
    shot = [f"--window-size={size[0]},{size[1]}", f"--screenshot={screenshot}"] if screenshot else []
    uri = page.resolve().as_uri() + ("#selftest" if selftest else "")
    out = subprocess.run([browser, *_flags(profile), *shot, "--dump-dom", uri],
                         capture_output=True, text=True, timeout=timeout)
    m = re.search(rf'<div id="{STATUS_ID}"[^>]*>(.*?)</div>', out.stdout, re.S)
    if not m or not m[1].strip():
        raise AssertionError(f"the page wrote no status (exit {out.returncode}); stderr tail:\n{out.stderr[-2000:]}")
    return json.loads(html.unescape(m[1]))
