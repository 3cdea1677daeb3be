"""Pure computation for qtrain: numpy in, numpy or frozen dataclasses out. No I/O, no Celery.

On top, what every room reads: the actions (below), the candle series (``candles``), the indicators
and the feature set (``indicators``, ``features``). The rooms, lowest first: ``market`` (windows,
defects, synthetic candles) and ``analyst`` (prompt, answer, rules, heuristic), then ``learning``
(states, shaping, the training recipes), ``trading`` (signals, ensemble, the run-time decision) and
``evaluation`` (backtest, metrics, policies, folds, controls, scoreboard). A room imports from the
top and from rooms below it only (``tests/test_layering.py``). Nothing in this package imports from
``worker`` or ``producer``.
"""

HOLD, BUY, SELL = 0, 1, 2
ACTIONS: tuple[str, ...] = ("HOLD", "BUY", "SELL")
