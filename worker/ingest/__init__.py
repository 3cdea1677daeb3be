"""Candles coming in: candle files (readers, row checks, the defect report, directories), synthetic ones."""
