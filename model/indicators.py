"""Technical indicators on numpy arrays: vectorised, causal, TA-Lib compatible after warm-up.

Conventions shared by every method of ``FastIndicators``:

* Causal: the value at ``t`` uses inputs at indices ``<= t`` only. The arithmetic does not depend
  on the series length either, so a prefix gives bit-identical values to the full series.
* Warm-up: values that lack enough history are NaN; each docstring gives the warm-up length, i.e.
  the index of the first value on a series without missing inputs (TA-Lib's "lookback").
* Missing inputs (NaN or +-inf) are treated as gaps: a window that contains one is NaN, and the
  recursive filters (EMA, Wilder) restart after a gap with a fresh warm-up and seed, as if the
  series began there. Nothing raises on NaN input.
* Recursive filters ``y_t = a*y_{t-1} + (1-a)*x_t`` are evaluated in closed form per block of
  ``B`` samples (a cumulative sum of ``x_i * a**-i``, with ``B`` chosen so ``a**-B < 1e100``),
  then each block's end state is carried into the next with a short loop over blocks (not over
  candles). Rolling means use per-block cumulative sums of deviations from a reference value of the
  block; rolling variances merge the statistics of runs of ``2**l`` values pairwise (Chan et al.),
  which stays accurate where a running sum of squares (TA-Lib's) loses digits at high price levels.
* Inputs are converted to float64 1-D arrays; a bad argument raises ``ValueError`` naming it.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

_LOG_RANGE = 230.0  # ln(1e100): a**-B stays far inside the float64 range
_MAX_FILTER_BLOCK = 2048


def _series(name: str, x: npt.ArrayLike) -> FloatArray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    return arr


def _period(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _same_length(**arrays: FloatArray) -> None:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"inputs differ in length: {lengths}")


def _leading_gap(fin: BoolArray) -> int:
    """Length of the leading run of missing inputs when nothing else is missing, else -1."""
    lead = int(np.argmax(fin)) if fin.any() else len(fin)
    return lead if bool(fin[lead:].all()) else -1


def _window_ok(x: FloatArray, period: int) -> BoolArray:
    """True at ``t`` when the ``period`` inputs ending at ``t`` exist and are all finite."""
    n = len(x)
    ok = np.zeros(n, dtype=np.bool_)
    fin = np.isfinite(x)
    lead = _leading_gap(fin)
    if lead >= 0:
        ok[lead + period - 1 :] = True
    elif n >= period:
        bad = np.concatenate(([0], np.cumsum(~fin, dtype=np.int64)))
        ok[period - 1 :] = (bad[period:] - bad[:-period]) == 0
    return ok


def _rolling_mean(x: FloatArray, period: int) -> FloatArray:
    """Mean of the ``period`` values ending at ``t``.

    Blocks of ``B`` outputs share one reference value (the first finite input the block's windows
    see, an input at or before every window it serves), so windowed sums are differences of short
    cumulative sums of small deviations: accurate, vectorised, and identical on any prefix.
    """
    n = len(x)
    if n < period:
        return np.full(n, np.nan)
    all_finite = bool(np.isfinite(x).all())
    block = 256 if period <= 64 else 4 * period
    seg_len = block + period - 1
    nb = -(-n // block)
    padded = np.full(nb * block + period - 1, np.nan)
    padded[period - 1 : period - 1 + n] = x
    segs = sliding_window_view(padded, seg_len)[::block]
    if all_finite:  # only the padding is missing: the first row starts with it
        ref = segs[:, 0].copy()
        ref[0] = x[0]
    else:
        fin = np.isfinite(segs)
        ref = segs[np.arange(nb), np.argmax(fin, axis=1)]
        ref[~np.isfinite(ref)] = 0.0
    dev = segs - ref[:, None]
    if all_finite:
        dev[0, : period - 1] = 0.0
        dev[-1, ~np.isfinite(dev[-1])] = 0.0
    else:
        dev[~np.isfinite(dev)] = 0.0
    cs = np.zeros((nb, seg_len + 1))
    np.cumsum(dev, axis=1, out=cs[:, 1:])
    s1 = cs[:, period:] - cs[:, :block]
    mean = (ref[:, None] + s1 / period).reshape(-1)[:n]
    if not all_finite:
        mean[~_window_ok(x, period)] = np.nan
    else:
        mean[: period - 1] = np.nan
    return mean


def _rolling_moments(x: FloatArray, period: int) -> tuple[FloatArray, FloatArray]:
    """Mean and sum of squared deviations (M2) of the ``period`` values ending at ``t``.

    Stable pairwise merging (Chan et al.): statistics of every run of ``2**l`` values are merged
    from two runs of ``2**(l-1)``, then each window combines the runs of its length's binary
    digits. M2 is a sum of non-negative terms, so a flat window gives exactly 0; the error does not
    grow with the price level the way a running sum of squares does.
    """
    n = len(x)
    mean = np.full(n, np.nan)
    m2 = np.full(n, np.nan)
    if n < period:
        return mean, m2
    levels: dict[int, tuple[FloatArray, FloatArray | None]] = {}
    m_l: FloatArray = x
    q_l: FloatArray | None = None  # None: all zeros (single values)
    size = 1
    while True:
        if period & size:
            levels[size] = (m_l, q_l)
        if size * 2 > period:
            break
        d = m_l[size:] - m_l[:-size]
        sq = d * d
        sq *= size / 2.0
        if q_l is not None:
            sq += q_l[:-size]
            sq += q_l[size:]
        d *= 0.5
        d += m_l[:-size]
        m_l, q_l = d, sq
        size *= 2
    count = n - period + 1
    offset = 0
    acc_m = acc_q = np.zeros(0)
    for size in sorted(levels, reverse=True):
        mb, qb = levels[size]
        mb = mb[offset : offset + count]
        if offset == 0:
            acc_m = mb.copy()
            acc_q = np.zeros(count) if qb is None else qb[:count].copy()
        else:
            total = offset + size
            d = mb - acc_m
            sq = d * d
            sq *= offset * size / total
            acc_q += sq
            if qb is not None:
                acc_q += qb[offset : offset + count]
            d *= size / total
            acc_m += d
        offset += size
    mean[period - 1 :] = acc_m
    m2[period - 1 :] = acc_q
    if not np.isfinite(x).all():
        bad = ~_window_ok(x, period)
        mean[bad] = np.nan
        m2[bad] = np.nan
    return mean, m2


def _filter_block(a: float) -> int:
    return max(1, min(_MAX_FILTER_BLOCK, int(_LOG_RANGE / -math.log(a))))


def _one_block(contrib: FloatArray, kind: npt.NDArray[np.int8], a: float, out: FloatArray) -> FloatArray:
    """``_recursive``'s solver for a series that fits in one block: the same floating-point
    operations in the same order as the general path on its only row (bit-identical results, a
    test checks), without the machinery that carries the state from block to block. An analysed
    window's ~100 candles take this path seven times per window."""
    n = len(contrib)
    jf = np.arange(n, dtype=np.float64)
    z = contrib * np.power(a, -jf)
    np.cumsum(z, out=z)
    last = np.maximum.accumulate(np.where(kind != 2, np.arange(n), -1))
    before = np.zeros(n)
    before[1:] = z[:-1]
    y = np.power(a, jf) * (z - before[np.maximum(last, 0)])
    y[(kind == 0) | (last < 0)] = np.nan
    out[:] = y
    return out


def _recursive(
    x: FloatArray, period: int, alpha: float, seed_pos: int, *, one_block: bool = True
) -> FloatArray:
    """``y_t = (1-alpha)*y_{t-1} + alpha*x_t`` per run of finite inputs.

    In each run the output starts at run position ``seed_pos`` (>= period-1) with the mean of the
    ``period`` inputs ending there (TA-Lib's SMA seed); earlier positions are NaN. Blocks with no
    seed or gap (nearly all) take a fast path; the others are solved from their last event on.
    ``one_block=False`` keeps a short series on the general path (tests compare the two).
    """
    n = len(x)
    out = np.full(n, np.nan)
    if n <= seed_pos:
        return out
    kind = np.full(n, 2, dtype=np.int8)  # 0 no value, 1 seed, 2 running
    fin = np.isfinite(x)
    lead = _leading_gap(fin)
    if lead >= 0:  # the usual case: no gap, or only a leading one
        kind[: lead + seed_pos] = 0
        if lead + seed_pos < n:
            kind[lead + seed_pos] = 1
    else:
        idx = np.arange(n)
        pos = idx - np.maximum.accumulate(np.where(fin, -1, idx)) - 1
        kind[pos < seed_pos] = 0
        kind[pos == seed_pos] = 1
    events = np.flatnonzero(kind != 2)
    seeds = events[kind[events] == 1]
    if len(seeds) == 0:
        return out
    a = 1.0 - alpha
    contrib = alpha * x
    contrib[events] = 0.0
    if len(seeds) == 1:  # the usual case: one run; the same mean without a strided view (~15 us)
        s0 = int(seeds[0])
        contrib[s0] = x[s0 - period + 1 : s0 + 1].mean()
    else:
        contrib[seeds] = sliding_window_view(x, period)[seeds - period + 1].mean(axis=1)
    if a <= 0.0:
        out[kind > 0] = contrib[kind > 0]
        return out
    block = _filter_block(a)
    if one_block and n <= block:
        return _one_block(contrib, kind, a, out)
    nb = -(-n // block)
    k = np.zeros(nb * block, dtype=np.int8)
    k[:n] = kind
    z = np.zeros(nb * block)
    z[:n] = contrib
    z2, k2 = z.reshape(nb, block), k.reshape(nb, block)
    jf = np.arange(block, dtype=np.float64)
    down = np.power(a, jf)
    down1 = np.power(a, jf + 1.0)
    z2 *= np.power(a, -jf)
    np.cumsum(z2, axis=1, out=z2)
    # Rows with an event (seed, gap, warm-up or padding): restart the sum at the last event.
    ev_rows = np.unique(np.concatenate((events // block, [nb - 1])))
    zs, ks = z2[ev_rows], k2[ev_rows]
    last = np.maximum.accumulate(np.where(ks != 2, np.arange(block), -1), axis=1)
    before = np.zeros_like(zs)
    before[:, 1:] = zs[:, :-1]
    ys = down * (zs - np.take_along_axis(before, np.maximum(last, 0), axis=1))
    cont_s = last < 0  # values continuing the previous block's state
    y = z2
    y *= down
    y[ev_rows] = ys
    end_local = y[:, -1].tolist()
    end_cont = np.ones(nb, dtype=np.bool_)
    end_cont[ev_rows] = cont_s[:, -1]
    cont_end = end_cont.tolist()
    g = float(down1[-1])
    carry = [math.nan] * nb
    for b in range(1, nb):
        carry[b] = end_local[b - 1] + (g * carry[b - 1] if cont_end[b - 1] else 0.0)
    carried = np.asarray(carry)
    carried_ev = carried[ev_rows]
    carried[ev_rows] = 0.0
    y += carried[:, None] * down1
    ys = np.where(cont_s, ys + carried_ev[:, None] * down1, ys)
    ys[ks == 0] = np.nan
    y[ev_rows] = ys
    out[:] = y.reshape(-1)[:n]
    return out


class FastIndicators:
    """Vectorised, causal indicators with TA-Lib's seeding (see the module docstring)."""

    @staticmethod
    def sma(x: npt.ArrayLike, period: int) -> FloatArray:
        """Simple moving average; warm-up ``period - 1`` (TA-Lib ``SMA``)."""
        arr = _series("x", x)
        p = _period("period", period)
        with np.errstate(all="ignore"):
            return _rolling_mean(arr, p)

    @staticmethod
    def rolling_std(x: npt.ArrayLike, period: int, ddof: int = 0) -> FloatArray:
        """Rolling standard deviation (population for ``ddof=0``, TA-Lib ``STDDEV``); warm-up ``period - 1``.

        A spread below the rounding bound of the window is reported as exactly 0.
        """
        arr = _series("x", x)
        p = _period("period", period)
        if isinstance(ddof, bool) or not isinstance(ddof, int | np.integer) or not 0 <= ddof < p:
            raise ValueError(f"ddof must be an integer in [0, period), got {ddof!r}")
        with np.errstate(all="ignore"):
            return np.sqrt(_rolling_moments(arr, p)[1] / (p - ddof))

    @staticmethod
    def ema(x: npt.ArrayLike, period: int) -> FloatArray:
        """EMA with ``alpha = 2/(period+1)``; warm-up ``period - 1``, seeded with the SMA of the first
        ``period`` values (TA-Lib ``EMA``); restarts with a new seed after a missing input."""
        arr = _series("x", x)
        p = _period("period", period)
        with np.errstate(all="ignore"):
            return _recursive(arr, p, 2.0 / (p + 1), p - 1)

    @staticmethod
    def wilder(x: npt.ArrayLike, period: int) -> FloatArray:
        """Wilder smoothing (``alpha = 1/period``); warm-up ``period - 1``, seeded with the SMA of the
        first ``period`` values, as TA-Lib seeds RSI and ATR."""
        arr = _series("x", x)
        p = _period("period", period)
        with np.errstate(all="ignore"):
            return _recursive(arr, p, 1.0 / p, p - 1)

    @staticmethod
    def rsi(close: npt.ArrayLike, period: int = 14) -> FloatArray:
        """Wilder RSI in 0..100; warm-up ``period`` (TA-Lib ``RSI``: first value from the mean gain
        and loss of the first ``period`` changes). A window with no change at all gives 50 (TA-Lib: 0)."""
        c = _series("close", close)
        p = _period("period", period)
        with np.errstate(all="ignore"):
            diff = np.full(len(c), np.nan)
            diff[1:] = c[1:] - c[:-1]
            gain = np.maximum(diff, 0.0)  # NaN stays NaN
            loss = np.maximum(-diff, 0.0)
            avg_gain = _recursive(gain, p, 1.0 / p, p - 1)
            avg_loss = _recursive(loss, p, 1.0 / p, p - 1)
            total = avg_gain + avg_loss
            return np.where(total == 0.0, 50.0, 100.0 * avg_gain / total)

    @staticmethod
    def macd(
        close: npt.ArrayLike, fast: int = 12, slow: int = 26, signal: int = 9
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """MACD line, signal line and histogram; warm-up ``slow + signal - 2`` for all three.

        TA-Lib ``MACD`` alignment: both EMAs produce their first value at ``slow - 1`` (the fast EMA
        is seeded with the SMA of the ``fast`` values ending there), the signal EMA is seeded with
        the SMA of the first ``signal`` MACD values, and the MACD line is NaN until the signal exists.
        """
        c = _series("close", close)
        f = _period("fast", fast)
        s = _period("slow", slow)
        g = _period("signal", signal)
        if f >= s:
            raise ValueError(f"fast must be < slow, got fast={f}, slow={s}")
        with np.errstate(all="ignore"):
            fast_ema = _recursive(c, f, 2.0 / (f + 1), s - 1)
            slow_ema = _recursive(c, s, 2.0 / (s + 1), s - 1)
            line = fast_ema - slow_ema
            sig = _recursive(line, g, 2.0 / (g + 1), g - 1)
            line = np.where(np.isnan(sig), np.nan, line)
            return line, sig, line - sig

    @staticmethod
    def bollinger(
        close: npt.ArrayLike, period: int = 20, k: float = 2.0
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
        """Bollinger bands ``(upper, middle, lower, pct_b, width)``; warm-up ``period - 1``.

        TA-Lib ``BBANDS`` with an SMA middle and population std (nbdev ``k``). ``pct_b`` is
        ``(close-lower)/(upper-lower)`` (0.5 when the bands collapse), ``width`` is
        ``(upper-lower)/middle`` as a fraction.
        """
        c = _series("close", close)
        p = _period("period", period)
        if isinstance(k, bool) or not (
            isinstance(k, int | float | np.floating) and math.isfinite(k) and k > 0
        ):
            raise ValueError(f"k must be a finite number > 0, got {k!r}")
        with np.errstate(all="ignore"):
            middle, m2 = _rolling_moments(c, p)
            std = np.sqrt(m2 / p)
            upper = middle + k * std
            lower = middle - k * std
            pct_b = np.where(std == 0.0, 0.5, (c - lower) / (upper - lower))
            width = (upper - lower) / middle
            return upper, middle, lower, pct_b, width

    @staticmethod
    def atr(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, period: int = 14) -> FloatArray:
        """Wilder ATR; warm-up ``period`` (TA-Lib ``ATR``: true range from index 1, seeded with the
        mean of the first ``period`` true ranges)."""
        h, lo, c = _series("high", high), _series("low", low), _series("close", close)
        _same_length(high=h, low=lo, close=c)
        p = _period("period", period)
        with np.errstate(all="ignore"):
            tr = np.full(len(c), np.nan)
            prev = c[:-1]
            tr[1:] = np.maximum(np.maximum(h[1:] - lo[1:], np.abs(h[1:] - prev)), np.abs(lo[1:] - prev))
            return _recursive(tr, p, 1.0 / p, p - 1)

    @staticmethod
    def volume_zscore(volume: npt.ArrayLike, period: int = 20) -> FloatArray:
        """``(volume - SMA)/std`` over the ``period`` candles ending at t (population std, current
        candle included); warm-up ``period - 1``; 0 where the window is flat."""
        v = _series("volume", volume)
        p = _period("period", period, minimum=2)
        with np.errstate(all="ignore"):
            mean, m2 = _rolling_moments(v, p)
            std = np.sqrt(m2 / p)
            return np.where(std == 0.0, 0.0, (v - mean) / std)

    @staticmethod
    def log_returns(close: npt.ArrayLike, periods: int = 1) -> FloatArray:
        """``ln(close_t / close_{t-periods})`` as a fraction; warm-up ``periods``; NaN for
        non-positive prices."""
        c = _series("close", close)
        p = _period("periods", periods)
        out = np.full(len(c), np.nan)
        if len(c) > p:
            with np.errstate(all="ignore"):
                out[p:] = np.log(c[p:] / c[:-p])
        out[~np.isfinite(out)] = np.nan
        return out

    @staticmethod
    def rolling_volatility(close: npt.ArrayLike, period: int = 24) -> FloatArray:
        """Population std of the last ``period`` one-candle log returns (a fraction); warm-up
        ``period`` (TA-Lib ``STDDEV`` of the log returns)."""
        c = _series("close", close)
        p = _period("period", period, minimum=2)
        with np.errstate(all="ignore"):
            rets = FastIndicators.log_returns(c, 1)
            return np.sqrt(_rolling_moments(rets, p)[1] / p)
