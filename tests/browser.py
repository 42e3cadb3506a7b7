"""Headless Chromium for the browser checks (Debian's `chromium`, as root, offline)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="chromium is not installed (Debian package `chromium`: apt-get install chromium)",
)


def chromium(
    url: str, profile: Path, *args: str, size: str = "1600,1000", budget_ms: int = 20000
) -> subprocess.CompletedProcess:
    """Run headless Chromium on `url` with a new empty profile; `args` say what to do
    (`--dump-dom`, `--screenshot=PATH`). The flags keep it off the network it cannot reach."""
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={size}",
        f"--virtual-time-budget={budget_ms}",
        *args,
        url,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
