"""Headless Chromium turns a report's HTML into a PDF and its plots into PNG and SVG images.

Run as its own process (``python -m engine.render HTML PDF IMAGE_DIR``, see ``render_in_subprocess``):
a browser that crashes or hangs then costs a failed PDF, never the app or CLI that asked for it,
and Playwright's sync API gets a process with no event loop of its own to collide with.
Images come from plotly.js's own ``Plotly.toImage`` in that same page, so they are exactly the
figures of the report (no second renderer such as kaleido to keep in step).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

RENDER_TIMEOUT_S = 180
IMAGE_SIZE = {"width": 1100, "height": 480}


class RenderError(RuntimeError):
    """The PDF or images could not be made; the message says why and what to do."""


def chromium_path() -> str:
    """The Chromium to drive: the system's (apt's chromium), as the browser tests use."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise RenderError(
        "the PDF and the plot images need headless Chromium, and none was found on PATH "
        "(install it with: apt-get install chromium). The HTML report was written and is complete."
    )


def _data_url_bytes(url: str) -> bytes:
    head, _, data = url.partition(",")
    if head.endswith(";base64"):
        return base64.b64decode(data)
    return urllib.parse.unquote(data).encode()


def render(html: Path, pdf: Path, image_dir: Path) -> dict[str, Any]:
    """Open the report in Chromium; write the PDF and each plot as PNG and SVG. Returns what was
    written and any console errors the page logged."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    written: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(html.resolve().as_uri(), wait_until="load")
            ids: list[str] = page.eval_on_selector_all(".js-plotly-plot", "els => els.map(e => e.id)")
            page.wait_for_function(
                "n => document.querySelectorAll('.js-plotly-plot .main-svg').length >= n", arg=len(ids)
            )
            image_dir.mkdir(parents=True, exist_ok=True)
            for fig_id in ids:
                for fmt in ("png", "svg"):
                    url = page.evaluate(
                        "([id, opts]) => Plotly.toImage(document.getElementById(id), opts)",
                        [fig_id, {"format": fmt, **IMAGE_SIZE}],
                    )
                    target = image_dir / f"{fig_id.removeprefix('fig-')}.{fmt}"
                    target.write_bytes(_data_url_bytes(url))
                    written.append(str(target))
            page.emulate_media(media="print")
            page.pdf(path=str(pdf), format="A4", landscape=True, print_background=True)
            written.append(str(pdf))
        finally:
            browser.close()
    return {"written": written, "console_errors": errors, "figures": ids}


def render_in_subprocess(html: Path, pdf: Path, image_dir: Path) -> dict[str, Any]:
    """render() in a child process with a time limit; RenderError with the reason if it fails."""
    chromium_path()  # the common failure, said plainly before starting anything
    try:
        done = subprocess.run(
            [sys.executable, "-m", "engine.render", str(html), str(pdf), str(image_dir)],
            capture_output=True,
            text=True,
            timeout=RENDER_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise RenderError(f"Chromium did not finish the PDF within {RENDER_TIMEOUT_S} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise RenderError(f"Chromium could not render the report: {last}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str]) -> int:
    html, pdf, image_dir = (Path(a) for a in argv)
    try:
        print(json.dumps(render(html, pdf, image_dir)))
    except RenderError as e:
        print(str(e), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
