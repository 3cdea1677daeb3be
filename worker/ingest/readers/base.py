"""What every reader takes (``Source``) and returns (``Columns``), and the ``Reader`` interface."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from worker.errors import BadInput

#: Candle fields a reader may return; the first five are required unless ``volume`` is absent.
PRICE_FIELDS = ("open", "high", "low", "close")
OPTIONAL_FIELDS = ("quote_volume", "trades", "taker_buy_volume")


@dataclass(frozen=True)
class Source:
    """One input file: its bytes, the name used for format and symbol hints, and a label for messages."""

    data: bytes
    name: str
    label: str

    def text(self) -> str:
        """UTF-8 text of the file (BOM dropped); BadInput for empty, binary or non-UTF-8 input."""
        data = self.data
        if not data.strip():
            raise BadInput(f"{self.label}: file is empty")
        if b"\x00" in data[:65536]:
            raise BadInput(f"{self.label}: binary file (NUL bytes), expected a CSV text file")
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            bad = data[exc.start : exc.start + 1].hex()
            raise BadInput(
                f"{self.label}: not UTF-8 text (byte 0x{bad} at offset {exc.start}); re-save as UTF-8"
            ) from None


@dataclass
class Columns:
    """A file's rows as float columns, before validation.

    ``values`` maps a field to float64 (NaN = NULL cell); a field the file does not have is absent
    (``volume`` may be: it is then stored NULL). ``bad`` marks cells present but not a number.
    ``reason`` holds row defects found while reading (wrong field count, unparseable timestamp),
    '' elsewhere. ``ts`` is epoch seconds (NaN where ``reason`` is set), ``ts_unit`` how each was
    written. ``row_no`` numbers rows for messages (``row_word`` 'line' for text, 'row' otherwise).
    """

    fmt: str
    ts: np.ndarray
    ts_unit: np.ndarray
    reason: np.ndarray
    values: dict[str, np.ndarray]
    bad: dict[str, np.ndarray]
    row_no: np.ndarray
    row_word: str = "line"
    blank_lines: int = 0
    symbol_cells: list[str] | None = None
    content_symbol: str | None = None
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ts)


class Reader(Protocol):
    """A format module: ``FORMAT`` (its name for ``--format``), ``sniff`` and ``read``."""

    FORMAT: str

    def sniff(self, src: Source) -> bool:
        """True when ``src`` looks like this format (by content first, then name)."""
        ...

    def read(self, src: Source, symbol: str | None) -> Columns:
        """The rows of ``src`` as ``Columns``; BadInput with one line when the file is unusable."""
        ...
