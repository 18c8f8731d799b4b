"""CSV import and export of subscribers.

Import is forgiving about the file and strict about each row:

* the header decides the columns: ``email`` (also ``e-mail``, ``Email Address``),
  optional ``name``, ``consent`` and ``source``; other columns are ignored;
* UTF-8 (with or without a BOM) is expected; a file that is not UTF-8 is read as
  Windows-1252, with a warning in the report, since that is what Excel writes;
  a file that is neither is refused as a whole;
* comma, semicolon and tab separated files are all accepted (decided from the header);
* every bad row is reported with its physical line number (header = line 1) and why,
  and the good rows are still imported — all in ONE transaction, so an import
  either lands completely or not at all;
* suppressed addresses (unsubscribed, bounced, complained) are never reactivated
  unless ``resubscribe=True``; they are reported as ``suppressed: <status>``.

Export writes ``email,name,status,created_at,changed_at,source,consent``. Free-text
cells that a spreadsheet would run as a formula (starting with ``= + - @``) are
prefixed with ``'``; import strips that prefix again, so export → import round-trips.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from newsletter.errors import InputError
from newsletter.addresses import clean_text, normalise_email
from newsletter.store import ACTIVE, SUPPRESSED, SubscriberStore, _SQL_PARAM_CHUNK, utcnow

EXPORT_COLUMNS = ("email", "name", "status", "created_at", "changed_at", "source", "consent")

_ALIASES = {
    "email": {"email", "e mail", "email address", "e mail address", "mail"},
    "name": {"name", "full name", "fullname", "display name"},
    "consent": {"consent"},
    "source": {"source"},
}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_BINARY_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f]")


@dataclass
class ImportReport:
    """What an import did. Line numbers are physical lines in the file; the header is line 1."""

    path: str
    encoding: str = "utf-8"
    added: int = 0
    updated: int = 0
    skipped: list[tuple[int, str, str]] = field(default_factory=list)  # (line, email, reason)
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        return (f"{self.path}: {self.added} added, {self.updated} updated, "
                f"{len(self.skipped)} skipped, {len(self.errors)} error(s)")


@dataclass(frozen=True)
class _Row:
    line: int
    email: str
    name: str
    source: str
    consent: str


# ---- reading -----------------------------------------------------------------------
def _decode(data: bytes, path: Path, report: ImportReport) -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text, report.encoding = data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError:
            raise InputError("starts with a UTF-16 byte-order mark but is not valid UTF-16", path=path) from None
    else:
        try:
            text, report.encoding = data.decode("utf-8-sig"), "utf-8"
            if data.startswith(codecs.BOM_UTF8):
                report.encoding = "utf-8-sig"
        except UnicodeDecodeError as exc:
            try:
                text = data.decode("cp1252")
            except UnicodeDecodeError:
                raise InputError(f"is neither UTF-8 nor Windows-1252 text (undecodable byte at offset "
                                 f"{exc.start}); save it as CSV UTF-8", path=path) from None
            report.encoding = "cp1252"
            report.warnings.append(f"{path}: not UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start}); "
                                   "read as Windows-1252 (cp1252) — check that accented names look right")
    sample = text[:65536]
    if "\x00" in text or len(_BINARY_CONTROL.findall(sample)) > max(2, len(sample) // 100):
        raise InputError("does not look like a CSV text file (binary data?)", path=path)
    return text


def _delimiter(text: str) -> str:
    first = text.split("\n", 1)[0]
    counts = {d: first.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _column_key(header: str) -> str:
    h = header.replace("\ufeff", "").strip().lower().replace("_", " ").replace("-", " ")
    return " ".join(h.split())


def _unformula(value: str) -> str:
    """Undo export's spreadsheet-formula guard: ``'=x`` → ``=x``."""
    if len(value) > 1 and value[0] == "'" and value[1] in _FORMULA_START:
        return value[1:]
    return value


def _guard_formula(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_START) else value


def _parse(text: str, path: Path, report: ImportReport, default_source: str) -> list[_Row]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise InputError(f"malformed CSV header: {exc}", path=path, line=1) from None
    header = header or []
    columns: dict[str, int] = {}
    for index, raw in enumerate(header):
        key = _column_key(raw)
        for column, aliases in _ALIASES.items():
            if key in aliases and column not in columns:
                columns[column] = index
    if "email" not in columns:
        found = ", ".join(repr(h.strip()) for h in header if h.strip()) or "nothing"
        raise InputError(f"no 'email' column (found: {found})", path=path, line=1)

    def cell(row: list[str], column: str) -> str:
        index = columns.get(column)
        return row[index] if index is not None and index < len(row) else ""

    rows: list[_Row] = []
    seen: dict[str, int] = {}
    end = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise InputError(f"malformed CSV: {exc}; nothing was imported", path=path,
                             line=reader.line_num) from None
        line, end = end + 1, reader.line_num
        if not any(c.strip() for c in row):
            continue  # blank line
        raw_email = cell(row, "email").strip()
        if not raw_email:
            report.errors.append((line, "empty email"))
            continue
        try:
            email = normalise_email(raw_email)
            name = clean_text(_unformula(cell(row, "name")), "name")
            source = clean_text(_unformula(cell(row, "source")), "source") or default_source
            consent = clean_text(_unformula(cell(row, "consent")), "consent")
        except InputError as exc:
            report.errors.append((line, exc.message))
            continue
        key = email.lower()
        if key in seen:
            report.skipped.append((line, email, f"duplicate of line {seen[key]}"))
            continue
        seen[key] = line
        rows.append(_Row(line, email, name, source, consent))
    return rows


# ---- import --------------------------------------------------------------------------
def import_csv(store: SubscriberStore, path: Path | str, *, resubscribe: bool = False,
               source: str | None = None) -> ImportReport:
    """Import subscribers from a CSV file; see the module docstring for the rules.

    ``source`` is recorded for rows that have no ``source`` cell of their own
    (default ``import:<file name>``). Raises :class:`InputError` only for problems
    with the file as a whole (unreadable, not text, no email column, malformed CSV);
    row problems go in the report.
    """
    path = Path(path)
    report = ImportReport(path=str(path))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", path=path) from None
    text = _decode(data, path, report)
    default_source = clean_text(source, "source") if source is not None else f"import:{path.name}"
    rows = _parse(text, path, report, default_source)

    now = utcnow()
    inserts: list[tuple] = []
    name_updates: list[tuple] = []
    reactivations: list[tuple] = []
    with store.transaction() as conn:
        existing: dict[str, tuple[int, str, str]] = {}
        emails = [r.email for r in rows]
        for start in range(0, len(emails), _SQL_PARAM_CHUNK):
            chunk = emails[start:start + _SQL_PARAM_CHUNK]
            marks = ",".join("?" * len(chunk))
            for sid, email, name, status in conn.execute(
                    f"SELECT id, email, name, status FROM subscribers WHERE email IN ({marks})", chunk):
                existing[email.lower()] = (sid, name, status)
        for r in rows:
            found = existing.get(r.email.lower())
            if found is None:
                inserts.append((r.email, r.name, now, now, r.source, r.consent))
                continue
            sid, old_name, status = found
            if status in SUPPRESSED:
                if resubscribe:
                    reactivations.append((now, r.name, r.name, r.source, r.source, r.consent, r.consent, sid))
                else:
                    report.skipped.append((r.line, r.email, f"suppressed: {status}"))
            elif r.name and r.name != old_name:
                name_updates.append((r.name, now, sid))
            else:
                report.skipped.append((r.line, r.email, "already subscribed"))
        conn.executemany(
            "INSERT INTO subscribers(email, name, status, created_at, changed_at, source, consent)"
            f" VALUES(?, ?, '{ACTIVE}', ?, ?, ?, ?)", inserts)
        conn.executemany("UPDATE subscribers SET name=?, changed_at=? WHERE id=?", name_updates)
        conn.executemany(
            f"UPDATE subscribers SET status='{ACTIVE}', status_reason='', changed_at=?,"
            " name=CASE WHEN ?<>'' THEN ? ELSE name END,"
            " source=CASE WHEN ?<>'' THEN ? ELSE source END,"
            " consent=CASE WHEN ?<>'' THEN ? ELSE consent END WHERE id=?", reactivations)
    report.added = len(inserts)
    report.updated = len(name_updates) + len(reactivations)
    report.skipped.sort(key=lambda s: s[0])
    return report


# ---- export --------------------------------------------------------------------------
def export_csv(store: SubscriberStore, out: TextIO, status: str | None = None) -> int:
    """Write subscribers (all, or one status) as CSV to ``out``; returns the number of rows.

    Open files with ``newline=""`` so the CSV's CRLF line ends are not doubled on Windows.
    """
    writer = csv.writer(out)
    writer.writerow(EXPORT_COLUMNS)
    n = 0
    for s in store.iter_subscribers(status=status):
        writer.writerow((s.email, _guard_formula(s.name), s.status, s.created_at, s.changed_at,
                         _guard_formula(s.source), _guard_formula(s.consent)))
        n += 1
    return n
