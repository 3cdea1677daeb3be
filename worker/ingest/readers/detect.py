"""Pick a file's reader by content (then name), after unwrapping a ``.zip`` or ``.gz`` container."""

from __future__ import annotations

import gzip
import io
import zipfile

from worker.errors import BadInput
from worker.ingest.readers import binance, cryptodatadownload, freqtrade, plain, text
from worker.ingest.readers.base import Reader, Source

#: Readers in detection order: binary/JSON first, then the CSV layouts from most to least specific.
READERS: tuple[Reader, ...] = (freqtrade, binance, cryptodatadownload, plain)
FORMATS: tuple[str, ...] = tuple(r.FORMAT for r in READERS)
ZIP_MAGIC = b"PK\x03\x04"
MAX_UNPACKED = 2 * 1024**3


def open_source(data: bytes, name: str, label: str) -> Source:
    """``Source`` of a file's bytes; a zip holding one CSV and a ``.gz`` file are unpacked first."""
    if data.startswith(ZIP_MAGIC):
        return _unzip(data, label)
    if name.lower().endswith(".gz") and data[:2] == b"\x1f\x8b":
        try:
            return Source(gzip.decompress(data), name[:-3], label)
        except (OSError, EOFError) as exc:
            raise BadInput(f"{label}: broken gzip file ({exc})") from None
    return Source(data, name, label)


def _unzip(data: bytes, label: str) -> Source:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            members = [i for i in zf.infolist() if not i.is_dir() and not i.filename.startswith("__MACOSX")]
            if len(members) != 1:
                names = ", ".join(i.filename for i in members[:5]) or "nothing"
                raise BadInput(f"{label}: zip holds {len(members)} files ({names}); expected one kline CSV")
            member = members[0]
            if member.file_size > MAX_UNPACKED:
                raise BadInput(
                    f"{label}: {member.filename} unpacks to {member.file_size} bytes (limit {MAX_UNPACKED})"
                )
            inner = zf.read(member)
    except zipfile.BadZipFile as exc:
        raise BadInput(f"{label}: broken zip file ({exc})") from None
    return Source(inner, member.filename.rsplit("/", 1)[-1], f"{label}:{member.filename}")


def reader_for(fmt: str) -> Reader:
    """The reader module of format name ``fmt``; BadInput listing the names otherwise."""
    for r in READERS:
        if r.FORMAT == fmt:
            return r
    raise BadInput(f"unknown --format {fmt!r}: use one of {', '.join(FORMATS)}")


def detect(src: Source, fmt: str | None = None) -> Reader:
    """The reader for ``src``: ``fmt`` when given, else the first whose ``sniff`` accepts it."""
    if fmt:
        return reader_for(fmt)
    for r in READERS:
        if r.sniff(src):
            return r
    src.text()  # empty, binary or non-UTF-8 input: its own one-line message
    first = text.first_lines(src, 1)[0]
    names = text.header_cells(first)
    if names and text.is_number(names[0]):
        raise BadInput(
            f"{src.label}: no header and {len(names)} columns: expected a Binance kline CSV (12 columns) "
            "or a header timestamp,open,high,low,close,volume"
        )
    raise BadInput(
        f"{src.label}: unrecognised header {first.strip()[:80]!r}: expected CryptoDataDownload "
        "(unix,date,symbol,open,...), Binance kline (12 columns), freqtrade (.feather/.json) "
        "or timestamp,open,high,low,close,volume"
    )
