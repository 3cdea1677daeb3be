"""Each HTML report opens in headless Chromium with the network off and draws its charts.

The backtest, paper and evaluate pages (``tests/report_pages.py``) are opened over the DevTools
protocol (``tests/cdp.py``) with the network emulated offline: the page must ask for nothing but
itself and inline ``data:`` images, log no console error and throw nothing, and its screenshot
must show the charts (not blank, the strategy's blue and buy-and-hold's orange drawn). On the
evaluate page the fold picker is used: the equity chart must switch to the chosen fold.

Needs the Debian package ``chromium`` (skipped without it, a failure under ``CI=true``) and
Pillow (the dev extra) to read the screenshots.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import bokeh
import numpy as np
import pytest

from tests.cdp import Browser, Page
from tests.report_pages import PAGES, scoreboard_board

READY = (
    "window.Bokeh !== undefined && [...Bokeh.index].length > 0"
    " && [...Bokeh.index].every((v) => v.has_finished())"
)
PAINTED = "new Promise((ok) => requestAnimationFrame(() => requestAnimationFrame(() => ok(true))))"
BOKEH_JS = Path(bokeh.__file__).parent / "server" / "static" / "js" / "bokeh.min.js"
WIDTH, HEIGHT = 1200, 2200


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("reports")
    paths = {}
    for name, build in PAGES.items():
        paths[name] = out / f"{name}.html"
        paths[name].write_text(build(), encoding="utf-8")
    return paths


@pytest.mark.parametrize("name", sorted(PAGES))
def test_page_is_one_file_with_bokehjs_inlined_once(pages: dict[str, Path], name: str) -> None:
    html = pages[name].read_text(encoding="utf-8")
    markup = re.sub(r"(<script\b[^>]*>).*?(</script>)", r"\1\2", html, flags=re.S | re.I)  # tags, not JS
    tags = re.findall(r"<(?:script|link|img|iframe|source|object|embed)\b[^>]*>", markup, re.I)
    fetched = [t for t in tags if re.search(r"\b(?:src|href|data)\s*=", t, re.I)]
    assert fetched == [], f"{name} loads files: {fetched}"
    assert "@import" not in markup and not re.search(r"url\(\s*['\"]?https?:", markup)
    tail = BOKEH_JS.read_text(encoding="utf-8")[-400:]  # a piece of BokehJS itself
    assert html.count(tail) == 1, f"BokehJS inlined {html.count(tail)} times in {name}"
    size = len(html.encode())
    assert 1_000_000 < size < 3_000_000, f"{name} is {size:,} bytes"


async def _open(page: Page, png: Path) -> None:
    await page.wait_for(READY)
    await page.evaluate(PAINTED)
    await page.screenshot(png)


def _undrawn(png: Path) -> list[str]:
    """What is missing from a screenshot for its charts to count as drawn (nothing: drawn)."""
    image = pytest.importorskip("PIL.Image")
    img = np.asarray(image.open(png).convert("RGB"))
    assert img.shape[:2] == (HEIGHT, WIDTH)
    flat = img.reshape(-1, 3).astype(int)
    problems = []
    non_white = float(np.mean(np.any(flat < 235, axis=1)))
    colours = len(np.unique(flat, axis=0))
    if non_white < 0.02 or colours < 100:
        problems.append(f"looks blank ({non_white:.1%} not white, {colours} colours)")
    for what, hex_colour in (("blue (strategy, qtable)", "#1f77b4"), ("orange (buy and hold)", "#ff7f0e")):
        rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
        n = int(np.sum(np.all(np.abs(flat - rgb) < 40, axis=1)))
        if n < 400:
            problems.append(f"{n} {what} pixels")
    return problems


@pytest.mark.parametrize("name", sorted(PAGES))
def test_page_renders_offline_in_chromium(pages: dict[str, Path], name: str, tmp_path: Path) -> None:
    png = tmp_path / f"{name}.png"
    seen: dict[str, Any] = {}

    async def steps(page: Page) -> None:
        await _open(page, png)
        if name == "evaluate":  # the fold picker switches the equity chart to the chosen fold
            doc = "Bokeh.documents[0]"
            shown = f'{doc}.get_model_by_name("fold_shown")'
            first = await page.evaluate(f"Number({shown}.data.t[0])")
            await page.evaluate(f'{doc}.get_model_by_name("fold_picker").value = "3"')
            await page.wait_for(f"Number({shown}.data.t[0]) !== {first}", timeout=10)
            title = await page.evaluate(f'{doc}.get_model_by_name("fold_figure").title.text')
            seen["picked"] = [first, await page.evaluate(f"Number({shown}.data.t[0])"), title]
            await page.evaluate(PAINTED)
        seen["errors"], seen["requests"] = page.errors(), page.requests()

    with Browser(tmp_path / "profile", width=WIDTH, height=HEIGHT) as browser:
        browser.run(pages[name], steps)
    assert seen["errors"] == [], f"console errors in {name}: {seen['errors']}"
    outside = [u for u in seen["requests"] if not u.startswith(("file://", "data:"))]
    assert outside == [], f"{name} asked the network for {outside}"
    assert seen["requests"][0] == pages[name].resolve().as_uri()
    assert _undrawn(png) == [], f"{name}: charts not drawn"
    if name == "evaluate":
        first, now, title = seen["picked"]
        folds = scoreboard_board().folds
        fold = folds[3]
        assert first == folds[0]["equity"]["ts"][0] * 1000
        assert (
            now == fold["equity"]["ts"][0] * 1000
            and fold["symbol"] in title
            and fold["test_since"][:10] in title
        )


def test_a_page_whose_charts_do_not_draw_is_caught(pages: dict[str, Path], tmp_path: Path) -> None:
    """The pixel check above fails on the same page with its scripts taken out (text and tables only)."""
    html = pages["backtest"].read_text(encoding="utf-8")
    bare = tmp_path / "bare.html"
    bare.write_text(re.sub(r"<script\b[^>]*>.*?</script>", "", html, flags=re.S | re.I), encoding="utf-8")
    png = tmp_path / "bare.png"

    async def steps(page: Page) -> None:
        await page.evaluate(PAINTED)
        await page.screenshot(png)

    with Browser(tmp_path / "profile", width=WIDTH, height=HEIGHT) as browser:
        browser.run(bare, steps)
    assert _undrawn(png), "the check passed a page without charts"
