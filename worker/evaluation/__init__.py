"""Judging Q-tables on history: backtests, walk-forward folds and the scoreboard."""
