-- Why a batch failed (a reducer that could not run), shown by `qtrain status`.
ALTER TABLE btc.batches ADD COLUMN error text;
