"""CSV import and export of subscribers.

Import is forgiving about the file and strict about each row:

* the header decides the columns: ``email`` (also ``e-mail``, ``Email Address``),
  optional ``name``, ``consent``, ``source`` and ``lang`` (the reader's language, a tag such as
  ``zh-Hans``: which edition of an issue they get); other columns are ignored;
* UTF-8 (with or without a BOM) is expected; a file with no UTF-8 text in it at all is read
  as Windows-1252, with a warning in the report, since that is what Excel writes; a file
  that mixes the two (UTF-8 lines and a line that is not) is refused, naming that line, and
  so is a file that is neither: a valid UTF-8 file is never re-decoded;
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
* a header that names a column twice (``email`` and ``E-mail``, say) is refused: which one
  holds the addresses would be a guess;
* a plain list (no ``status`` column) with a column that may say a reader left or cannot be
  mailed (``unsubscribed_at``, ``Subscription Status``, ``subscribed_to_emails``…: another
  tool's export) is refused, naming it: read as a plain list, every row would become active;
* suppressed addresses (unsubscribed, bounced, complained) are never reactivated by an
  import; they are reported as ``suppressed: <status>``. (One reader who asked to come back:
  ``subscribers add --resubscribe``.) An unconfirmed web signup (``pending``) is activated
  by a plain list, as :meth:`SubscriberStore.add` does: the editor's list vouches for consent.

Export writes every field of a reader's record (:data:`RECORD`): address, name, status and
why, dates, source, consent record (text, when asked, when confirmed, from which IP) and the
open signup request. Import of a file with a ``status`` column restores those records: a new
address gets its status and record exactly; a known one takes the file's status only when it is
the stronger one (a suppression always wins, see :data:`~newsletter.store.STATUS_RANK`), so an
import never lifts a suppression, from this file or any other. A file without a ``status``
column is a plain list and keeps the rules above. A suppressed reader's row with a bad cell (a date
a spreadsheet rewrote) still lands, that cell left empty, with a warning. Free-text
cells that a spreadsheet would run as a formula (starting with ``= + - @``) are
prefixed with ``'``, the address too (``=1+2@example.org`` is a valid address); import
strips that prefix again, so export → import round-trips.
"""

from __future__ import annotations

import codecs
import csv
import ipaddress
import itertools
import re
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, NamedTuple, Sequence, TextIO

from newsletter.addresses import check_header, clean_text
from newsletter.bulk_addresses import AddressValidator
from newsletter.db import backend
from newsletter.errors import InputError
from newsletter.lang import optional_tag
from newsletter.store import (ACTIVE, COMPLAINED, PENDING, REACTIVATE_SQL, STATUS_RANK, STATUS_RECORD, STATUSES,
                              SUPPRESSED, SubscriberStore, _SQL_PARAM_CHUNK, reactivation, stamp)
from newsletter.timestamps import utcnow_text


# ---- the record: what export writes and import restores -------------------------------
def _text(column: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        return clean_text(value, column).strip()
    return check


def _status(value: str) -> str:
    value = value.strip().lower()
    if value and value not in STATUSES:
        raise InputError(f"unknown status {value[:40]!r}; expected one of {', '.join(STATUSES)}")
    return value


def _time(value: str) -> str:
    """A time as the store keeps it; any ISO 8601 time with a zone is taken (a spreadsheet may
    have rewritten the store's own form)."""
    value = value.strip()
    if not value:
        return ""
    try:
        when = datetime.fromisoformat(value[:40].replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        when = None
    if when is None or when.tzinfo is None or not 1900 <= when.year <= 9998:
        raise InputError(f"{value[:40]!r} is not a time (ISO 8601 with a zone, e.g. 2025-03-01T09:30:00Z)")
    return stamp(when)


def _lang(value: str) -> str:
    """A reader's language as a canonical tag (``zh_cn`` → ``zh-CN``), "" for none."""
    return optional_tag(value, "lang")


def _ip(value: str) -> str:
    value = value.strip()
    if not value:
        return ""
    try:
        return str(ipaddress.ip_address(value[:64]))
    except ValueError:
        raise InputError(f"{value[:64]!r} is not an IP address") from None


class Column(NamedTuple):
    """One field of a reader's record: its header in the file, which is also its column in the
    ``subscribers`` table, and how a cell is checked (an InputError makes the row bad)."""

    name: str
    check: Callable[[str], str]
    free_text: bool = False  # guarded against spreadsheet formulas on export
    plain: bool = False  # also read from a plain list (a file without a status column)
    aliases: tuple[str, ...] = ()  # other headers that name it (compared as _column_key makes them)


#: Every field of a reader, in file order: export writes these, and a file with a ``status``
#: column restores them. Adding a field to the round trip is one line here.
RECORD: tuple[Column, ...] = (
    Column("email", str.strip, True, True, ("e mail", "email address", "e mail address", "mail")),  # see _parse_row
    Column("name", _text("name"), True, True, ("full name", "fullname", "display name")),
    Column("status", _status),
    Column("status_reason", _text("status_reason"), free_text=True),
    Column("created_at", _time),
    Column("changed_at", _time),
    Column("source", _text("source"), free_text=True, plain=True),
    Column("consent", _text("consent"), free_text=True, plain=True),
    Column("consent_requested_at", _time),
    Column("consent_confirmed_at", _time),
    Column("consent_ip", _ip),
    Column("signup_requested_at", _time),
    Column("signup_ip", _ip),
    Column("lang", _lang, plain=True, aliases=("language", "locale")),  # which edition they get
)
EXPORT_COLUMNS = tuple(c.name for c in RECORD)
_FIELDS = RECORD[1:]  # what is staged beside the address
_FIELD_NAMES = tuple(c.name for c in _FIELDS)
#: What a plain list brings: free text checked in one go (the usual case), then any other plain field.
_PLAIN_TEXT = tuple(c.name for c in _FIELDS if c.plain and c.free_text)
_PLAIN_OTHER = tuple((_FIELD_NAMES.index(c.name), c) for c in _FIELDS if c.plain and not c.free_text)
_ALIASES = {c.name: {c.name.replace("_", " "), *c.aliases} for c in RECORD}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_BINARY_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f]")
_LOOKS_LIKE_ADDRESS = re.compile(r"[^\s@\"]+@[^\s@\"]+\.[^\s@\"]+")
DETAIL_LIMIT = 1000  # bad and skipped rows kept with their line; the rest are only counted
_READ_CHUNK = 1 << 20  # bytes per read while checking the encoding
_MAX_LINE = 1 << 20  # characters on one physical line; a longer one is not a subscriber list
_ROW_CHUNK = _SQL_PARAM_CHUNK  # rows validated, then written, per step

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
    """One checked row (a tuple: 100k of them are made per 100k-row import); ``fields`` follow
    :data:`_FIELDS`, ``''`` where the file has none (a plain list has no status)."""

    line: int
    email: str
    fields: tuple[str, ...]


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
            _refuse_mixed(fh, path)
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


def _line_breaks(data: bytes) -> int:
    """Line ends in ``data`` as the CSV reader counts them (CRLF, LF or a lone CR)."""
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


def _refuse_mixed(fh: BinaryIO, path: Path) -> None:
    """A file that is not all UTF-8 but has UTF-8 text in it mixes two encodings: reading it all
    as cp1252 would turn every UTF-8 ``Zoë`` into ``ZoÃ«``, so it is refused, naming the first
    line that is not UTF-8 (no line end byte occurs inside a UTF-8 character, so lines split safely)."""
    line, bad, utf8 = 1, 0, 0
    while chunk := fh.readline(4 * _MAX_LINE):
        if len(chunk) >= 4 * _MAX_LINE and not chunk.endswith(b"\n"):
            raise InputError(f"a line longer than {_MAX_LINE} characters; not a subscriber list", path=path, line=line)
        for text in chunk.splitlines() if not chunk.isascii() else ():  # at CR, LF and CRLF, as the CSV reader
            if not text.isascii():
                try:
                    text.decode("utf-8")
                    utf8 = utf8 or line
                except UnicodeDecodeError:
                    bad = bad or line
            if bad and utf8:
                raise InputError(f"not UTF-8 here, though line {utf8} is: the file mixes encodings (a line "
                                 "pasted from another program?). Fix this line, or save the whole file as CSV "
                                 "UTF-8; nothing was imported", path=path, line=bad)
            line += 1
        if chunk.isascii():
            line += _line_breaks(chunk)


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
    """Column → index. A name given twice is refused (which cell holds the address would be a
    guess: the second ``email`` column was once silently dropped), as are two aliases of one column."""
    columns: dict[str, int] = {}
    seen: dict[str, int] = {}
    for index, raw in enumerate(header):
        key = _column_key(raw)
        if not key:
            continue
        column = next((c for c, aliases in _ALIASES.items() if key in aliases), None)
        twin = seen.get(key, columns.get(column) if column else None)
        if twin is not None:
            raise InputError(f"the header names {header[twin].strip()!r} (column {twin + 1}) and {raw.strip()!r} "
                             f"(column {index + 1}): one column each, please; nothing was imported",
                             path=path, line=1)
        seen[key] = index
        if column:
            columns[column] = index
    if "email" not in columns:
        found = ", ".join(repr(h.strip()) for h in header if h.strip()) or "nothing"
        raise InputError(f"no 'email' column (found: {found})", path=path, line=1)
    if "status" not in columns:
        _refuse_unread_state(header, set(columns.values()), path)
    return columns


#: Words in a header that may say a reader left or cannot be mailed (another tool's export:
#: Mailchimp's UNSUB_TIME, Substack's email_disabled, a "Subscription Status"…).
_LEFT_WORDS = re.compile(r"unsub|bounce|complain|spam|suppress|clean|block|black ?list|disabled|opt(?:ed)? ?out"
                         r"|\b(?:status|left|deleted|removed)\b"
                         r"|(?:subscri|email|member|list)\w* (?:state|type)\b")  # not a postal "State"
#: Words of a flag that may be false (Ghost's subscribed_to_emails, Substack's active_subscription)...
_FLAG_WORDS = re.compile(r"subscri|\bactive\b|opt(?:ed)? ?in")
#: ...unless the column only dates or identifies it ("Subscribed At", Mailchimp's OPTIN_TIME, "Subscriber ID").
_HARMLESS_END = re.compile(r"(?:^(?:date|time) .*|\b(?:at|on|date|time|ip|id))$")


def _refuse_unread_state(header: list[str], read: set[int], path: Path) -> None:
    """A plain list (no ``status`` column) whose other columns may hold the only record that a
    reader left is refused: importing it would make every one of them active, and mail them."""
    for index, raw in enumerate(header):
        key = _column_key(raw)
        if index in read or not key or not (_LEFT_WORDS.search(key) or (
                _FLAG_WORDS.search(key) and not _HARMLESS_END.search(key))):
            continue
        raise InputError(f"column {raw.strip()!r} may say which readers left or cannot be mailed, and this "
                         "import does not read it: every row would become active. Delete the rows of readers "
                         "who must not be mailed and that column, or name it 'status' with active, unsubscribed, "
                         "bounced, complained or pending in each row; nothing was imported", path=path, line=1)


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
        if "status" in reader.columns:
            fields = _record_fields(reader, row, line, report)
            if fields[_STATUS_AT]:
                return _Row(line, email, fields)
            fields = list(fields)  # a blank status: a plain row after all
        else:
            fields = _plain_fields(reader, row)
    except InputError as exc:
        report.error(line, exc.message)
        return None
    fields[_SOURCE_AT] = fields[_SOURCE_AT] or default_source  # a plain row: where it came from, as today
    return _Row(line, email, tuple(fields))


_STATUS_AT, _SOURCE_AT = _FIELD_NAMES.index("status"), _FIELD_NAMES.index("source")
_PLAIN_AT = tuple(_FIELD_NAMES.index(column) for column in _PLAIN_TEXT)
_NO_FIELDS = [""] * len(_FIELD_NAMES)


def _plain_fields(reader: _Reader, row: list[str]) -> list[str]:
    """A plain list's row: its :attr:`Column.plain` fields (name, source, consent), the rest left empty."""
    texts = [_unformula(reader.cell(row, column)) for column in _PLAIN_TEXT]
    try:
        check_header("name", "".join(texts))  # one check for the three cells...
    except InputError:  # ...and, rarely, clean_text to say which cell and why (or that stripping cured it)
        texts = [clean_text(t, column) for t, column in zip(texts, _PLAIN_TEXT)]
    fields = _NO_FIELDS.copy()
    for at, text in zip(_PLAIN_AT, texts):
        fields[at] = text.strip()
    for at, column in _PLAIN_OTHER:
        fields[at] = _checked(column, reader.cell(row, column.name))
    return fields


def _record_fields(reader: _Reader, row: list[str], line: int, report: ImportReport) -> tuple[str, ...]:
    """A row of a file with a status column (an export): every field of the record it has.

    A bad cell makes the row bad, except in a suppressed reader's row: there the cell is left
    empty and the row still lands, with a warning, since dropping it would drop the suppression
    (a spreadsheet that rewrote a date must not bring back a reader who left)."""
    status = _checked(_FIELDS[_STATUS_AT], reader.cell(row, "status"))
    fields = []
    for column in _FIELDS:
        try:
            fields.append(_checked(column, reader.cell(row, column.name)))
        except InputError as exc:
            if status not in SUPPRESSED:
                raise
            if len(report.warnings) < DETAIL_LIMIT:
                report.warnings.append(f"{reader.path}:{line}: {exc.message}; kept as {status} with that cell empty")
            fields.append("")
    return tuple(fields)


def _checked(column: Column, cell: str) -> str:
    try:
        return column.check(_unformula(cell) if column.free_text else cell)
    except InputError as exc:
        raise InputError(f"{column.name}: {exc.message}") from None


# ---- import --------------------------------------------------------------------------
def import_csv(store: SubscriberStore, path: Path | str, *, source: str | None = None,
               progress: Progress | None = None) -> ImportReport:
    """Import subscribers from a CSV file; see the module docstring for the rules.

    ``source`` is recorded for rows of a plain list that have no ``source`` cell of their
    own (default ``import:<file name>``). Raises :class:`InputError` only for problems
    with the file as a whole (unreadable, not text, mixed encodings, no email column, a
    column named twice, malformed CSV, a runaway quote); row problems go in the report.
    ``progress`` is called after each chunk of rows with (rows read, bytes read, file size).

    The rows are checked and staged in a temporary table first, holding no lock on
    the database; only then does one short write transaction apply them, so a send
    or the web app writing meanwhile is never kept waiting for the whole file.
    """
    path = Path(path)
    report = ImportReport(path=str(path))
    encoding = _encoding(path, report)
    default_source = clean_text(source, "source") if source is not None else f"import:{path.name}"
    conn = store.conn
    fields = "".join(f", {name} TEXT NOT NULL" for name in _FIELD_NAMES)
    conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS import_rows(key TEXT PRIMARY KEY, line INTEGER NOT NULL,"
                 f" email {_SQL[backend(conn)]['address']} NOT NULL{fields})")
    try:
        conn.execute("DELETE FROM import_rows")
        with path.open("r", encoding=encoding, newline="") as fh:
            _stage(conn, fh, path, report, default_source, progress)
        with store.transaction():
            _apply(conn, report)
    finally:
        conn.execute("DROP TABLE IF EXISTS import_rows")
    report.skipped.sort(key=lambda s: s[0])
    return report


def _stage(conn: sqlite3.Connection, fh: TextIO, path: Path, report: ImportReport, default_source: str,
           progress: Progress | None) -> None:
    """Check every row and stage the good ones in ``import_rows``, chunk by chunk;
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
    first = dict(_select_in(conn, "SELECT key, line FROM import_rows WHERE key IN ({marks})", keys))
    staged = []
    for r, key in zip(rows, keys):
        if key in first:
            report.skip(r.line, r.email, f"duplicate of line {first[key]}")
            continue
        first[key] = r.line
        staged.append((key, r.line, r.email, *r.fields))
    marks = ", ".join("?" * (3 + len(_FIELD_NAMES)))
    conn.executemany(f"INSERT INTO import_rows(key, line, email, {', '.join(_FIELD_NAMES)}) VALUES({marks})",
                     staged)


def _select_in(conn: sqlite3.Connection, sql: str, values: Sequence[str]) -> Iterator[tuple]:
    """Rows of ``sql`` (with one ``{marks}`` for an IN list), in parameter-limit-sized queries."""
    for start in range(0, len(values), _SQL_PARAM_CHUNK):
        part = values[start:start + _SQL_PARAM_CHUNK]
        yield from conn.execute(sql.format(marks=",".join("?" * len(part))), part)


def _apply(conn: sqlite3.Connection, report: ImportReport) -> None:
    """Inside the write transaction: new addresses inserted in one statement; known ones
    (skipped, renamed, given the file's stronger status, or a pending signup activated by a
    plain list) decided row by row, in bounded batches."""
    now = utcnow_text()
    writes = _Writes(now)
    known = conn.execute(
        f"SELECT r.line, r.email, s.id, s.name, s.status, {', '.join('r.' + n for n in _FIELD_NAMES)}"
        " FROM import_rows r JOIN subscribers s ON s.email = r.email ORDER BY r.line")
    for line, email, sid, old_name, status, *cells in known:
        record = dict(zip(_FIELD_NAMES, cells))
        reason = _decide(writes, sid, old_name, status, record)
        if reason:
            report.skip(line, email, reason)
        if len(writes) >= _ROW_CHUNK:
            report.updated += writes.flush(conn)
    report.updated += writes.flush(conn)
    # A language in the file is the reader's (an empty cell keeps the stored one); not counted as an update.
    conn.execute("UPDATE subscribers SET lang=(SELECT r.lang FROM import_rows r WHERE r.email=subscribers.email) "
                 "WHERE email IN (SELECT email FROM import_rows WHERE lang<>'') AND status<>?", (COMPLAINED,))
    cur = conn.execute(
        f"INSERT INTO subscribers(email, {', '.join(_FIELD_NAMES)}, signup_nonce)"
        f" SELECT r.email, {', '.join(_NEW_VALUE.get(n, 'r.' + n) for n in _FIELD_NAMES)}, "
        f"{_fresh_nonce(conn, 'r.signup_requested_at')}"
        " FROM import_rows r"
        " WHERE NOT EXISTS (SELECT 1 FROM subscribers s WHERE s.email = r.email) ORDER BY r.line", {"now": now})
    report.added += cur.rowcount


#: A new reader's value where the file leaves a field empty (a plain list, or a blank cell).
_NEW_VALUE = {
    "status": f"CASE WHEN r.status='' THEN '{ACTIVE}' ELSE r.status END",
    "created_at": "CASE WHEN r.created_at='' THEN :now ELSE r.created_at END",
    "changed_at": "CASE WHEN r.changed_at='' THEN :now ELSE r.changed_at END",
}


#: A restored open signup request gets a nonce no link was ever made with: links mailed for this
#: reader before (from this or another database) never confirm it; the reader asks again.
def _fresh_nonce(conn: sqlite3.Connection, requested: str) -> str:
    """SQL for that nonce, where ``requested`` is the SQL of the request's time ('' when none)."""
    return f"CASE WHEN {requested}<>'' THEN {_SQL[backend(conn)]['random_hex']} ELSE '' END"
#: What differs per backend: the staged address compares as the store's does (case-insensitively),
#: and 128 random bits as hex.
_SQL = {"sqlite": {"address": "TEXT", "random_hex": "lower(hex(randomblob(16)))"},
        "postgresql": {"address": "CITEXT", "random_hex": "replace(gen_random_uuid()::text, '-', '')"}}


def _decide(writes: "_Writes", sid: int, old_name: str, status: str, record: dict[str, str]) -> str:
    """What one row does to a known reader; returns why it was skipped ('' when it wrote).

    The stronger status wins (a suppression over active, active over pending): a suppression is
    never lifted, by a restored export or by a plain list."""
    wanted = record["status"]
    if status == COMPLAINED:  # a spam report is final
        return "suppressed: complained (never reactivated)"
    if wanted and STATUS_RANK[wanted] > STATUS_RANK[status]:
        writes.record(sid, record)
        return ""
    if status in SUPPRESSED:
        return f"suppressed: {status}"
    if not wanted and status == PENDING:  # a plain list vouches for consent, as SubscriberStore.add does
        writes.reactivate(sid, record)
        return ""
    if record["name"] and record["name"] != old_name:
        writes.rename(sid, record["name"])
        return ""
    return "already pending" if status == PENDING else "already subscribed"


class _Writes:
    """The updates of known readers, collected and written in batches."""

    def __init__(self, now: str):
        self.now = now
        self.names: list[tuple] = []
        self.reactivations: list[tuple] = []
        self.records: list[tuple] = []

    def __len__(self) -> int:
        return len(self.names) + len(self.reactivations) + len(self.records)

    def rename(self, sid: int, name: str) -> None:
        self.names.append((name, self.now, sid))

    def reactivate(self, sid: int, record: dict[str, str]) -> None:
        self.reactivations.append(reactivation(self.now, record["name"], record["source"], record["consent"], sid))

    def record(self, sid: int, record: dict[str, str]) -> None:
        """The file's status with why the reader has it; an open signup request's link retires."""
        values = {**record, "changed_at": record["changed_at"] or self.now}
        self.records.append((*(values[n] for n in STATUS_RECORD), record["name"], record["name"],
                             record["signup_requested_at"], sid))

    def flush(self, conn: sqlite3.Connection) -> int:
        """Write (and forget) what was collected; returns how many readers changed."""
        conn.executemany("UPDATE subscribers SET name=?, changed_at=? WHERE id=?", self.names)
        conn.executemany(REACTIVATE_SQL, self.reactivations)
        assignments = ", ".join(f"{n}=?" for n in STATUS_RECORD)
        conn.executemany(f"UPDATE subscribers SET {assignments}, name=CASE WHEN ?<>'' THEN ? ELSE name END,"
                         f" signup_nonce={_fresh_nonce(conn, '?')} WHERE id=?",
                         self.records)
        done = len(self)
        self.names.clear()
        self.reactivations.clear()
        self.records.clear()
        return done


# ---- export --------------------------------------------------------------------------
def export_csv(store: SubscriberStore, out: TextIO, status: str | None = None) -> int:
    """Write subscribers (all, or one status) as CSV to ``out``, every field of :data:`RECORD`;
    returns the number of rows. Importing the file into an empty database restores them.

    Open files with ``newline=""`` so the CSV's CRLF line ends are not doubled on Windows.
    """
    writer = csv.writer(out)
    writer.writerow(EXPORT_COLUMNS)
    guarded = [c.free_text for c in RECORD]
    n = 0
    for row in store.iter_records(EXPORT_COLUMNS, status=status):
        writer.writerow([_guard_formula(v) if g else v for v, g in zip(row, guarded)])
        n += 1
    return n
