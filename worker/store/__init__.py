"""PostgreSQL rows: connections, migrations, batches, windows, analyses, versions, candles."""
