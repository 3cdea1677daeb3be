"""The agent on live data: the ensemble's signal and paper trading (never real orders)."""
