"""The report of one file's import: what happened to each row and each kind of defect."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

NO_VOLUME = "not in file: stored NULL (training on this symbol is refused)"


@dataclass
class ImportReport:
    """What the import did with each row and each kind of defect (``to_dict`` for ``--json``)."""

    source: str
    format: str
    symbol: str
    timeframe: str
    on_conflict: str
    symbol_from: str = ""
    timeframe_from: str = ""
    candle_type: str = ""
    volume_missing: bool = False
    rows_read: int = 0
    blank_lines: int = 0
    order: str = ""
    ts_units: dict[str, int] = field(default_factory=dict)
    null_optional: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    rejected_examples: list[str] = field(default_factory=list)
    duplicate_timestamps: int = 0
    duplicates_identical: int = 0
    duplicates_conflicting: int = 0
    candles: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    gaps: int = 0
    longest_gap: int = 0
    longest_gap_start: int | None = None
    outliers_flagged: int = 0
    outlier_examples: list[int] = field(default_factory=list)
    inserted: int | None = None
    already_present: int | None = None
    already_present_differing: int | None = None
    seconds_parse: float | None = None
    seconds_insert: float | None = None

    @property
    def rejected_total(self) -> int:
        """Rows rejected for any reason."""
        return sum(self.rejected.values())

    def accounted(self) -> bool:
        """True when every row read is a candle, a resolved duplicate, or a rejection."""
        dups = self.duplicates_identical + self.duplicates_conflicting
        ok = self.rows_read == self.candles + dups + self.rejected_total
        if self.inserted is not None:
            ok = ok and self.candles == self.inserted + (self.already_present or 0)
        return ok

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-able dict of the report."""
        out = asdict(self)
        out["rejected_total"] = self.rejected_total
        out["accounted"] = self.accounted()
        return out
