"""The ``qtrain`` command line: candles, training batches, status, backtests, models, demo."""
