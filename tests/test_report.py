"""The HTML report is self-contained and renders in headless Chromium (screenshot not blank).

Needs the Debian package ``chromium`` (``apt-get install -y --no-install-recommends chromium``)
and Pillow (installed with backtesting.py's bokeh) to read the screenshot.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from model.backtest import run_backtest
from model.policies import buy_and_hold, sma_crossover
from model.synthetic import make_candles
from producer.report import downsample, render_report
from tests.services import require_chromium


@pytest.fixture(scope="module")
def report_html() -> str:
    c = make_candles(5000, seed=9)
    res = run_backtest(c, sma_crossover(c.close, 12, 48))
    bh = run_backtest(c, buy_and_hold(len(c)))
    table = {"sma 12/48": res.metrics, "buy and hold": bh.metrics}
    return render_report(
        res, title="SMA <crossover> & co", candles=c, bh_equity=bh.equity, metrics_table=table
    )


def test_report_is_self_contained(report_html):
    assert report_html.startswith("<!DOCTYPE html>")
    urls = set(re.findall(r"https?://[^\"' )]+", report_html))
    assert urls == {"http://www.w3.org/2000/svg"}
    assert "<script" not in report_html and "<link" not in report_html
    assert report_html.count("<svg") == 3
    assert "SMA &lt;crossover&gt; &amp; co" in report_html
    for name in ("total_return_pct", "sharpe", "max_drawdown_pct", "buy_and_hold_return_pct", "n_trades"):
        assert f"<td>{name}</td>" in report_html
    assert 'class="entry-markers"' in report_html and "<path d=" in report_html


def test_downsample_keeps_extremes_and_bounds():
    rng = np.random.default_rng(0)
    y = rng.normal(size=100_000).cumsum()
    y[54_321] = 1e6
    x = np.arange(len(y))
    xs, ys = downsample(x, y, 2000)
    assert len(xs) <= 2002
    assert ys.max() == 1e6 and ys.min() == y.min()
    assert xs[0] == 0 and xs[-1] == len(y) - 1 and np.all(np.diff(xs) > 0)
    small_x, small_y = downsample(x[:10], y[:10], 2000)
    assert np.array_equal(small_y, y[:10])


def test_report_renders_in_headless_chromium(report_html, tmp_path: Path):
    image = pytest.importorskip("PIL.Image")
    exe = require_chromium()
    page = tmp_path / "report.html"
    page.write_text(report_html, encoding="utf-8")
    png = tmp_path / "shot.png"
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={png}",
        "--window-size=1200,1600",
        page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert png.exists(), f"no screenshot; chromium said: {proc.stderr[-2000:]}"
    img = np.asarray(image.open(png).convert("RGB"))
    assert img.shape[:2] == (1600, 1200)
    # The three charts fill the band under the title; each must have drawn lines, not just paper.
    for top, bottom in ((120, 400), (440, 740), (780, 1080)):
        band = img[top:bottom, 60:1150].reshape(-1, 3)
        non_white = np.mean(np.any(band < 235, axis=1))
        colours = len(np.unique(band, axis=0))
        assert non_white > 0.02, f"chart band {top}-{bottom} is almost blank ({non_white:.3%})"
        assert colours > 20, f"chart band {top}-{bottom} has only {colours} colours"
    # The strategy's blue and buy-and-hold's orange lines are there.
    flat = img.reshape(-1, 3).astype(int)
    blue = np.sum((abs(flat[:, 0] - 0x1F) < 40) & (abs(flat[:, 1] - 0x77) < 40) & (flat[:, 2] > 150))
    orange = np.sum((flat[:, 0] > 200) & (abs(flat[:, 1] - 0x7F) < 40) & (flat[:, 2] < 80))
    assert blue > 500 and orange > 500
