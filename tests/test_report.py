"""The HTML reports' content, without a browser (``test_report_browser.py`` opens them).

One self-contained page each; text escaped; the backtest's three charts on one time axis with
the trades' hover; the paper page's versions and decisions; the evaluate page draws every policy
the data has and the parameters as a table, not JSON.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from bokeh.models import BoxAnnotation, HoverTool, Label, Select

from model.evaluation.backtest import run_backtest
from model.evaluation.policies import buy_and_hold
from model.evaluation.scoreboard import ablation
from model.market.synthetic import make_candles
from tests.report_pages import EXTRA_POLICY, backtest_page, paper_decisions, scoreboard_board
from worker.evaluation.scoreboard import Scoreboard
from worker.pages.report import backtest_charts, decisions_table, keep_indices, render_report
from worker.pages.scoreboard import (
    ablation_table,
    equity_picker,
    parameters_table,
    policy_names,
    render_scoreboard,
    sharpe_chart,
)


def _tooltips(fig) -> list[list[str]]:
    return [[label for label, _ in t.tooltips] for t in fig.tools if isinstance(t, HoverTool)]


def test_backtest_page_is_one_escaped_file_with_the_metrics() -> None:
    html = backtest_page()
    assert html.lstrip().startswith("<!DOCTYPE html>")
    assert "qtrain backtest: BTC-USDT Q-table v3 &lt;&amp;&gt;" in html and "<&>" not in html
    assert "<svg" not in html.split("<script", 1)[0]  # no hand-drawn charts left
    for name in ("total_return_pct", "sharpe", "max_drawdown_pct", "buy_and_hold_return_pct", "n_trades"):
        assert f'<td class="key">{name}</td>' in html
    assert "<th>qtable</th>" in html and "<th>buy_and_hold</th>" in html


def test_charts_share_one_time_axis_and_trades_hover_time_side_price_pnl() -> None:
    c = make_candles(500, seed=2)
    pos = np.zeros(len(c), dtype=np.int8)
    pos[50:120] = 1
    pos[300:] = 1  # still open at the end
    res = run_backtest(c, pos)
    bh = run_backtest(c, buy_and_hold(len(c))).equity
    equity, drawdown, price = backtest_charts(res, c, bh).children
    assert equity.x_range is drawdown.x_range is price.x_range
    assert ["time", "strategy", "buy and hold", "drawdown"] in _tooltips(equity)
    assert _tooltips(price) == [["", "time", "price", "trade P&L"]] * 2  # buys, sells
    buys, sells = (r.data_source.data for r in price.renderers[1:])
    assert list(buys["side"]) == ["buy", "buy"] and list(sells["side"]) == ["sell"]
    assert buys["pnl"][1] == "open at the end" and sells["pnl"][0].startswith(("+", "-"))
    assert buys["price"][0] == pytest.approx(res.trades["entry_price"][0])


def test_keep_indices_keeps_every_series_extremes_and_bounds() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=100_000).cumsum()
    b = rng.normal(size=100_000).cumsum()
    a[54_321], b[77_777] = 1e6, -1e6
    idx = keep_indices(a, b, max_points=2000)
    assert len(idx) <= 2 * 2000 + 2 and np.all(np.diff(idx) > 0)
    assert idx[0] == 0 and idx[-1] == len(a) - 1 and {54_321, 77_777} <= set(idx.tolist())
    assert a[idx].min() == a.min() and b[idx].max() == b.max()
    assert np.array_equal(keep_indices(a[:10], b[:10]), np.arange(10))


def test_paper_page_shows_each_version_and_the_decisions_newest_first() -> None:
    c, res, decisions = paper_decisions(n=600, switch=400)
    charts = backtest_charts(res, c, np.asarray(c.close) / c.close[0] * res.equity[0], decisions)
    equity = charts.children[0]
    bands = [a for a in equity.renderers + equity.center if isinstance(a, BoxAnnotation)]
    labels = [a.text for a in equity.center if isinstance(a, Label)]
    assert len(bands) == 2 and labels == ["v3", "v4"]
    assert bands[0].right == bands[1].left == int(c.ts[400]) * 1000
    assert "version" in _tooltips(equity)[0]
    table = decisions_table(decisions, limit=50)
    assert len(table.rows) == 50 and table.rows[0][1] == "v4" and table.head[1] == "version"
    html = render_report(res, title="paper", candles=c, decisions=decisions)
    assert "Decisions (last 500)" in html and '<td class="text">v3</td>' in html


def test_report_refuses_mismatched_series() -> None:
    c = make_candles(50, seed=1)
    res = run_backtest(c, buy_and_hold(len(c)))
    with pytest.raises(ValueError, match="bh_equity has 10 values"):
        render_report(res, title="x", candles=c, bh_equity=np.ones(10))
    with pytest.raises(ValueError, match="result has 50 candles"):
        render_report(res, title="x", candles=c.slice(0, 40))


def test_evaluate_page_draws_every_policy_the_data_names() -> None:
    board = scoreboard_board()
    names = policy_names(board)
    assert EXTRA_POLICY in names and {"qtable", "rules", "buy_and_hold", "random", "flat"} <= set(names)
    bars = sharpe_chart(board, names, {n: "#000000" for n in names})
    assert [item.label.value for item in bars.legend[0].items] == names
    assert [r.data_source.data["policy"][0] for r in bars.renderers] == names
    picker = equity_picker(board, names, {n: "#000000" for n in names})
    select, fig = picker.children
    assert isinstance(select, Select) and len(select.options) == len(board.folds)
    drawn = {r.glyph.y for r in fig.renderers}
    assert drawn == set(names) - {"random"}  # random is a median of metrics: no one curve


def test_evaluate_parameters_are_a_table_not_json() -> None:
    board = scoreboard_board()
    table = parameters_table(board)
    rows = {r[0]: r[1] for r in table.rows if not isinstance(r, str)}
    groups = [r for r in table.rows if isinstance(r, str)]
    assert "recipe pooled (policy qtable)" in groups and rows["turnover_cost"] == "0.003"
    assert rows["fee"] == "0.001 per side (0.1%)" and "seeds 0–4" in rows["random baseline"]
    assert rows["BTC-USDT"].startswith("trains from 2024-01-02; tested 2024-01-22")
    html = render_scoreboard(board)
    assert json.dumps(board.params, sort_keys=True) not in html and "&#34;train_days&#34;" not in html


def test_evaluate_page_without_per_fold_equity_says_so() -> None:
    board = scoreboard_board()
    old = Scoreboard(
        folds=[{k: v for k, v in f.items() if k != "equity"} for f in board.folds],
        summary=board.summary,
        params=board.params,
    )
    html = render_scoreboard(old)
    assert "This scoreboard has no per-fold equity." in html and "fold_picker" not in html


def test_evaluate_page_shows_what_the_analyses_add_against_each_control() -> None:
    board = scoreboard_board()
    records = [
        {
            **f,
            "policies": {
                **f["policies"],
                "qtable:shuffled": {"sharpe": 0.0},
                "qtable:constant": {"sharpe": 9.0},
            },
        }
        for f in board.folds
    ]
    with_controls = dataclasses.replace(board, folds=records, ablation=ablation(records))
    table = ablation_table(with_controls)
    assert table is not None
    assert [r[1] for r in table.rows] == ["qtable:unshaped", "qtable:shuffled", "qtable:constant"]
    n = len(records)
    assert table.rows[2][2:5] == [f"0/{n}", str(n), "0"]  # every fold below a constant control of Sharpe 9
    html = render_scoreboard(with_controls)
    assert "What the analyses add" in html and "qtable:constant" in html
    assert ablation_table(board) is None and "What the analyses add" not in render_scoreboard(board)
