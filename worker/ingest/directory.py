"""Import of a whole directory (e.g. freqtrade's ``user_data/data/binance``): which files, one table.

Every file under the directory (recursively, hidden ones excepted) with a candle-file ending
(.csv, .zip, .feather, .json, .json.gz, .parquet) is imported; other files are counted as ignored.
Skipped, with the reason shown: .feather/.json/.parquet files not named ``<PAIR>-<timeframe>``
(e.g. freqtrade's ``pairs.json``), freqtrade trades files, funding-rate / premium-index files, futures /
mark / index candles (import such a file alone with ``--symbol``), and, when ``--symbol`` or
``--timeframe`` is given, files whose name names another symbol or timeframe (a file whose name
names none takes the given values). All files go in one transaction: a file that cannot be read
stops the import with one line naming it and nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from worker.errors import BadInput
from worker.ingest.readers.names import identify
from worker.ingest.report import ImportReport
from worker.symbols import normalize_symbol

ENDINGS = (".csv", ".zip", ".feather", ".json", ".json.gz", ".parquet")
#: The columns of ``summary_rows`` (``--json`` has every count).
COLUMNS = ("file", "format", "symbol", "tf", "candles", "new", "notes")
_FREQTRADE_ENDINGS = (".feather", ".json", ".json.gz", ".parquet")


@dataclass(frozen=True)
class PlannedFile:
    """A file to import, with the symbol/timeframe to pass (None: the file name says it)."""

    path: Path
    symbol: str | None
    timeframe: str | None


@dataclass
class DirectoryImport:
    """The files of a directory import, the ones skipped (and why), and the reports once imported."""

    directory: str
    files: list[PlannedFile] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    ignored: int = 0
    reports: list[ImportReport] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-able dict (``--json``)."""
        return {
            "directory": self.directory,
            "files": [r.to_dict() for r in self.reports],
            "skipped": [{"file": f, "reason": why} for f, why in self.skipped],
            "ignored": self.ignored,
            "inserted": sum(r.inserted or 0 for r in self.reports),
        }


def _skip_reason(path: Path, symbol: str | None, timeframe: str | None) -> str | None:
    """Why a candle-looking file is not imported, or None."""
    name = path.name
    if "-trades." in name:
        return "trades, not candles"
    hint = identify(name)
    if name.lower().endswith(_FREQTRADE_ENDINGS) and hint.source != "freqtrade":
        return "name is not <PAIR>-<timeframe>"
    if hint.not_prices:
        return f"{hint.candle_type}: not prices"
    if hint.other_market:
        return f"{hint.candle_type}: import alone with --symbol"
    if symbol and hint.symbol and hint.symbol != symbol:
        return f"name says {hint.symbol}, --symbol is {symbol}"
    if timeframe and hint.timeframe and hint.timeframe != timeframe:
        return f"name says {hint.timeframe}, --timeframe is {timeframe}"
    return None


def plan(directory: str, symbol: str | None, timeframe: str | None) -> DirectoryImport:
    """Which files under ``directory`` to import and which to skip; BadInput when none qualifies."""
    root = Path(directory)
    given = normalize_symbol(symbol) if symbol else None
    out = DirectoryImport(directory)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.name.lower().endswith(ENDINGS):
            out.ignored += 1
            continue
        why = _skip_reason(path, given, timeframe)
        if why:
            out.skipped.append((str(rel), why))
            continue
        hint = identify(path.name)
        out.files.append(
            PlannedFile(path, None if hint.symbol else given, None if hint.timeframe else timeframe)
        )
    if not out.files:
        found = f"{len(out.skipped)} skipped, {out.ignored} other files"
        raise BadInput(
            f"{directory}: directory holds no candle files to import ({', '.join(ENDINGS)}; {found})"
        )
    return out


def _notes(r: ImportReport) -> str:
    parts = []
    if r.rejected_total:
        parts.append(f"{r.rejected_total} rejected")
    dups = r.duplicates_identical + r.duplicates_conflicting
    if dups:
        parts.append(f"{dups} duplicates")
    if r.gaps:
        parts.append(f"{r.gaps} gaps")
    if r.volume_missing:
        parts.append("no volume (NULL)")
    return ", ".join(parts) or "ok"


def summary_rows(result: DirectoryImport) -> list[list[str]]:
    """The cells of the summary (``COLUMNS``): a row per file imported or skipped, then the totals."""
    rows = []
    root = Path(result.directory)
    for r in result.reports:
        rel = str(Path(r.source).relative_to(root))
        rows.append([rel, r.format, r.symbol, r.timeframe, str(r.candles), str(r.inserted), _notes(r)])
    for f, why in result.skipped:
        rows.append([f, "", "", "", "", "", f"skipped: {why}"])
    total = sum(r.inserted or 0 for r in result.reports)
    candles = sum(r.candles for r in result.reports)
    others = f"{len(result.skipped)} skipped, {result.ignored} other files ignored"
    rows.append([f"{len(result.reports)} files", "", "", "", str(candles), str(total), others])
    return rows
