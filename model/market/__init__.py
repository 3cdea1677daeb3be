"""Candle series cut, checked and made up: the windows a batch analyses, defects, synthetic candles."""
