"""One symbol, pooled with the other stored symbols or strictly alone (issue 28, item 2).

    python bench/one_symbol_pool.py [--json FILE]      # DATABASE_URL: a database holding the candles

Runs ``qtrain evaluate``'s scoreboard (``worker.evaluation.scoreboard.evaluate``; heuristic
analyst, 182-day train, 91-day test, fee 0.1%, 50 random policies, the default recipe ``pooled``)
once per universe symbol, that symbol alone in the call, twice: with the default pool (every other
symbol stored at the same timeframe that covers the fold's training range; pooled from its
training candles only, unshaped) and with ``--pool none`` (strictly alone). The measurement
database holds what the README's scoreboards read: BTC-USDT, ETH-USDT and the 8 pairs of
``../shared/data/universe`` (1h), so a universe pair's stored others are the 7 other universe pairs
and, where they cover the training range, BTC-USDT and ETH-USDT.

RULE (fixed and committed before the first run; the git history has it before any result):

* Folds: every fold of the 8 universe symbols (CELR, DASH, EOS, ETC, ONE, QTUM, XMR, ZEC; the same
  24 folds for both behaviours). Policy scored: ``qtable`` (the default recipe's table).
* The winner is the behaviour with MORE folds (of 24) whose Sharpe is above the fold's random
  median. Tie: the higher median Sharpe over the 24 folds. Still tied: pooling with the stored
  others (the issue's proposal).
* The winner is the default for a batch, or an evaluate call, of one symbol; the other stays
  reachable with ``--pool``. Reported, not used to decide: folds above buy-and-hold, closed trades
  a fold, median exposure, and the same two runs on BTC-USDT and ETH-USDT.
* Caveat written before: the ``pooled`` parameters were chosen (issue 22) on folds that include
  CELR, EOS, ONE and XMR, pooled with each other; nothing is re-tuned here.
"""
