"""The rich Console that qtrain prints its tables on.

At a terminal rich fits a table to the window. Anywhere else (a log file, a pipe, CI) rich assumes
80 columns and cuts what does not fit (``BTC-U…``, ``skipp…``). There is no window to fit there, so
the console is ``LOG_WIDTH`` columns wide and every symbol, number and column name prints whole:
tables do not expand to the console's width, so they keep their natural width, and plain lines
are not padded.
"""

from __future__ import annotations

from rich.console import Console

LOG_WIDTH = 1000
"""Columns of the console when the output is not a terminal (wider than any of qtrain's tables)."""


def make_console(*, stderr: bool = False, quiet: bool = False) -> Console:
    """A Console on stdout (or stderr): the terminal's width at a terminal, else ``LOG_WIDTH``."""
    out = Console(stderr=stderr, quiet=quiet)
    if out.is_terminal:
        return out
    return Console(stderr=stderr, quiet=quiet, width=LOG_WIDTH)
