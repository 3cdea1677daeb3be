"""Candle series in and out: the windows a batch analyses, defects importers flag, synthetic candles."""
