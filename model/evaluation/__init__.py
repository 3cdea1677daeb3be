"""Judging policies on history: backtest, metrics, baselines, walk-forward folds and the scoreboard."""
