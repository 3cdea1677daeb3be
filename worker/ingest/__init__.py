"""Candles coming in: file import (readers, row checks, the report, whole directories) into the store."""
