"""Performance metrics of an equity curve and its trades, under the names backtesting.py and
freqtrade users know (snake_case).

Definitions (``r`` = per-candle simple returns of the equity marked at close, ``eq[t]/eq[t-1] - 1``,
flat candles included as zeros; ``P`` = periods per year; risk-free rate ``rf`` annual, 0 by default):

* ``total_return_pct`` = (eq[-1] / eq[0] - 1) * 100.
* ``cagr_pct`` = ((eq[-1] / eq[0]) ** (1 / years) - 1) * 100, years = (ts[-1] - ts[0]) / 365.25 days
  (as backtesting.py); NaN for a single candle.
* Annualisation: crypto trades 24/7, so ``P = 365 * 86400 / candle_seconds`` (8760 for 1h).
* ``volatility_ann_pct`` = std(r, ddof=1) * sqrt(P) * 100; 0 with fewer than two returns.
* ``sharpe`` = mean(r - rf_p) / std(r, ddof=1) * sqrt(P), rf_p = (1 + rf) ** (1 / P) - 1 (arithmetic,
  per candle, like freqtrade/empyrical). backtesting.py instead resamples to daily returns and uses a
  geometric annual return over its own volatility formula, so its numbers differ. Flat equity
  (std 0) or fewer than two returns -> 0.0 (no risk taken, no excess return), never NaN.
* ``sortino`` = mean(r - rf_p) / sqrt(mean(min(r - rf_p, 0) ** 2)) * sqrt(P); no downside -> +inf
  if the mean is positive, else 0.0.
* ``calmar`` = cagr_pct / max_drawdown_pct (backtesting.py divides its annualised return); NaN when
  there was no drawdown.
* ``max_drawdown_pct``: largest fall from a running peak, as a POSITIVE percentage (backtesting.py
  prints it negative). ``max_drawdown_duration_candles`` / ``_days``: longest span from a peak to
  the candle that regains it (or the last candle if never regained), as backtesting.py counts it.
* Trades (closed only; an open trade at the end is not counted, as in backtesting.py):
  ``n_trades``; ``win_rate_pct`` = share with pnl > 0; ``profit_factor`` = gross profit / gross loss
  in cash (backtesting.py sums per-trade returns instead; inf with no losing trade);
  ``expectancy_pct`` = mean trade return_pct. NaN when there is no trade.
* ``exposure_pct`` = share of candles during which a position was held (backtesting.py also counts
  each trade's exit candle).
* ``fees_paid`` in quote currency; ``buy_and_hold_return_pct`` = (c[-1] / c[0] - 1) * 100 over the
  closes given (or the ``bh_equity`` curve).

Undefined values are NaN (or inf as stated); use ``json_safe`` before writing JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

DAYS_PER_YEAR = 365
SECONDS_PER_DAY = 86_400
YEAR_SECONDS_CAGR = 365.25 * SECONDS_PER_DAY

METRIC_NAMES: tuple[str, ...] = (
    "total_return_pct",
    "cagr_pct",
    "volatility_ann_pct",
    "sharpe",
    "sortino",
    "calmar",
    "max_drawdown_pct",
    "max_drawdown_duration_candles",
    "max_drawdown_duration_days",
    "n_trades",
    "win_rate_pct",
    "profit_factor",
    "expectancy_pct",
    "exposure_pct",
    "fees_paid",
    "buy_and_hold_return_pct",
    "equity_final",
)


def _as_equity(equity: np.ndarray) -> np.ndarray:
    eq = np.asarray(equity, dtype=np.float64)
    if eq.ndim != 1 or len(eq) == 0:
        raise ValueError("equity must be a non-empty 1-d array")
    if not np.all(np.isfinite(eq)) or np.any(eq < 0):
        raise ValueError("equity must hold finite values >= 0")
    return eq


def drawdown_series(equity: np.ndarray) -> np.ndarray:
    """Fractional drawdown from the running peak at each candle (0 at a new high, 1 = wiped out)."""
    eq = _as_equity(equity)
    peak = np.maximum.accumulate(eq)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(peak > 0, 1.0 - eq / peak, 0.0)


def max_drawdown(equity: np.ndarray) -> float:
    """Largest fall from a running peak as a fraction in [0, 1]; ValueError on empty ``equity``."""
    return float(drawdown_series(equity).max())


def max_drawdown_duration(equity: np.ndarray) -> tuple[int, int, int]:
    """(candles, start index, end index) of the longest drawdown, backtesting.py's way.

    A drawdown lasts from its peak to the candle that regains the peak, or to the last candle.
    (0, 0, 0) when equity never falls.
    """
    dd = drawdown_series(equity)
    n = len(dd)
    idx = np.arange(n)
    at_peak = dd == 0.0
    last_peak = np.maximum.accumulate(np.where(at_peak, idx, 0))
    ends = idx[1:][at_peak[1:]]
    starts = last_peak[ends - 1]
    if dd[-1] > 0:
        ends = np.append(ends, n - 1)
        starts = np.append(starts, last_peak[-1])
    length = ends - starts
    length = np.where(dd[np.minimum(starts + 1, n - 1)] > 0, length, 0)
    if len(length) == 0 or length.max() <= 0:
        return 0, 0, 0
    k = int(np.argmax(length))
    return int(length[k]), int(starts[k]), int(ends[k])


def periods_per_year_of(seconds: float) -> float:
    """Candles per year of a 24/7 market for a candle of ``seconds`` (8760 for 1h)."""
    if not seconds > 0:
        raise ValueError(f"timeframe_seconds must be > 0, got {seconds}")
    return DAYS_PER_YEAR * SECONDS_PER_DAY / seconds


def _ratio(num: float, den: float) -> float:
    if den > 0:
        return num / den
    return math.inf if num > 0 else 0.0


def compute_metrics(
    equity: np.ndarray,
    ts: np.ndarray,
    trades: np.ndarray | None = None,
    *,
    closes: np.ndarray | None = None,
    bh_equity: np.ndarray | None = None,
    position: np.ndarray | None = None,
    fees_paid: float = 0.0,
    timeframe_seconds: float | None = None,
    periods_per_year: float | None = None,
    risk_free: float = 0.0,
) -> dict[str, float]:
    """All metrics of the module docstring for one run (``trades``: structured array with
    ``pnl`` and ``return_pct``, e.g. ``BacktestResult.trades``)."""
    eq = _as_equity(equity)
    ts = np.asarray(ts, dtype=np.int64)
    if ts.shape != eq.shape:
        raise ValueError(f"ts has shape {ts.shape}, equity has {eq.shape}")
    n = len(eq)
    if periods_per_year is None:
        if timeframe_seconds is None:
            timeframe_seconds = float(np.median(np.diff(ts))) if n > 1 else 3600.0
        periods_per_year = periods_per_year_of(timeframe_seconds)
    if not periods_per_year > 0:
        raise ValueError(f"periods_per_year must be > 0, got {periods_per_year}")
    if not -1.0 < risk_free < 1.0:
        raise ValueError(f"risk_free must be in (-1, 1), got {risk_free}")

    m: dict[str, float] = {}
    ratio = eq[-1] / eq[0] if eq[0] > 0 else math.nan
    m["total_return_pct"] = (ratio - 1.0) * 100.0
    years = (ts[-1] - ts[0]) / YEAR_SECONDS_CAGR
    with np.errstate(over="ignore"):  # a huge gain over a few hours annualises to inf
        m["cagr_pct"] = float((np.float64(ratio) ** (1.0 / years) - 1.0) * 100.0) if years > 0 else math.nan

    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(eq[:-1] > 0, eq[1:] / eq[:-1] - 1.0, 0.0)
    rf_p = (1.0 + risk_free) ** (1.0 / periods_per_year) - 1.0
    sqrt_p = math.sqrt(periods_per_year)
    std = float(np.std(r, ddof=1)) if len(r) > 1 else 0.0
    excess = float(np.mean(r - rf_p)) if len(r) else 0.0
    m["volatility_ann_pct"] = std * sqrt_p * 100.0
    m["sharpe"] = excess / std * sqrt_p if std > 0 else 0.0
    downside = float(np.sqrt(np.mean(np.minimum(r - rf_p, 0.0) ** 2))) if len(r) else 0.0
    m["sortino"] = _ratio(excess, downside) * (sqrt_p if downside > 0 else 1.0)

    mdd = max_drawdown(eq) * 100.0
    m["calmar"] = m["cagr_pct"] / mdd if mdd > 0 else math.nan
    m["max_drawdown_pct"] = mdd
    dur, start, end = max_drawdown_duration(eq)
    m["max_drawdown_duration_candles"] = dur
    m["max_drawdown_duration_days"] = float(ts[end] - ts[start]) / SECONDS_PER_DAY

    pnl = np.asarray(trades["pnl"], dtype=np.float64) if trades is not None else np.empty(0)
    rets = np.asarray(trades["return_pct"], dtype=np.float64) if trades is not None else np.empty(0)
    m["n_trades"] = len(pnl)
    if len(pnl):
        m["win_rate_pct"] = float(np.mean(pnl > 0)) * 100.0
        gross_loss = float(-pnl[pnl < 0].sum())
        gross_win = float(pnl[pnl > 0].sum())
        m["profit_factor"] = (
            gross_win / gross_loss if gross_loss > 0 else (math.inf if gross_win > 0 else math.nan)
        )
        m["expectancy_pct"] = float(np.mean(rets))
    else:
        m["win_rate_pct"] = m["profit_factor"] = m["expectancy_pct"] = math.nan

    m["exposure_pct"] = (
        float(np.mean(np.asarray(position) != 0)) * 100.0 if position is not None else math.nan
    )
    m["fees_paid"] = float(fees_paid)
    if bh_equity is not None:
        bh = np.asarray(bh_equity, dtype=np.float64)
        m["buy_and_hold_return_pct"] = (bh[-1] / bh[0] - 1.0) * 100.0
    elif closes is not None and len(closes):
        c = np.asarray(closes, dtype=np.float64)
        m["buy_and_hold_return_pct"] = (c[-1] / c[0] - 1.0) * 100.0
    else:
        m["buy_and_hold_return_pct"] = math.nan
    m["equity_final"] = float(eq[-1])
    return {k: (v if isinstance(v, int) else float(v)) for k, v in m.items()}


def json_safe(metrics: Mapping[str, float]) -> dict[str, float | None]:
    """The metrics with NaN and +-inf replaced by None, so that ``json.dumps`` writes valid JSON."""
    return {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}


ANNUALISED: tuple[str, ...] = ("cagr_pct", "volatility_ann_pct", "sharpe", "sortino", "calmar")
"""Metrics scaled to a year: on a short range they extrapolate luck (12 days at +18% is a CAGR
of 27,000%), so reports show them only from ``MIN_DAYS_TO_ANNUALISE`` days on."""
MIN_DAYS_TO_ANNUALISE = 30.0
"""Days a range must span before its annualised metrics are shown (a month of hourly candles)."""


def too_short_to_annualise(days: float) -> bool:
    """True when a range of ``days`` is too short for its annualised metrics to be shown."""
    return not days >= MIN_DAYS_TO_ANNUALISE


def without_annualised(metrics: Mapping[str, float], days: float) -> dict[str, float]:
    """``metrics`` with the ``ANNUALISED`` ones set to NaN when ``days`` is under
    ``MIN_DAYS_TO_ANNUALISE`` (shown as n/a; the others are kept as they are)."""
    short = too_short_to_annualise(days)
    return {k: (math.nan if short and k in ANNUALISED else v) for k, v in metrics.items()}
