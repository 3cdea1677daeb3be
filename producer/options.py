"""Parsing of the CLI's shared option values (dates, ranges, symbol lists, output paths) into
one-line errors."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from worker.errors import BadInput
from worker.symbols import normalize_symbol


def parse_date(value: str | None, *, flag: str) -> int | None:
    """``2024-01-01`` or ISO 8601 (UTC unless it says otherwise) -> epoch seconds; None stays None."""
    if value is None or value == "":
        return None
    text = value.strip().replace("Z", "+00:00")
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(f"{flag} {value!r} is not a date: use YYYY-MM-DD or ISO 8601") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


def parse_range(since: str | None, until: str | None) -> tuple[int | None, int | None]:
    """``--since`` and ``--until`` as epoch seconds; a one-line ``BadInput`` when the range is
    empty or reversed (``--until`` is exclusive, so it must come after ``--since``)."""
    start, stop = parse_date(since, flag="--since"), parse_date(until, flag="--until")
    if start is not None and stop is not None and stop <= start:
        word = "the same moment as" if stop == start else "after"
        raise BadInput(
            f"--since {since} is {word} --until {until}: the range is empty (--until is exclusive);"
            " swap them or widen the range"
        )
    return start, stop


def parse_symbols(value: str) -> tuple[str, ...]:
    """``BTC-USDT,eth/usdt`` -> ``("BTC-USDT", "ETH-USDT")``, de-duplicated, order kept."""
    out: list[str] = []
    for part in value.split(","):
        if part.strip():
            sym = normalize_symbol(part.strip())
            if sym not in out:
                out.append(sym)
    if not out:
        raise BadInput("--symbols is empty: give e.g. --symbols BTC-USDT,ETH-USDT")
    return tuple(out)


def output_path(value: str, *, flag: str, directory_name: str | None = None) -> Path:
    """The file an output option (``--out``, ``--report``) names, checked before any work is done:
    its directory must exist and be writable; qtrain never creates directories for it. An existing
    directory is refused, or, when ``directory_name`` is given, the file of that name inside it.
    A one-line ``BadInput`` otherwise; nothing is created here."""
    path = Path(value).expanduser()
    if not value.strip():
        raise BadInput(f"{flag} is empty: give a file name")
    if path.is_dir():
        if directory_name is None:
            raise BadInput(f"{flag} {value} is a directory: give a file name (e.g. {path / 'report.html'})")
        path = path / directory_name
    parent = path.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise BadInput(f"{flag} {value}: directory {parent} {what}; create it first or choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInput(f"{flag} {value}: cannot write in {parent} (permission denied)")
    if path.exists() and not path.is_file():
        raise BadInput(f"{flag} {value} exists and is not a regular file")
    return path
