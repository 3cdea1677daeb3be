-- A candle's volume may be unknown: older CryptoDataDownload exports have no volume column.
-- NULL means "not in the source" (never 0, which would be a real, quiet hour); the importer
-- reports it, load_candles returns NaN, and training refuses a symbol with NULL volume
-- (see worker.candles_store.count_missing_volume).
ALTER TABLE btc.candles ALTER COLUMN volume DROP NOT NULL;
