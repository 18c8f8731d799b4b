"""The subscriber store: one SQLite table, and a suppression list nothing bypasses.

A subscriber is ``active`` (receives sends) or suppressed: ``unsubscribed``,
``bounced`` or ``complained``. Suppressed rows are kept on purpose — they are
what stops a later import, a re-added address or a resumed delivery from
mailing someone who asked not to be mailed. Only :meth:`SubscriberStore.add`
(and :meth:`SubscriberStore.set_status`) with ``resubscribe=True`` reactivate
one, for when the person themselves asked to come back. A ``pending`` reader signed
up on the web form and has not confirmed yet: never sent to (see :mod:`newsletter.signups`).

Addresses are stored as given, with the domain normalised (lower case, IDNA) by
:func:`newsletter.addresses.validate_address` (rows from before IDNA were converted by
v3), and are unique case-insensitively (``COLLATE NOCASE``): ``Sam@example.org`` and ``sam@example.org`` are one reader.

The delivery ledger joins on ``subscribers(id, email, name, status)``; keep the
v1 schema below stable and add columns only through new migrations.

No ``from __future__ import annotations``: :class:`Subscriber` is a NamedTuple (cheaper at
import than a dataclass; ``status`` loads this module), and NamedTuple compiles string
annotations.
"""

import sqlite3
import threading
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

from newsletter.addresses import clean_text, normalise_email
from newsletter.db import backend, table_columns, write_transaction
from newsletter.errors import InputError
from newsletter.patterns import CONTROL_CHARS, compiled
from newsletter.schema import open_database
from newsletter.states import SUPPRESSED, SubscriberStatus
from newsletter.timestamps import TIMESTAMP, stamp, utcnow_text  # noqa: F401 (TIMESTAMP, stamp re-exported)

COMPONENT = "subscribers"

MIGRATIONS: list[str] = [
    # v1
    """CREATE TABLE subscribers (
  id INTEGER PRIMARY KEY,
  email TEXT NOT NULL COLLATE NOCASE UNIQUE,
  name TEXT NOT NULL DEFAULT '',
  status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active','unsubscribed','bounced','complained')),
  created_at TEXT NOT NULL,
  changed_at TEXT NOT NULL,
  source TEXT NOT NULL DEFAULT '',
  consent TEXT NOT NULL DEFAULT '',
  status_reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX subscribers_status ON subscribers(status, id)""",
    # v2: signup with double opt-in. A 'pending' status (never sent to) and the consent record.
    # SQLite cannot alter a CHECK constraint, so the table is rebuilt (see newsletter.db.REBUILD_MARKER).
    """-- rebuild
CREATE TABLE subscribers_v2 (
  id INTEGER PRIMARY KEY,
  email TEXT NOT NULL COLLATE NOCASE UNIQUE,
  name TEXT NOT NULL DEFAULT '',
  status TEXT NOT NULL DEFAULT 'active'
    CHECK (status IN ('active','unsubscribed','bounced','complained','pending')),
  created_at TEXT NOT NULL,
  changed_at TEXT NOT NULL,
  source TEXT NOT NULL DEFAULT '',
  consent TEXT NOT NULL DEFAULT '',
  status_reason TEXT NOT NULL DEFAULT '',
  signup_requested_at TEXT NOT NULL DEFAULT '',
  signup_ip TEXT NOT NULL DEFAULT '',
  consent_requested_at TEXT NOT NULL DEFAULT '',
  consent_confirmed_at TEXT NOT NULL DEFAULT '',
  consent_ip TEXT NOT NULL DEFAULT ''
);
INSERT INTO subscribers_v2(id, email, name, status, created_at, changed_at, source, consent, status_reason)
  SELECT id, email, name, status, created_at, changed_at, source, consent, status_reason FROM subscribers;
DROP TABLE subscribers;
ALTER TABLE subscribers_v2 RENAME TO subscribers;
CREATE INDEX subscribers_status ON subscribers(status, id);
CREATE INDEX subscribers_signup ON subscribers(signup_requested_at) WHERE signup_requested_at <> ''""",
]


#: Where v3 noted each address it changed: mail sent before carries links (tokens) made for the
#: old id and address, and they must still unsubscribe or confirm that reader (see ``get_by_token``).
#: A reader deleted (erasure, an expired signup) takes these along: an id SQLite gives out again
#: must not inherit an old link.
_FORMER_ADDRESSES = """CREATE TABLE IF NOT EXISTS subscriber_former_addresses (
  old_id INTEGER PRIMARY KEY,
  subscriber_id INTEGER NOT NULL,
  email TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS subscriber_former_addresses_go AFTER DELETE ON subscribers
  BEGIN DELETE FROM subscriber_former_addresses WHERE subscriber_id=old.id; END"""


def _v3_ascii_domains(conn: sqlite3.Connection) -> None:
    """v3: addresses stored before domains were kept in their ASCII (IDNA) form get it now, as
    :func:`normalise_email` gives new ones, so they can be sent to. Where the ASCII form is already
    another row, the two become one (see :func:`_merge_reader`). An address it refuses (e.g. a
    Unicode local part, which needs SMTPUTF8) stays as it is: sends report it, reader by reader.
    Each old id and address is kept in ``subscriber_former_addresses`` for the links already sent."""
    for statement in _FORMER_ADDRESSES.split(";\n"):
        conn.execute(statement)
    rows = conn.execute("SELECT id, email FROM subscribers WHERE email GLOB '*[^ -~]*' ORDER BY id").fetchall()
    for old_id, email in rows:
        try:
            ascii_email = normalise_email(email)
        except InputError:
            continue
        if ascii_email == email:
            continue
        sid = old_id
        twin = conn.execute("SELECT id FROM subscribers WHERE email=? AND id<>?", (ascii_email, sid)).fetchone()
        if twin is not None:
            _merge_reader(conn, keep=twin[0], drop=sid)
            sid = twin[0]
        else:
            conn.execute("UPDATE subscribers SET email=? WHERE id=?", (ascii_email, sid))
        conn.execute("INSERT OR REPLACE INTO subscriber_former_addresses(old_id, subscriber_id, email) "
                     "VALUES(?, ?, ?)", (old_id, sid, email))
        if _has_table(conn, "ledger"):  # rows not sent yet (a delivery frozen before) go to the new form
            conn.execute("UPDATE ledger SET email=? WHERE subscriber_id=? AND email=? AND state<>'sent'",
                         (ascii_email, sid, email))


#: Which of two statuses one reader keeps when two records meet (a merge, an import): any suppression
#: beats active, and the stronger suppression wins.
STATUS_RANK = {SubscriberStatus.PENDING: 0, SubscriberStatus.ACTIVE: 1, SubscriberStatus.UNSUBSCRIBED: 2,
               SubscriberStatus.BOUNCED: 3, SubscriberStatus.COMPLAINED: 4}
#: What comes with the status that wins a merge or an import: why the reader has it (consent, signup, reason).
STATUS_RECORD = ("status", "status_reason", "changed_at", "source", "consent", "consent_requested_at",
                 "consent_confirmed_at", "consent_ip", "signup_requested_at", "signup_ip")
#: Of one reader's two ledger rows in a delivery, the one kept: a row that went out (or may have) wins.
_LEDGER_RANK = "CASE {0}.state WHEN 'sent' THEN 3 WHEN 'uncertain' THEN 2 WHEN 'sending' THEN 1 ELSE 0 END"


def _merge_reader(conn: sqlite3.Connection, *, keep: int, drop: int) -> None:
    """One reader stored twice (Unicode and ASCII domain): ``keep`` takes the stronger status with
    its consent record (a suppression is never lost) and ``drop``'s history, then ``drop`` goes.
    Where both have a row in one delivery, the one further on stays (no second copy is sent)."""
    cols = ", ".join(STATUS_RECORD)
    kept, dropped = (conn.execute(f"SELECT {cols}, name, created_at FROM subscribers WHERE id=?", (i,)).fetchone()
                     for i in (keep, drop))
    if STATUS_RANK.get(dropped[0], 0) > STATUS_RANK.get(kept[0], 0):
        assignments = ", ".join(f"{c}=?" for c in STATUS_RECORD)
        conn.execute(f"UPDATE subscribers SET {assignments} WHERE id=?", (*dropped[:len(STATUS_RECORD)], keep))
    conn.execute("UPDATE subscribers SET name=CASE WHEN name='' THEN ? ELSE name END, created_at=min(created_at, ?) "
                 "WHERE id=?", (dropped["name"], dropped["created_at"], keep))
    if _has_table(conn, "ledger"):
        conn.execute(f"DELETE FROM ledger WHERE subscriber_id=:keep AND EXISTS (SELECT 1 FROM ledger AS d WHERE "
                     f"d.subscriber_id=:drop AND d.delivery_id=ledger.delivery_id AND "
                     f"{_LEDGER_RANK.format('d')} > {_LEDGER_RANK.format('ledger')})", {"keep": keep, "drop": drop})
    for table in ("ledger", "feedback_events", "signup_outbox", "subscriber_former_addresses"):
        if _has_table(conn, table):
            conn.execute(f"UPDATE OR IGNORE {table} SET subscriber_id=? WHERE subscriber_id=?", (keep, drop))
    if _has_table(conn, "ledger"):
        conn.execute("DELETE FROM ledger WHERE subscriber_id=?", (drop,))
    conn.execute("DELETE FROM subscribers WHERE id=?", (drop,))


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


MIGRATIONS.append(_v3_ascii_domains)
MIGRATIONS.append(_FORMER_ADDRESSES)  # v4: for databases v3 converted before it kept the table
# v5: the nonce of a reader's open signup request. A confirmation link carries it, so a link works
# only for the request that made it: a new request, or an unsubscribe, retires every older link.
MIGRATIONS.append("ALTER TABLE subscribers ADD COLUMN signup_nonce TEXT NOT NULL DEFAULT ''")
# v6: a reader's language (a BCP 47 tag, "" for none): which edition of an issue they get.
MIGRATIONS.append("ALTER TABLE subscribers ADD COLUMN lang TEXT NOT NULL DEFAULT ''")
#: v7: what `subscribers count` and `status` ask, kept current as rows change so neither grows with the
#: list: readers per status (triggers, in the writer's transaction) and the addresses a send cannot take
#: (a partial index holding only non-ASCII addresses: the query names its condition word for word).
#: Each trigger is one statement, fired whether or not the status changes: a signup does the same work
#: for a new address (the insert) as for a known one (the upsert sets status=status), so timing does
#: not tell them apart (tests/test_signup_guarantees.py). A rebuild of ``subscribers`` (see
#: newsletter.db.REBUILD_MARKER) must recreate these.
UNSENDABLE = "email GLOB '*[^ -~]*'"  # PostgreSQL's index (newsletter.pg_schema) names _NOT_ASCII's
MIGRATIONS.append(f"""CREATE TABLE subscriber_counts (status TEXT PRIMARY KEY, n INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
INSERT INTO subscriber_counts(status, n) SELECT column1, 0 FROM (VALUES ('active'),('unsubscribed'),('bounced'),
  ('complained'),('pending'));
UPDATE subscriber_counts SET n=g.n FROM (SELECT status, COUNT(*) AS n FROM subscribers GROUP BY status) AS g
  WHERE subscriber_counts.status=g.status;
CREATE TRIGGER subscriber_counts_add AFTER INSERT ON subscribers BEGIN
  UPDATE subscriber_counts SET n=n+1 WHERE status=new.status; END;
CREATE TRIGGER subscriber_counts_drop AFTER DELETE ON subscribers BEGIN
  UPDATE subscriber_counts SET n=n-1 WHERE status=old.status; END;
CREATE TRIGGER subscriber_counts_move AFTER UPDATE OF status ON subscribers BEGIN
  UPDATE subscriber_counts SET n=n-(status=old.status)+(status=new.status) WHERE status IN (old.status, new.status); END;
CREATE INDEX subscribers_unsendable ON subscribers(status, email) WHERE {UNSENDABLE}""")


# The statuses by their short names, for the callers that import them from here.
ACTIVE, UNSUBSCRIBED, BOUNCED, COMPLAINED, PENDING = (
    SubscriberStatus.ACTIVE, SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED,
    SubscriberStatus.PENDING)
STATUSES: tuple[SubscriberStatus, ...] = tuple(SubscriberStatus)

_COLUMNS = "id, email, name, status, created_at, changed_at, source, consent, lang"
#: An address with a character outside printable ASCII, per backend.
#: The condition word for word as each backend's partial index subscribers_unsendable names it.
_NOT_ASCII = {"sqlite": UNSENDABLE, "postgresql": "email ~ '[^ -~]'"}
_SQL_PARAM_CHUNK = 500  # well under SQLite's host-parameter limit on every build


#: Make a reader active again (resubscribed, or a pending signup the editor vouches for), keeping
#: the stored name, source and consent where the new value is empty; see :func:`reactivation`.
REACTIVATE_SQL = (f"UPDATE subscribers SET status='{ACTIVE}', status_reason='', changed_at=?,"
                  " name=CASE WHEN ?<>'' THEN ? ELSE name END,"
                  " source=CASE WHEN ?<>'' THEN ? ELSE source END,"
                  " consent=CASE WHEN ?<>'' THEN ? ELSE consent END WHERE id=?")


def reactivation(now: str, name: str, source: str, consent: str, sid: int) -> tuple:
    """The parameters of :data:`REACTIVATE_SQL`."""
    return (now, name, name, source, source, consent, consent, sid)


class Subscriber(NamedTuple):
    """One row of ``subscribers``."""

    id: int
    email: str
    name: str
    status: str
    created_at: str
    changed_at: str
    source: str
    consent: str
    lang: str = ""  # the language they read (a BCP 47 tag), "" for none: the main edition

    @property
    def is_active(self) -> bool:
        return self.status == ACTIVE

    @classmethod
    def from_row(cls, row: sqlite3.Row | tuple) -> "Subscriber":
        return cls(*tuple(row)[:9])


def reader_status(conn: sqlite3.Connection, subscriber_id: int, *, hold: bool = False) -> str:
    """A reader's status ("" when the reader is gone), looked at right before their message goes out.
    ``hold`` (PostgreSQL, inside the caller's transaction) keeps the row locked FOR SHARE until that
    transaction ends, so an unsubscribe committed meanwhile waits for that one message."""
    found = conn.execute("SELECT status FROM subscribers WHERE id=?" + (" FOR SHARE" if hold else ""),
                         (subscriber_id,)).fetchone()
    return found[0] if found else ""


class SubscriberStore:
    """Subscribers in SQLite. Construct with an open connection, or use :meth:`open`.

    One store (one connection) per thread: the web app and the CLI each make their own.
    """

    def __init__(self, conn: sqlite3.Connection):
        """``conn`` comes from :func:`newsletter.schema.open_database`, which made every table."""
        self.conn = conn
        self._tx_lock = threading.RLock()
        self._tx_depth = 0

    @classmethod
    def open(cls, path: Path | str) -> "SubscriberStore":
        return cls(open_database(path))

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "SubscriberStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- transactions --------------------------------------------------------------
    @contextmanager
    def transaction(self, *, one_statement: bool = False) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (or ``ROLLBACK`` on any exception), queued behind this
        process's other writers (:func:`newsletter.db.write_transaction`; ``one_statement`` as there).

        Nests: an inner block, or a transaction the caller already opened on this
        connection (e.g. the delivery ledger sharing it), is joined, not committed.
        """
        with self._tx_lock:
            if self._tx_depth or self.conn.in_transaction:
                self._tx_depth += 1
                try:
                    yield self.conn
                finally:
                    self._tx_depth -= 1
                return
            with write_transaction(self.conn, one_statement=one_statement):
                self._tx_depth = 1
                try:
                    yield self.conn
                finally:
                    self._tx_depth = 0

    # ---- reads ---------------------------------------------------------------------
    def get(self, id: int) -> Subscriber | None:
        row = self.conn.execute(f"SELECT {_COLUMNS} FROM subscribers WHERE id=?", (int(id),)).fetchone()
        return Subscriber.from_row(row) if row else None

    def get_by_email(self, email: str) -> Subscriber | None:
        try:
            key = normalise_email(email)
        except InputError:
            key = (email or "").strip()
        row = self.conn.execute(f"SELECT {_COLUMNS} FROM subscribers WHERE email=?", (key,)).fetchone()
        return Subscriber.from_row(row) if row else None

    def get_by_token(self, secret: str, token: str, purpose: str = "unsubscribe", *,
                     now: datetime | None = None) -> Subscriber | None:
        """The subscriber a token names, or None unless it verifies (for ``purpose``: unsubscribe
        or confirm). The token's shape is checked before any lookup; an unknown id costs the same."""
        from newsletter.tokens import CONFIRM, verified_confirm_id, verified_subscriber_id

        if purpose == CONFIRM:  # bound to the open request's nonce: see verified_confirm_id
            sid = verified_confirm_id(secret, token, self._confirm_key, now=now)
            return self.get(sid) if sid is not None else self._former(secret, token, purpose, now)
        looked_up: list[Subscriber] = []  # the row the token was checked against: no second read

        def email_of(i: int) -> str | None:
            sub = self.get(i)
            looked_up[:] = [sub] if sub is not None else []
            return sub.email if sub is not None else None

        sid = verified_subscriber_id(secret, token, email_of, purpose, now=now)
        if sid is not None and looked_up and looked_up[0].id == sid:
            return looked_up[0]
        return self.get(sid) if sid is not None else self._former(secret, token, purpose, now)

    def _former(self, secret: str, token: str, purpose: str, now: datetime | None) -> Subscriber | None:
        """A link sent before v3 changed this reader's address (or merged the row away)."""
        sid = self._former_reader(secret, token, purpose, now)
        return self.get(sid) if sid is not None else None

    def _confirm_key(self, sid: int) -> tuple[str, str] | None:
        """(address, signup nonce) of a reader, for checking a confirmation link."""
        row = self.conn.execute("SELECT email, signup_nonce FROM subscribers WHERE id=?", (int(sid),)).fetchone()
        return (row[0], row[1]) if row else None

    def _former_reader(self, secret: str, token: str, purpose: str, now: datetime | None) -> int | None:
        """The reader a valid token made for an id and address v3 changed now is, or None."""
        from newsletter.tokens import token_subscriber_id, verify_token

        old_id = token_subscriber_id(secret, token, now=now)
        row = None if old_id is None else self.conn.execute(
            "SELECT f.subscriber_id, f.email, s.signup_nonce FROM subscriber_former_addresses f"
            " JOIN subscribers s ON s.id = f.subscriber_id WHERE f.old_id=?", (old_id,)).fetchone()
        if row is None or (purpose != "unsubscribe" and row[2]):  # a newer request retired old-format links
            return None
        return row[0] if verify_token(secret, token, row[1], purpose, now=now) else None

    def _resolve(self, id_or_email: int | str) -> Subscriber:
        if isinstance(id_or_email, bool):
            raise TypeError("expected a subscriber id or an email address")
        sub = self.get(id_or_email) if isinstance(id_or_email, int) else self.get_by_email(id_or_email)
        if sub is None:
            raise InputError(f"no subscriber {id_or_email!r}")
        return sub

    def iter_subscribers(self, status: str | None = None, batch: int = 1000) -> Iterator[Subscriber]:
        """Stream subscribers in ascending id order, ``batch`` rows per query (keyset pagination).

        Never holds more than one batch in memory, and never holds a read transaction
        open between batches, so writers (unsubscribes during a send) are not blocked.
        """
        if status is not None:
            _check_status(status)
        if batch < 1:
            raise ValueError("batch must be at least 1")
        last = 0
        while True:
            if status is None:
                rows = self.conn.execute(
                    f"SELECT {_COLUMNS} FROM subscribers WHERE id>? ORDER BY id LIMIT ?", (last, batch)).fetchall()
            else:
                rows = self.conn.execute(
                    f"SELECT {_COLUMNS} FROM subscribers WHERE status=? AND id>? ORDER BY id LIMIT ?",
                    (status, last, batch)).fetchall()
            for row in rows:
                yield Subscriber.from_row(row)
            if len(rows) < batch:
                return
            last = rows[-1][0]

    def iter_records(self, columns: Sequence[str], status: str | None = None,
                     batch: int = 1000) -> Iterator[tuple]:
        """The named columns of every reader (or those of one status), in id order: the whole
        record, for an export. Paged and lock-free like :meth:`iter_subscribers`."""
        known = set(table_columns(self.conn, "subscribers"))
        unknown = [c for c in columns if c not in known]
        if unknown:
            raise ValueError(f"no such subscriber column: {', '.join(unknown)}")
        if status is not None:
            _check_status(status)
        where = "" if status is None else "status=:status AND "
        sql = f"SELECT id, {', '.join(columns)} FROM subscribers WHERE {where}id>:last ORDER BY id LIMIT :n"
        last = 0
        while True:
            rows = self.conn.execute(sql, {"status": status, "last": last, "n": batch}).fetchall()
            for row in rows:
                yield tuple(row)[1:]
            if len(rows) < batch:
                return
            last = rows[-1][0]

    def count(self, status: str | None = None) -> int:
        counts = self.counts()
        if status is None:
            return sum(counts.values())
        _check_status(status)
        return counts[status]

    def counts(self) -> dict[str, int]:
        """Rows per status; every status is present, zero when empty. Read from the counts the
        triggers keep (v6), so the answer costs the same at ten readers as at a million."""
        out = dict.fromkeys(STATUSES, 0)
        for status, n in self.conn.execute("SELECT status, n FROM subscriber_counts"):
            out[status] = n
        return out

    def unsendable(self) -> tuple[int, str | None]:
        """Active readers whose address is not ASCII (a Unicode local part, kept as it was imported
        before such addresses were refused: v3 could not convert it), and one of them: sends fail
        each such reader, so the editor is told before."""
        kind = backend(self.conn)
        hint = "INDEXED BY subscribers_unsendable " if kind == "sqlite" else ""  # PostgreSQL's planner needs none
        n, example = self.conn.execute(f"SELECT COUNT(*), min(email) FROM subscribers {hint}"
                                       f"WHERE status='{SubscriberStatus.ACTIVE}' AND {_NOT_ASCII[kind]}").fetchone()
        return n, example

    def is_active(self, id: int) -> bool:
        row = self.conn.execute("SELECT status FROM subscribers WHERE id=?", (int(id),)).fetchone()
        return bool(row) and row[0] == ACTIVE

    def statuses(self, ids: Sequence[int]) -> dict[int, str]:
        """Current status of each id; ids that no longer exist (removed) are absent — treat as not active."""
        out: dict[int, str] = {}
        ids = [int(i) for i in ids]
        for start in range(0, len(ids), _SQL_PARAM_CHUNK):
            chunk = ids[start:start + _SQL_PARAM_CHUNK]
            marks = ",".join("?" * len(chunk))
            for sid, status in self.conn.execute(
                    f"SELECT id, status FROM subscribers WHERE id IN ({marks})", chunk):
                out[sid] = status
        return out

    # ---- writes --------------------------------------------------------------------
    def add(self, email: str, name: str = "", *, source: str = "", consent: str = "",
            resubscribe: bool = False, lang: str | None = None) -> Subscriber:
        """Add a reader, or return the existing one.

        * new address → inserted as ``active``;
        * existing active → returned, with its name updated when a different non-empty
          ``name`` is given;
        * existing pending (an unconfirmed web signup) → activated: the editor vouches for consent;
        * existing unsubscribed/bounced/complained → :class:`InputError`, unless
          ``resubscribe=True`` (only when the person asked to come back), which reactivates it.

        ``lang`` (a language tag; "" clears it) sets the reader's language, for a new or known reader.
        """
        from newsletter.lang import optional_tag

        tag = optional_tag(lang) if lang is not None else None
        sub = self._add(email, name, source=source, consent=consent, resubscribe=resubscribe)
        if tag is not None and tag != sub.lang:
            return self.set_lang(sub.id, tag)
        return sub

    def set_lang(self, id_or_email: int | str, lang: str) -> Subscriber:
        """Set the language a reader reads (a tag, or "" for none); later deliveries follow it."""
        from newsletter.lang import optional_tag

        tag = optional_tag(lang)
        with self.transaction():
            sub = self._resolve(id_or_email)
            self.conn.execute("UPDATE subscribers SET lang=?, changed_at=? WHERE id=?", (tag, utcnow_text(), sub.id))
        new = self.get(sub.id)
        assert new is not None
        return new

    def _add(self, email: str, name: str = "", *, source: str = "", consent: str = "",
             resubscribe: bool = False) -> Subscriber:
        email = normalise_email(email)
        name = clean_text(name, "name")
        source = clean_text(source, "source")
        consent = clean_text(consent, "consent")
        with self.transaction() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM subscribers WHERE email=?", (email,)).fetchone()
            now = utcnow_text()
            if row is None:
                sid = conn.execute(
                    "INSERT INTO subscribers(email, name, status, created_at, changed_at, source, consent)"
                    f" VALUES(?, ?, '{SubscriberStatus.ACTIVE}', ?, ?, ?, ?) RETURNING "
                    "id", (email, name, now, now, source, consent)
                ).fetchone()[0]
            else:
                existing = Subscriber.from_row(row)
                sid = existing.id
                if existing.status == COMPLAINED:
                    raise _never_reactivated(existing)
                if existing.status in SUPPRESSED or existing.status == PENDING:
                    if not resubscribe and existing.status != PENDING:
                        raise InputError(f"{existing.email} is {existing.status}; it is not reactivated "
                                         "unless you resubscribe it explicitly (resubscribe=True / --resubscribe)")
                    conn.execute(REACTIVATE_SQL, reactivation(now, name, source, consent, sid))
                elif name and name != existing.name:
                    conn.execute("UPDATE subscribers SET name=?, changed_at=? WHERE id=?", (name, now, sid))
                else:
                    return existing
        sub = self.get(sid)
        assert sub is not None
        return sub

    def remove(self, email: str) -> bool:
        """Delete the row entirely. Returns whether one existed.

        This *forgets* the reader: they leave the suppression list too, so a later import
        that contains them would mail them again. To stop mailing someone, prefer
        :meth:`unsubscribe`, which keeps them suppressed. Use ``remove`` for erasure
        requests (e.g. GDPR) where keeping the address is not allowed.
        """
        sub = self.get_by_email(email)
        if sub is None:
            return False
        try:
            with self.transaction() as conn:
                conn.execute("DELETE FROM subscribers WHERE id=?", (sub.id,))
        except sqlite3.IntegrityError:
            raise InputError(f"{sub.email} has delivery records that reference it; "
                             "unsubscribe it instead, or remove it with --forget-deliveries") from None
        return True

    def set_status(self, id_or_email: int | str, status: str, reason: str = "", *,
                   resubscribe: bool = False) -> Subscriber:
        """Set a status exactly. Moving a suppressed reader back to ``active`` needs ``resubscribe=True``.

        Setting the status a reader already has changes nothing (``changed_at`` is kept).
        """
        _check_status(status)
        reason = _one_line(reason)
        with self.transaction():
            sub = self._resolve(id_or_email)
            if sub.status == status:
                return sub
            if status == ACTIVE and sub.status == COMPLAINED:
                raise _never_reactivated(sub)
            if status == ACTIVE and sub.status in SUPPRESSED and not resubscribe:
                raise InputError(f"{sub.email} is {sub.status}; it is not reactivated unless you "
                                 "resubscribe it explicitly (resubscribe=True / --resubscribe)")
            return self._set(sub.id, status, reason)

    def _set(self, sid: int, status: str, reason: str) -> Subscriber:
        """The status change itself, in one statement (a suppression retires any open signup
        request with it): a writer holds the database for as few calls as it can, since each
        lets another thread take the interpreter (see newsletter.db.write_transaction)."""
        row = self._set_from(sid, status, reason)
        assert row is not None, "the caller resolved the reader in this transaction"
        return row

    def _set_from(self, sid: int, status: str, reason: str, only_from: tuple[str, ...] = ()) -> Subscriber | None:
        """:meth:`_set` if the reader's status is one of ``only_from`` now (any, when empty); None when
        it is not (or there is no such reader), with nothing changed: the check and the change are one statement."""
        retire = status in SUPPRESSED
        where = f" AND status IN ({','.join('?' * len(only_from))})" if only_from else ""
        row = self.conn.execute(
            "UPDATE subscribers SET status=?, status_reason=?, changed_at=?,"
            " signup_requested_at=CASE WHEN ? THEN '' ELSE signup_requested_at END,"
            f" signup_nonce=CASE WHEN ? THEN '' ELSE signup_nonce END WHERE id=?{where} RETURNING {_COLUMNS}",
            (status, _one_line(reason), utcnow_text(), retire, retire, sid, *only_from)).fetchone()
        return Subscriber.from_row(row) if row else None

    def change_status_if(self, sid: int, status: str, reason: str, only_from: tuple[str, ...]) -> Subscriber | None:
        """Set reader ``sid``'s status if it is one of ``only_from`` now, in one statement; None (nothing
        changed) when it is not or there is no such reader. The caller decides what that means."""
        with self.transaction(one_statement=True):
            return self._set_from(sid, status, reason, only_from)

    def _suppress_at_once(self, id_or_email: int | str, status: str, reason: str,
                          only_from: tuple[str, ...]) -> Subscriber | None:
        """The usual case of a web request suppressing a reader by id, as one statement (no read,
        no BEGIN or COMMIT while other writers wait); None when the reader is not in ``only_from``
        (or is named by address): the caller then takes the general path, which decides."""
        if type(id_or_email) is not int:
            return None
        with self.transaction(one_statement=True):
            return self._set_from(id_or_email, status, reason, only_from)

    def unsubscribe(self, id_or_email: int | str, reason: str = "") -> Subscriber:
        """Stop mailing a reader. Idempotent: an already suppressed reader is left as it is
        (a complaint or bounce stays recorded as such). A pending signup is unsubscribed too
        ("this was not me"), and any open signup request is cancelled with it."""
        done = self._suppress_at_once(id_or_email, UNSUBSCRIBED, reason, (ACTIVE, PENDING))
        if done is not None:
            return done
        with self.transaction():
            sub = self._resolve(id_or_email)
            if sub.status not in (ACTIVE, PENDING):
                self._retire_signup(sub.id)
                return sub
            return self._set(sub.id, UNSUBSCRIBED, reason)

    def _retire_signup(self, sid: int) -> None:
        """Close any open signup request and retire its nonce: no confirmation link mailed
        before works again (a later request makes a new one)."""
        self.conn.execute("UPDATE subscribers SET signup_requested_at='', signup_nonce='' WHERE id=? "
                          "AND (signup_requested_at<>'' OR signup_nonce<>'')", (sid,))

    def mark_bounced(self, id: int, reason: str) -> Subscriber:
        """Record a hard bounce. A recorded complaint is kept (it is the stronger signal)."""
        done = self._suppress_at_once(int(id), BOUNCED, reason, (ACTIVE, PENDING, UNSUBSCRIBED))
        if done is not None:
            return done
        with self.transaction():
            sub = self._resolve(int(id))
            if sub.status in (BOUNCED, COMPLAINED):
                return sub
            return self._set(sub.id, BOUNCED, reason)

    def mark_complained(self, id: int, reason: str) -> Subscriber:
        """Record a spam complaint: the strongest signal, which nothing ever reactivates."""
        return self.set_status(int(id), COMPLAINED, reason)

    def status_reason(self, id: int) -> str | None:
        """Why a reader has its status (e.g. the bounce diagnostic), or None when unknown id."""
        row = self.conn.execute("SELECT status_reason FROM subscribers WHERE id=?", (int(id),)).fetchone()
        return row[0] if row else None


def _one_line(text: str | None, limit: int = 1000) -> str:
    """A reason (often a multi-line SMTP diagnostic) flattened to one line; never rejected."""
    return compiled(CONTROL_CHARS + "+").sub(" ", text or "").strip()[:limit]


def _never_reactivated(sub: Subscriber) -> InputError:
    """A reader who reported us as spam is never mailed again, whatever a command says."""
    return InputError(f"{sub.email} reported a message as spam (complained); it is never reactivated")


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise InputError(f"unknown status {status!r}; expected one of {', '.join(STATUSES)}")
