#!/usr/bin/env python3
"""Write .dvc/plots/offline.html: a `dvc plots show` HTML template with Vega inlined.

DVC's default page loads vega, vega-lite and vega-embed from cdn.jsdelivr.net, so on a
machine without internet the plots page is blank. This script fetches the exact versions
DVC's default uses (dvc_render.vega.VegaRenderer.SCRIPTS) with `npm pack` from the npm
registry, checks each tarball against the registry's sha512 integrity
(`npm view <pkg>@<ver> dist.integrity`), and writes a template with the three minified
builds (and their BSD-3-Clause licence texts) inlined in <script> tags.

DVC uses the template through `.dvc/config`:

    [plots]
        html_template = plots/offline.html

Usage (needs `npm` and access to the npm registry; the output is byte-for-byte
reproducible, so re-running it on an unchanged template leaves `git diff` empty):

    python scripts/make_offline_plots_template.py [--out .dvc/plots/offline.html]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / ".dvc" / "plots" / "offline.html"
SELF = "scripts/make_offline_plots_template.py"

# (npm package, version, file inside the tarball): the versions pinned by dvc-render's
# VegaRenderer.SCRIPTS; the file is the package's "jsdelivr"/"unpkg" entry, i.e. what the
# bare CDN URL DVC uses serves.
PACKAGES = [
    ("vega", "5.20.2", "build/vega.min.js"),
    ("vega-lite", "5.2.0", "build/vega-lite.min.js"),
    ("vega-embed", "6.18.2", "build/vega-embed.min.js"),
]

# DVC fills the template with plain str.replace() on these, so none may occur in the
# inlined code; only {plot_divs} (required) and {refresh_tag} may occur, once each, in
# the page skeleton. Its third placeholder (scripts) is left out on purpose: DVC would
# put the CDN <script src=...> tags there.
PLACEHOLDERS = ("{plot_divs}", "{refresh_tag}", "{scripts}")
# Strings that would end or confuse an inline <script> element.
SCRIPT_BREAKERS = re.compile(r"</script|<script|<!--", re.IGNORECASE)


def npm(*args: str, cwd: Path) -> str:
    proc = subprocess.run(["npm", *args], cwd=cwd, check=True, capture_output=True, text=True)
    return proc.stdout


def sri_sha512(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")


def fetch(name: str, version: str, member: str, workdir: Path) -> dict:
    """`npm pack` one package, verify it and return its build file and licence text."""
    spec = f"{name}@{version}"
    expected = npm("view", spec, "dist.integrity", cwd=workdir).strip()
    if not expected.startswith("sha512-"):
        sys.exit(f"{spec}: unexpected dist.integrity from the registry: {expected!r}")
    packed = json.loads(npm("pack", spec, "--json", cwd=workdir))[0]
    tarball = (workdir / packed["filename"]).read_bytes()
    actual = sri_sha512(tarball)
    if actual != expected:
        sys.exit(f"{spec}: integrity mismatch: registry {expected}, tarball {actual}")
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        code = tar.extractfile(f"package/{member}").read().decode("utf-8")
        if not code.endswith("\n"):
            sys.exit(f"{spec}/{member} does not end with a newline")
        licence = tar.extractfile("package/LICENSE").read().decode("utf-8")
    for placeholder in PLACEHOLDERS:
        if placeholder in code:
            sys.exit(f"{spec}/{member} contains the DVC placeholder {placeholder}")
    if SCRIPT_BREAKERS.search(code):
        sys.exit(f"{spec}/{member} contains a string that would break an inline <script>")
    if "*/" in licence or any(p in licence for p in PLACEHOLDERS):
        sys.exit(f"{spec}/LICENSE cannot be embedded in a /* */ comment as is")
    return {
        "spec": spec,
        "member": member,
        "integrity": expected,
        "tarball": f"https://registry.npmjs.org/{name}/-/{name}-{version}.tgz",
        "sha256": hashlib.sha256(code.encode("utf-8")).hexdigest(),
        "code": code,
        "licence": licence.strip(),
    }


def render(libs: list[dict]) -> str:
    provenance = "\n".join(
        f"  {lib['spec']}: package/{lib['member']} of {lib['tarball']}\n"
        f"    tarball integrity {lib['integrity']}\n"
        f"    sha256 {lib['sha256']} (the file, as inlined)"
        for lib in libs
    )
    scripts = "\n".join(
        "<script>\n"
        f"/*! {lib['spec']} ({lib['member']}), BSD-3-Clause.\n\n{lib['licence']}\n*/\n"
        f"{lib['code']}"  # byte-for-byte the published file, ending in a newline
        "</script>"
        for lib in libs
    )
    page = f"""<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>DVC Plot</title>
<!--
  Offline HTML template for `dvc plots show` (used through plots.html_template in
  .dvc/config). It is DVC's default page with the CDN script tags replaced by inlined
  copies of the same library versions, so the page renders without internet access.

  GENERATED FILE: do not edit. Regenerate with
      python {SELF}
  which runs `npm pack` for each package below from the npm registry, checks the tarball
  against `npm view <pkg>@<ver> dist.integrity` and rewrites this file.

{provenance}

  Each library keeps its licence (BSD-3-Clause, University of Washington Interactive
  Data Lab) in a comment at the top of its script element.
-->
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""
    for placeholder in PLACEHOLDERS:
        expected = 0 if placeholder == "{scripts}" else 1
        if page.count(placeholder) != expected:
            raise AssertionError(f"{placeholder} occurs {page.count(placeholder)} times")
    return page


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="%(default)s")
    args = parser.parse_args()
    if shutil.which("npm") is None:
        sys.exit("npm not found on PATH")
    with tempfile.TemporaryDirectory(prefix="offline-plots-") as tmp:
        libs = [fetch(*pkg, workdir=Path(tmp)) for pkg in PACKAGES]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(libs), encoding="utf-8", newline="\n")
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
