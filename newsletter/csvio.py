"""CSV import and export of subscribers.

Import is forgiving about the file and strict about each row:

* the header decides the columns: ``email`` (also ``e-mail``, ``Email Address``),
  optional ``name``, ``consent``, ``source`` and ``lang`` (the reader's language, a tag such as
  ``zh-Hans``: which edition they get); other columns are ignored;
* UTF-8 (with or without a BOM) is expected; a file that is not UTF-8 is read as
  Windows-1252, with a warning in the report, since that is what Excel writes;
  a file that is neither is refused as a whole;
* comma, semicolon and tab separated files are all accepted (decided from the header);
* every bad row is reported with its physical line number (header = line 1) and why,
  and the good rows are still imported — all in ONE transaction, so an import
  either lands completely or not at all;
* a row with more (non-empty) cells than the header — an unquoted comma in a name —
  is a bad row, not a truncated name; a quote that never closes, or one that swallows
  whole rows into one cell, refuses the file, naming the line where the quote opened;
* the file is streamed in chunks of rows (memory stays flat with its size) into a
  temporary table, without locking the database; one short write transaction then
  applies it. The report keeps the first :data:`DETAIL_LIMIT` bad and skipped rows,
  counting the rest;
* suppressed addresses (unsubscribed, bounced, complained) are never reactivated
  unless ``resubscribe=True``; they are reported as ``suppressed: <status>``. A complained
  address is never reactivated at all. An unconfirmed web signup (``pending``) is activated,
  as :meth:`SubscriberStore.add` does: the editor's list vouches for consent.

Export writes ``email,name,status,created_at,changed_at,source,consent,lang``. Free-text
cells that a spreadsheet would run as a formula (starting with ``= + - @``) are
prefixed with ``'``, the address too (``=1+2@example.org`` is a valid address); import
strips that prefix again, so export → import round-trips.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, NamedTuple, Sequence, TextIO

from newsletter.addresses import check_header, clean_text
from newsletter.bulk_addresses import AddressValidator
from newsletter.errors import InputError
from newsletter.lang import optional_tag
from newsletter.store import (ACTIVE, COMPLAINED, PENDING, REACTIVATE_SQL, SUPPRESSED, SubscriberStore, _SQL_PARAM_CHUNK,
                              reactivation, utcnow)

EXPORT_COLUMNS = ("email", "name", "status", "created_at", "changed_at", "source", "consent", "lang")

_ALIASES = {
    "email": {"email", "e mail", "email address", "e mail address", "mail"},
    "name": {"name", "full name", "fullname", "display name"},
    "consent": {"consent"},
    "source": {"source"},
    "lang": {"lang", "language", "locale"},
}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_BINARY_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f]")
_LOOKS_LIKE_ADDRESS = re.compile(r"[^\s@\"]+@[^\s@\"]+\.[^\s@\"]+")
DETAIL_LIMIT = 1000  # bad and skipped rows kept with their line; the rest are only counted
_READ_CHUNK = 1 << 20  # bytes per read while checking the encoding
_MAX_LINE = 1 << 20  # characters on one physical line; a longer one is not a subscriber list
_ROW_CHUNK = _SQL_PARAM_CHUNK  # rows validated, then written, per step
_TEXT_COLUMNS = ("name", "source", "consent")

Progress = Callable[[int, int, int], None]  # (rows read, bytes read, file size)


@dataclass
class ImportReport:
    """What an import did. Line numbers are physical lines in the file; the header is line 1."""

    path: str
    encoding: str = "utf-8"
    added: int = 0
    updated: int = 0
    skipped: list[tuple[int, str, str]] = field(default_factory=list)  # (line, email, reason), the first ones
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line, reason), the first ones
    warnings: list[str] = field(default_factory=list)
    skipped_count: int = 0  # all of them, also those beyond DETAIL_LIMIT
    error_count: int = 0

    @property
    def ok(self) -> bool:
        return not self.error_count

    def skip(self, line: int, email: str, reason: str) -> None:
        self.skipped_count += 1
        if len(self.skipped) < DETAIL_LIMIT:
            self.skipped.append((line, email, reason))

    def error(self, line: int, reason: str) -> None:
        self.error_count += 1
        if len(self.errors) < DETAIL_LIMIT:
            self.errors.append((line, reason))

    def summary(self) -> str:
        return (f"{self.path}: {self.added} added, {self.updated} updated, "
                f"{self.skipped_count} skipped, {self.error_count} error(s)")


class _Row(NamedTuple):
    """One checked row (a tuple: 100k of them are made per 100k-row import)."""

    line: int
    email: str
    name: str
    source: str
    consent: str
    lang: str = ""  # a checked language tag, "" when the file has none for the row


# ---- reading -----------------------------------------------------------------------
def _scan(fh: BinaryIO, encoding: str, path: Path) -> None:
    """Decode the whole file in chunks (raises UnicodeDecodeError) and refuse binary data."""
    decoder = codecs.getincrementaldecoder(encoding)()
    sample = ""
    while True:
        data = fh.read(_READ_CHUNK)
        text = decoder.decode(data, final=not data)
        if "\x00" in text:
            raise InputError("does not look like a CSV text file (binary data?)", path=path)
        if len(sample) < 65536:
            sample += text[:65536 - len(sample)]
        if not data:
            break
    if len(_BINARY_CONTROL.findall(sample)) > max(2, len(sample) // 100):
        raise InputError("does not look like a CSV text file (binary data?)", path=path)


def _encoding(path: Path, report: ImportReport) -> str:
    """The file's encoding, checked over the whole file before any row is read."""
    if path.exists() and not path.is_file():  # a FIFO or device would block the read, or never end
        raise InputError("not a regular file", path=path)
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
            fh.seek(0)
            if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                try:
                    _scan(fh, "utf-16", path)
                except UnicodeDecodeError:
                    raise InputError("starts with a UTF-16 byte-order mark but is not valid UTF-16",
                                     path=path) from None
                report.encoding = "utf-16"
                return "utf-16"
            try:
                _scan(fh, "utf-8-sig", path)
                report.encoding = "utf-8-sig" if head.startswith(codecs.BOM_UTF8) else "utf-8"
                return "utf-8-sig"
            except UnicodeDecodeError as exc:
                offset = fh.tell() - len(exc.object) + exc.start  # exc.object: this read plus any carry-over
                byte = exc.object[exc.start]
            fh.seek(0)
            try:
                _scan(fh, "cp1252", path)
            except UnicodeDecodeError:
                raise InputError(f"is neither UTF-8 nor Windows-1252 text (undecodable byte at offset "
                                 f"{offset}); save it as CSV UTF-8", path=path) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", path=path) from None
    report.encoding = "cp1252"
    report.warnings.append(f"{path}: not UTF-8 (byte {byte:#04x} at offset {offset}); "
                           "read as Windows-1252 (cp1252) — check that accented names look right")
    return "cp1252"


def _delimiter(first_line: str) -> str:
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _column_key(header: str) -> str:
    h = header.replace("\ufeff", "").strip().lower().replace("_", " ").replace("-", " ")
    return " ".join(h.split())


def _unformula(value: str) -> str:
    """Undo export's spreadsheet-formula guard: ``'=x`` → ``=x``."""
    if value[:1] == "'" and value[1:2] in _FORMULA_START:
        return value[1:]
    return value


def _guard_formula(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_START) else value


class _Lines:
    """Physical lines of a text file, bounded in length, remembering the current row's lines."""

    def __init__(self, fh: TextIO, path: Path):
        self.fh, self.path = fh, path
        self.count = 0  # physical lines read so far
        self.row: list[str] = []  # the lines of the row being read

    def __iter__(self) -> Iterator[str]:
        while True:
            line = self.fh.readline(_MAX_LINE)
            if not line:
                return
            self.count += 1
            if len(line) >= _MAX_LINE and not line.endswith(("\n", "\r")):
                raise InputError(f"a line longer than {_MAX_LINE} characters; not a subscriber list",
                                 path=self.path, line=self.count)
            self.row.append(line)
            yield line


def _columns(header: list[str], path: Path) -> dict[str, int]:
    columns: dict[str, int] = {}
    for index, raw in enumerate(header):
        key = _column_key(raw)
        for column, aliases in _ALIASES.items():
            if key in aliases and column not in columns:
                columns[column] = index
    if "email" not in columns:
        found = ", ".join(repr(h.strip()) for h in header if h.strip()) or "nothing"
        raise InputError(f"no 'email' column (found: {found})", path=path, line=1)
    return columns


def _check_quotes(row: list[str], raw: list[str], delimiter: str, start: int, path: Path) -> None:
    """Refuse a row whose quote never closes, or whose quoted cell swallowed whole rows.

    Either way readers were lost into one cell, so the file is refused rather than
    reported as one bad row. The error names the line where the quote opened.
    """
    end = start + len(raw) - 1
    try:
        next(csv.reader(raw, delimiter=delimiter, strict=True), None)
        unclosed = False
    except csv.Error as exc:
        unclosed = "end of data" in str(exc)
    for index, cell in enumerate(row):
        breaks = cell.count("\n") + cell.count("\r") - cell.count("\r\n")
        if not breaks:
            continue
        opened = start + sum(c.count("\n") + c.count("\r") - c.count("\r\n") for c in row[:index])
        if unclosed and index == len(row) - 1:
            raise InputError(f"a quote opened here never closes; it swallows lines {opened}-{end} into one "
                             "cell. Close or remove the quote; nothing was imported", path=path, line=opened)
        swallowed = [ln for ln in cell.splitlines()[1:]
                     if delimiter in ln and any(_LOOKS_LIKE_ADDRESS.fullmatch(c.strip()) for c in ln.split(delimiter))]
        if swallowed:
            raise InputError(f"a quoted cell opened here runs to line {opened + breaks} and holds whole rows "
                             f"(e.g. {swallowed[0][:60]!r}): an unbalanced quote? Nothing was imported",
                             path=path, line=opened)


@dataclass(frozen=True)
class _Reader:
    """The rows of one file: header decided, each row checked, bad ones reported."""

    lines: _Lines
    rows: Iterator[list[str]]
    columns: dict[str, int]
    width: int
    delimiter: str
    path: Path

    def cell(self, row: list[str], column: str) -> str:
        index = self.columns.get(column)
        return row[index] if index is not None and index < len(row) else ""

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        """(first physical line, cells) of every non-blank row."""
        while True:
            self.lines.row.clear()
            start = self.lines.count + 1
            try:
                row = next(self.rows)
            except StopIteration:
                return
            except csv.Error as exc:
                raise InputError(f"malformed CSV: {exc}; nothing was imported", path=self.path,
                                 line=self.lines.count) from None
            if len(self.lines.row) > 1:
                _check_quotes(row, self.lines.row, self.delimiter, start, self.path)
            if any(c.strip() for c in row):
                yield start, row


def _open_rows(fh: TextIO, path: Path) -> _Reader:
    lines = _Lines(fh, path)
    physical = iter(lines)
    first = next(physical, "")
    delimiter = _delimiter(first)
    rows = csv.reader(itertools.chain([first], physical), delimiter=delimiter)
    try:
        header = next(rows, None) or []
    except csv.Error as exc:
        raise InputError(f"malformed CSV header: {exc}", path=path, line=1) from None
    return _Reader(lines, rows, _columns(header, path), len(header), delimiter, path)


def _parse_row(reader: _Reader, line: int, row: list[str], report: ImportReport,
               addresses: AddressValidator, default_source: str) -> _Row | None:
    """One row checked and normalised, or None after reporting why it is bad."""
    if len(row) > reader.width and any(c.strip() for c in row[reader.width:]):
        where = "a comma" if reader.delimiter == "," else "a separator"
        report.error(line, f"{len(row)} cells but the header has {reader.width}: {where} inside a cell? "
                           "Put that cell in double quotes")
        return None
    raw_email = _unformula(reader.cell(row, "email").strip())
    if not raw_email:
        report.error(line, "empty email")
        return None
    try:
        email = addresses.normalise(raw_email)
        texts = [_unformula(reader.cell(row, column)) for column in _TEXT_COLUMNS]
        try:
            check_header("name", "".join(texts))  # one check for the three cells...
        except InputError:  # ...and, rarely, clean_text to say which cell and why (or that stripping cured it)
            texts = [clean_text(t, column) for t, column in zip(texts, _TEXT_COLUMNS)]
        name, source, consent = (t.strip() for t in texts)
        lang = optional_tag(reader.cell(row, "lang"), "lang")
    except InputError as exc:
        report.error(line, exc.message)
        return None
    return _Row(line, email, name, source or default_source, consent, lang)


# ---- import --------------------------------------------------------------------------
def import_csv(store: SubscriberStore, path: Path | str, *, resubscribe: bool = False,
               source: str | None = None, progress: Progress | None = None) -> ImportReport:
    """Import subscribers from a CSV file; see the module docstring for the rules.

    ``source`` is recorded for rows that have no ``source`` cell of their own
    (default ``import:<file name>``). Raises :class:`InputError` only for problems
    with the file as a whole (unreadable, not text, no email column, malformed CSV,
    a runaway quote); row problems go in the report. ``progress`` is called after
    each chunk of rows with (rows read, bytes read, file size).

    The rows are checked and staged in a temporary table first, holding no lock on
    the database; only then does one short write transaction apply them, so a send
    or the web app writing meanwhile is never kept waiting for the whole file.
    """
    path = Path(path)
    report = ImportReport(path=str(path))
    encoding = _encoding(path, report)
    default_source = clean_text(source, "source") if source is not None else f"import:{path.name}"
    conn = store.conn
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS import_rows(key TEXT PRIMARY KEY, line INTEGER NOT NULL,"
                 " email TEXT NOT NULL, name TEXT NOT NULL, source TEXT NOT NULL, consent TEXT NOT NULL,"
                 " lang TEXT NOT NULL DEFAULT '')")
    try:
        conn.execute("DELETE FROM temp.import_rows")
        with path.open("r", encoding=encoding, newline="") as fh:
            _stage(conn, fh, path, report, default_source, progress)
        with store.transaction():
            _apply(conn, report, resubscribe)
    finally:
        conn.execute("DROP TABLE IF EXISTS temp.import_rows")
    report.skipped.sort(key=lambda s: s[0])
    return report


def _stage(conn: sqlite3.Connection, fh: TextIO, path: Path, report: ImportReport, default_source: str,
           progress: Progress | None) -> None:
    """Check every row and stage the good ones in ``temp.import_rows``, chunk by chunk;
    a repeated address is reported with the line it repeats."""
    addresses = AddressValidator()
    size = path.stat().st_size
    reader = _open_rows(fh, path)
    chunk: list[_Row] = []
    rows_read = 0
    for line, cells in reader:
        rows_read += 1
        row = _parse_row(reader, line, cells, report, addresses, default_source)
        if row is not None:
            chunk.append(row)
        if len(chunk) >= _ROW_CHUNK:
            _stage_chunk(conn, chunk, report)
            chunk = []
            if progress is not None:
                progress(rows_read, fh.buffer.tell(), size)
    _stage_chunk(conn, chunk, report)
    if progress is not None:
        progress(rows_read, size, size)


def _stage_chunk(conn: sqlite3.Connection, rows: list[_Row], report: ImportReport) -> None:
    keys = [r.email.lower() for r in rows]
    first = dict(_select_in(conn, "SELECT key, line FROM temp.import_rows WHERE key IN ({marks})", keys))
    staged = []
    for r, key in zip(rows, keys):
        if key in first:
            report.skip(r.line, r.email, f"duplicate of line {first[key]}")
            continue
        first[key] = r.line
        staged.append((key, *r))
    conn.executemany("INSERT INTO temp.import_rows(key, line, email, name, source, consent, lang) "
                     "VALUES(?, ?, ?, ?, ?, ?, ?)", staged)


def _select_in(conn: sqlite3.Connection, sql: str, values: Sequence[str]) -> Iterator[tuple]:
    """Rows of ``sql`` (with one ``{marks}`` for an IN list), in parameter-limit-sized queries."""
    for start in range(0, len(values), _SQL_PARAM_CHUNK):
        part = values[start:start + _SQL_PARAM_CHUNK]
        yield from conn.execute(sql.format(marks=",".join("?" * len(part))), part)


def _apply(conn: sqlite3.Connection, report: ImportReport, resubscribe: bool) -> None:
    """Inside the write transaction: new addresses inserted in one statement; known ones
    (skipped, renamed or resubscribed) decided row by row, in bounded batches."""
    now = utcnow()
    names: list[tuple] = []
    reactivations: list[tuple] = []
    known = conn.execute(
        "SELECT r.line, r.email, s.id, s.name, s.status, r.name, r.source, r.consent"
        " FROM temp.import_rows r JOIN subscribers s ON s.email = r.email ORDER BY r.line")
    for line, email, sid, old_name, status, name, source, consent in known:
        if status == COMPLAINED:  # a spam report is final: not even --resubscribe undoes it
            report.skip(line, email, "suppressed: complained (never reactivated)")
        elif status == PENDING or (status in SUPPRESSED and resubscribe):  # as SubscriberStore.add does
            reactivations.append(reactivation(now, name, source, consent, sid))
        elif status in SUPPRESSED:
            report.skip(line, email, f"suppressed: {status}")
        elif name and name != old_name:
            names.append((name, now, sid))
        else:
            report.skip(line, email, "already subscribed")
        if len(names) + len(reactivations) >= _ROW_CHUNK:
            _update(conn, report, names, reactivations)
    _update(conn, report, names, reactivations)
    # A language in the file is the reader's (an empty cell keeps the one stored): not counted as an update.
    conn.execute("UPDATE subscribers SET lang=(SELECT r.lang FROM temp.import_rows r WHERE r.email=subscribers.email) "
                 "WHERE email IN (SELECT email FROM temp.import_rows WHERE lang<>'') AND status<>?", (COMPLAINED,))
    cur = conn.execute(
        "INSERT INTO subscribers(email, name, status, created_at, changed_at, source, consent, lang)"
        f" SELECT r.email, r.name, '{ACTIVE}', ?, ?, r.source, r.consent, r.lang FROM temp.import_rows r"
        " WHERE NOT EXISTS (SELECT 1 FROM subscribers s WHERE s.email = r.email) ORDER BY r.line", (now, now))
    report.added += cur.rowcount


def _update(conn: sqlite3.Connection, report: ImportReport, names: list[tuple], reactivations: list[tuple]) -> None:
    """Write (and empty) the collected renames and reactivations."""
    conn.executemany("UPDATE subscribers SET name=?, changed_at=? WHERE id=?", names)
    conn.executemany(REACTIVATE_SQL, reactivations)
    report.updated += len(names) + len(reactivations)
    names.clear()
    reactivations.clear()


# ---- export --------------------------------------------------------------------------
def export_csv(store: SubscriberStore, out: TextIO, status: str | None = None) -> int:
    """Write subscribers (all, or one status) as CSV to ``out``; returns the number of rows.

    Open files with ``newline=""`` so the CSV's CRLF line ends are not doubled on Windows.
    """
    writer = csv.writer(out)
    writer.writerow(EXPORT_COLUMNS)
    n = 0
    for s in store.iter_subscribers(status=status):
        writer.writerow((_guard_formula(s.email), _guard_formula(s.name), s.status, s.created_at, s.changed_at,
                         _guard_formula(s.source), _guard_formula(s.consent), s.lang))
        n += 1
    return n
