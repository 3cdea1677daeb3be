"""The HTML pages: backtest, paper and walk-forward reports, pure rendering (Bokeh in one template)."""
