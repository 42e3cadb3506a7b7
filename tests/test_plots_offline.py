"""`dvc plots show` must give a page that renders without internet access.

DVC's default page loads vega, vega-lite and vega-embed from cdn.jsdelivr.net; this repo
points plots.html_template (.dvc/config) at .dvc/plots/offline.html, which inlines the same
versions (written by scripts/make_offline_plots_template.py). These tests run DVC on a
throwaway git+DVC repo using that template, check the page is self-contained and, when
Chromium is installed, that it actually draws the charts in a headless browser.
"""

from __future__ import annotations

import configparser
import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from browser import chromium, needs_chromium
from project import REPO

TEMPLATE = REPO / ".dvc" / "plots" / "offline.html"
DVC = Path(sys.executable).parent / "dvc"
# The versions dvc-render's VegaRenderer.SCRIPTS loads from the CDN.
LIBS = {"vega": "5.20.2", "vega-lite": "5.2.0", "vega-embed": "6.18.2"}
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0"}

DVC_YAML = """\
plots:
  - loss.json:
      x: epoch
      y: loss
      title: Training loss
  - confusion.csv:
      template: confusion
      x: actual
      y: predicted
      title: Confusion matrix
"""


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def plots_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh git+DVC repo configured like this one; returns `dvc plots show`'s page."""
    repo = tmp_path_factory.mktemp("plots-repo")
    _run(["git", "init", "-q"], repo)
    _run([str(DVC), "init", "-q"], repo)
    (repo / ".dvc" / "plots").mkdir()
    shutil.copy(TEMPLATE, repo / ".dvc" / "plots" / "offline.html")
    _run([str(DVC), "config", "plots.html_template", "plots/offline.html"], repo)

    loss = [{"epoch": e, "loss": round(2.3 * 0.7**e + 0.05, 4)} for e in range(1, 11)]
    (repo / "loss.json").write_text(json.dumps(loss), encoding="utf-8")
    with (repo / "confusion.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["actual", "predicted"])
        for actual in range(3):
            for predicted in range(3):
                writer.writerows([(actual, predicted)] * (20 if actual == predicted else 3))
    (repo / "dvc.yaml").write_text(DVC_YAML, encoding="utf-8")

    _run([str(DVC), "plots", "show", "--out", "plots_out"], repo)
    page = repo / "plots_out" / "index.html"
    assert page.is_file()
    return page


def test_repo_uses_the_intact_offline_template() -> None:
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")
    assert config.get("plots", "html_template") == "plots/offline.html"

    html = TEMPLATE.read_text(encoding="utf-8")
    # DVC fills the template by plain str.replace(): exactly one of each placeholder it
    # should fill, and none of the one that would bring back the CDN script tags.
    assert html.count("{plot_divs}") == 1
    assert html.count("{refresh_tag}") == 1
    assert "{scripts}" not in html
    assert "<script src" not in html

    # Each inlined build is byte-for-byte the published file: sha256 as recorded.
    recorded = re.findall(r"sha256 ([0-9a-f]{64})", html)
    bodies = re.findall(r"<script>\n/\*!.*?\n\*/\n(.*?)</script>", html, flags=re.DOTALL)
    assert len(recorded) == len(bodies) == len(LIBS)
    for body, sha in zip(bodies, recorded, strict=True):
        assert hashlib.sha256(body.encode("utf-8")).hexdigest() == sha
    for name, version in LIBS.items():
        assert f"/*! {name}@{version} (build/{name}.min.js), BSD-3-Clause." in html
    assert html.count("University of Washington Interactive Data Lab") >= len(LIBS)


@pytest.mark.e2e
def test_plots_show_page_is_self_contained(plots_page: Path) -> None:
    html = plots_page.read_text(encoding="utf-8")
    assert '<script src="http' not in html
    assert "cdn.jsdelivr.net" not in html
    for placeholder in ("{plot_divs}", "{refresh_tag}", "{scripts}"):
        assert placeholder not in html
    assert html.count("vegaEmbed('#") == 2  # one call per plot
    for name, version in LIBS.items():
        assert f"/*! {name}@{version} " in html
        assert f'"{version}"' in html  # the library's own version constant


@pytest.mark.e2e
@needs_chromium
def test_plots_page_renders_offline_in_chromium(plots_page: Path, tmp_path: Path) -> None:
    url = plots_page.as_uri()
    # vega-embed replaces each plot's <script> by a <canvas class="marks"> once drawn.
    dom = chromium(url, tmp_path / "profile-dom", "--dump-dom", size="1000,800", budget_ms=5000)
    dom = dom.stdout
    assert len(re.findall(r'<canvas[^>]*class="marks"', dom)) == 2, dom[-2000:]

    shot = tmp_path / "plots.png"
    proc = chromium(
        url, tmp_path / "profile-shot", f"--screenshot={shot}", size="1000,800", budget_ms=5000
    )
    assert shot.is_file(), proc.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    non_white = int((rgb.min(axis=2) < 235).sum())
    coloured = int((rgb.max(axis=2) - rgb.min(axis=2) > 60).sum())  # line, heatmap cells
    # The CDN page, offline, is uniformly white (0 and 0); drawn, this page has ~1e5, ~3e4.
    assert non_white > 20_000, f"only {non_white} non-white pixels: blank page?"
    assert coloured > 5_000, f"only {coloured} coloured pixels: no chart marks?"
