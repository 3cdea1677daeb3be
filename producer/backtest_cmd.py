"""``qtrain backtest`` and ``qtrain check-lookahead``."""

from producer.notbuilt import not_built

COMMANDS = [
    not_built("backtest", "issue 5", "Backtest a Q-table against baselines."),
    not_built("check-lookahead", "issue 5", "Check features and decisions for look-ahead."),
]
