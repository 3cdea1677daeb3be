"""The page shell of qtrain's HTML reports: Bokeh plots inside ``templates/report.html``.

Why Bokeh, of the two libraries the trading tools use (freqtrade: plotly; backtesting.py: Bokeh):

* it is already in every qtrain environment: backtesting.py, the reference backtester of the dev
  extra (``tests/test_backtest_vs_backtestingpy.py``), draws its plots with it;
* a page inlines only the BokehJS bundles it uses, once: ``bokeh.min.js`` (1.3 MB), plus the
  widgets bundle (0.4 MB) where there is a fold picker; plotly's single bundle is 4.6 MB;
* it draws on a 2D canvas, so the pages render in headless Chromium without a GPU or WebGL;
* linked ranges (equity, drawdown and price pan and zoom together), hover tools and a Select
  widget are its own models: the only JavaScript qtrain writes is the fold picker's few lines.

Every page is ONE self-contained file that opens offline: BokehJS and the data inline, no CDN,
font or image (``tests/test_report_browser.py`` opens each in Chromium with the network off). The
template is autoescaped: titles, symbols, notes and cells are text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from bokeh.embed import file_html
from bokeh.models import Model
from bokeh.plotting import figure
from bokeh.resources import INLINE

PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
TOOLS = "xpan,xwheel_zoom,box_zoom,reset,save"


@dataclass(frozen=True)
class Table:
    """An HTML table of text cells; a row that is a plain string is a group heading across it."""

    head: Sequence[str] | None
    rows: Sequence[Sequence[str] | str]
    name: str = "metrics"
    text_cols: int = 1
    first_class: str = "key"

    @property
    def width(self) -> int:
        """Number of columns."""
        widths = [len(r) for r in self.rows if not isinstance(r, str)]
        return len(self.head) if self.head else max(widths, default=1)


@dataclass(frozen=True)
class Section:
    """One heading of a page with its notes, and a plot (a named Bokeh root) and/or a table."""

    heading: str
    root: str | None = None
    table: Table | None = None
    notes: Sequence[str] = field(default_factory=tuple)


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("report.html")


def page(title: str, intro: Sequence[str], sections: Sequence[Section], roots: Sequence[Model]) -> str:
    """The whole HTML page: BokehJS inlined once (only the bundles ``roots`` use), then ``sections``."""
    names = {r.name for r in roots}
    missing = [s.root for s in sections if s.root is not None and s.root not in names]
    if missing:
        raise ValueError(f"sections name plots that are not among the roots: {missing}")
    vars_ = {"page": {"title": title, "intro": list(intro), "sections": list(sections)}}
    return file_html(
        list(roots), resources=INLINE, title=title, template=_template(), template_variables=vars_
    )


def fmt(v: Any) -> str:
    """A metric as table text: ints as they are, NaN/None as a dash, 4 significant digits."""
    if v is None:
        return "–"
    if isinstance(v, bool | int | np.integer):
        return str(v)
    v = float(v)
    if math.isnan(v):
        return "–"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    return f"{v:,.2f}" if abs(v) >= 100 else f"{v:.4g}"


def when(ts: np.ndarray) -> np.ndarray:
    """Epoch seconds as the datetimes Bokeh's time axes take."""
    return np.asarray(ts, dtype=np.int64).astype("datetime64[s]")


def time_figure(title: str, height: int, **kw: Any) -> Any:
    """A full-width figure on a time axis with pan, wheel zoom (time only), box zoom and reset."""
    p = figure(
        title=title,
        height=height,
        x_axis_type="datetime",
        sizing_mode="stretch_width",
        tools=TOOLS,
        active_drag="xpan",
        active_scroll="xwheel_zoom",
        toolbar_location="right",
        **kw,
    )
    p.title.text_font_size = "13px"
    return p
