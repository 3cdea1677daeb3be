"""Pure computation for qtrain: numpy in, numpy or frozen dataclasses out. No I/O, no Celery.

Nothing in this package imports from ``worker`` or ``producer``.
"""

HOLD, BUY, SELL = 0, 1, 2
ACTIONS: tuple[str, ...] = ("HOLD", "BUY", "SELL")
