"""The files of an import: records read from CSV or JSON Lines (plain or gzip), rejects written.

A reader never holds more than the record it is on, so a 10-million-line file is read in
constant memory. Each record carries the physical line number it starts on (the header is
line 1 of a CSV file) and its original text, so that a rejected record can be reported and
written out exactly as it was in the file.

The rejects file belongs to the latest run: a file left at its path by an earlier run is
removed when the import starts, and a new one is created only when a record is rejected.
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple, cast

import orjson

FileFormat = Literal["csv", "jsonl"]
FORMATS: tuple[FileFormat, ...] = ("csv", "jsonl")
_EXTENSIONS: dict[str, FileFormat] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
_READ_BUFFER = 1 << 20


class ImportConfigError(ValueError):
    """The file or the options cannot work (the CLI exits with code 2).

    Raised before any record is stored, except when gzip data turns out damaged part way
    through: the chunks before it stay committed.
    """


class Record(NamedTuple):
    """One record of an import file: its data, or why it could not be read.

    `data` is the list of cell values (in `Source.columns` order) for CSV, the object for
    JSON Lines, and None when the record could not be read.
    """

    line: int  # the physical line it starts on (1-based)
    raw: str  # its original text, line breaks included
    data: list[str] | dict[str, Any] | None
    error: str | None  # why the record could not be read; None when it could


@dataclass
class Source:
    """An open import file: its format, its column names and its records, in file order.

    For JSON Lines, `columns` are the first object's keys, and `seen_keys` collects every key
    of every object as the records are consumed.
    """

    path: Path
    format: FileFormat
    columns: list[str]
    records: Iterator[Record]
    lines: LineSource
    seen_keys: set[str] = field(default_factory=set)

    def bytes_read(self) -> int:
        """How far into the file (compressed bytes for gzip) reading has got: for progress."""
        return self.lines.bytes_read()


class LineSource:
    """The physical lines of a binary stream as text, counted, with the current record's lines.

    Lines are split on b"\\n" only and decoded one by one, so that a line that is not UTF-8
    rejects that record instead of stopping the import.
    """

    def __init__(self, stream: IO[bytes], raw: IO[bytes]) -> None:
        self._stream = stream
        self._raw = raw
        self.number = 0
        self._pending: list[str] = []
        self._encoding_error: str | None = None

    def __iter__(self) -> Iterator[str]:
        pending = self._pending
        for data in self._stream:
            self.number += 1
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                text = data.decode("utf-8", errors="replace")
                self._encoding_error = f"line {self.number} is not valid UTF-8 (byte {exc.start})"
            pending.append(text)
            yield text

    def take(self) -> tuple[int, str, str | None]:
        """The start line, text and encoding error of the lines read since the last call."""
        pending = self._pending
        start = self.number - len(pending) + 1
        text = pending[0] if len(pending) == 1 else "".join(pending)
        error, self._encoding_error = self._encoding_error, None
        pending.clear()
        return start, text, error

    def bytes_read(self) -> int:
        return self._raw.tell()


def detect_format(path: Path, explicit: str | None = None) -> FileFormat:
    """The format named by --format, else by the file name (a .gz suffix is looked through)."""
    if explicit is not None:
        if explicit not in FORMATS:
            raise ImportConfigError(f"unknown format {explicit!r}; expected csv or jsonl")
        return cast(FileFormat, explicit)
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    found = _EXTENSIONS.get(suffixes[-1]) if suffixes else None
    if found is None:
        raise ImportConfigError(
            f"cannot tell the format of {path.name} from its name; pass --format csv or jsonl"
        )
    return found


def is_gzip(path: Path) -> bool:
    """True when the name ends with .gz or the file starts with gzip's magic bytes."""
    if path.name.lower().endswith(".gz"):
        return True
    with path.open("rb") as fh:
        return fh.read(2) == _GZIP_MAGIC


@contextmanager
def open_source(
    path: Path, file_format: str | None = None, *, delimiter: str = ","
) -> Iterator[Source]:
    """Open an import file for reading records; raises ImportConfigError if it cannot work."""
    path = Path(path)
    fmt = detect_format(path, file_format)
    with ExitStack() as stack:
        raw = stack.enter_context(path.open("rb"))
        try:
            yield _open_records(path, fmt, raw, stack, delimiter)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise ImportConfigError(f"{path.name}: the gzip data is damaged ({exc})") from None


def _open_records(
    path: Path, fmt: FileFormat, raw: IO[bytes], stack: ExitStack, delimiter: str
) -> Source:
    stream: IO[bytes] = raw
    if is_gzip(path):
        gz = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
        stream = cast(IO[bytes], io.BufferedReader(gz, _READ_BUFFER))
    _skip_bom(stream)
    lines = LineSource(stream, raw)
    if fmt == "csv":
        return _csv_source(path, lines, delimiter)
    return _jsonl_source(path, lines)


def _skip_bom(stream: IO[bytes]) -> None:
    peek = getattr(stream, "peek", None)
    if peek is not None and peek(3)[:3] == _BOM:
        stream.read(3)


def _csv_source(path: Path, lines: LineSource, delimiter: str) -> Source:
    # strict: a quote left open at the end of the file, or text after a closing quote, is
    # an error for that record rather than silently kept.
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    header = _read_header(path, reader, lines)
    return Source(path, "csv", header, _csv_records(reader, lines, header), lines)


def _read_header(path: Path, reader: Any, lines: LineSource) -> list[str]:
    """The first non-blank CSV record, as column names (stripped); it must name each once."""
    for row in reader:
        _, _, error = lines.take()
        if error is not None:
            raise ImportConfigError(f"{path.name}: the header {error}")
        if row:
            header = [name.strip() for name in row]
            repeated = sorted({name for name in header if header.count(name) > 1})
            if repeated:
                raise ImportConfigError(f"{path.name}: repeated column names: {repeated}")
            return header
    raise ImportConfigError(f"{path.name} is empty (no header line)")


def _csv_records(reader: Any, lines: LineSource, header: list[str]) -> Iterator[Record]:
    width = len(header)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            line, text, _ = lines.take()
            yield Record(line, text, None, f"CSV: {exc}")
            continue
        line, text, error = lines.take()
        if error is not None:
            yield Record(line, text, None, error)
        elif len(row) == width:
            yield Record(line, text, row, None)
        elif row:  # a blank line is no record
            yield Record(line, text, None, f"expected {width} columns, found {len(row)}")


def _jsonl_source(path: Path, lines: LineSource) -> Source:
    """JSON Lines: the columns are the first object's keys (read ahead, then replayed)."""
    records = _jsonl_records(lines)
    ahead: list[Record] = []
    for record in records:
        ahead.append(record)
        if record.data is not None:
            break
        if len(ahead) == 1 and record.raw.lstrip().startswith("["):
            raise ImportConfigError(
                f"{path.name} looks like a JSON array; expected JSON Lines (one object per line)"
            )
    first = ahead[-1].data if ahead and isinstance(ahead[-1].data, dict) else {}
    source = Source(path, "jsonl", list(first), iter(()), lines)
    source.records = _track_keys(chain(ahead, records), source.seen_keys)
    return source


def _jsonl_records(lines: LineSource) -> Iterator[Record]:
    for text in lines:
        line, raw, error = lines.take()
        if error is not None:
            yield Record(line, raw, None, error)
            continue
        if not text.strip():
            continue
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            yield Record(line, raw, None, f"invalid JSON: {exc}")
            continue
        if isinstance(data, dict):
            yield Record(line, raw, data, None)
        else:
            yield Record(line, raw, None, f"expected a JSON object, found {type(data).__name__}")


def _track_keys(records: Iterator[Record], seen: set[str]) -> Iterator[Record]:
    """Pass records through, noting every key seen in `seen`."""
    for record in records:
        if record.data is not None:
            seen.update(record.data)
        yield record


class RejectsFile:
    """Rejected records as JSON Lines `{"line": N, "error": "...", "raw": "<text>"}`.

    Rejects are collected per chunk and written in line order by `flush`; the file is
    created on the first one (see the module docstring).
    """

    def __init__(self, path: Path, *, sample_size: int = 5) -> None:
        self.path = path
        self.count = 0
        self.sample: list[tuple[int, str]] = []  # the first few (line, error), for stderr
        self._sample_size = sample_size
        self._pending: list[tuple[int, str, str]] = []
        self._fh: IO[bytes] | None = None
        path.unlink(missing_ok=True)

    def add(self, record: Record, error: str) -> None:
        self._pending.append((record.line, error, record.raw.rstrip("\r\n")))

    def flush(self) -> None:
        if not self._pending:
            return
        if self._fh is None:
            self._fh = self.path.open("wb")
        self._pending.sort(key=lambda reject: reject[0])
        for line, error, raw in self._pending:
            self._fh.write(orjson.dumps({"line": line, "error": error, "raw": raw}) + b"\n")
            if len(self.sample) < self._sample_size:
                self.sample.append((line, error))
        self.count += len(self._pending)
        self._pending.clear()
        self._fh.flush()

    def __enter__(self) -> RejectsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()
        if self._fh is not None:
            self._fh.close()


def default_rejects_path(path: Path) -> Path:
    """FILE.rejects.jsonl beside the input."""
    return path.with_name(path.name + ".rejects.jsonl")


def rejects_path_for(path: Path, chosen: Path | None) -> Path:
    """The rejects file to use; never the input itself (it is removed at start)."""
    rejects = Path(chosen) if chosen is not None else default_rejects_path(path)
    if rejects.resolve() == path.resolve():
        raise ImportConfigError("the rejects file must not be the input file")
    return rejects
