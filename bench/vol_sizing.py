"""Volatility position sizing for the pooled default (issue 28, item 4): a smaller long position when
recent volatility is high, within the same HOLD/BUY/SELL decisions and long-only spot.

    python bench/vol_sizing.py [--json FILE]

The same folds, analyses and pooled tables as ``qtrain evaluate --analyst heuristic`` (182-day train,
91-day test; ``bench/pooled_research.py``'s loading, the CSVs of ``../shared/data`` read through the
importer's parser): BTC-USDT with ETH-USDT pooled (26 folds), the 8 universe pairs pooled (24 folds).

RULE (fixed and committed before the first run; nothing below is tuned after it):

* Sizing: at each decision candle t (its close), the size is ``s_t = clip(sig_ref / sig_t, 0.25,
  1)``: ``sig_t`` the std of the last 168 hourly log returns up to close t (one week), ``sig_ref``
  the median of ``sig`` over the fold's TRAINING candles of that symbol (known when the table is
  trained). An entry buys ``s_t`` of equity; while long, the held fraction is reset to ``s_t`` when
  they differ by more than 0.2 (a band against churn). Exits as the table decides. Fee 0.1% a
  side on every traded notional, rebalances included.
* One simulator for every policy compared (the decision at close t is held over the return from
  close t to close t+1; fees on each change of the held fraction; Sharpe of the hourly equity
  returns): the unsized table (fraction 0/1), the sized table, buy-and-hold (1 from the first
  test candle) and the median of 50 seeded random policies (``model.policies.random_policy``,
  seeds 0-49, as the scoreboard's). So every comparison is within the same accounting.
* Kept (and then carried into the backtest, the paper trader and ``signal`` with a parity test)
  only if, on BOTH sets, the sized table is above buy-and-hold's Sharpe in MORE folds than the
  unsized table AND above the random median in AT LEAST as many folds. Otherwise it is not kept,
  and the README says so with the numbers.
"""
