"""The delivery component's tables: their migrations (run in order with every other component's by
:func:`newsletter.schema.open_database`), and the ledger's write transaction.

Every statement that shapes ``deliveries``, ``ledger``, ``daily_counts`` and ``delivery_counts``
on SQLite is here (PostgreSQL's are in :mod:`newsletter.pg_schema`); migrations are history,
so their state words stay as they were written.
"""

import sqlite3
from contextlib import contextmanager
from typing import Iterator, Sequence

from newsletter.db import backend, write_transaction
from newsletter.states import OPEN_ROW_STATES, RowState


COMPONENT = "delivery"

MIGRATIONS: list[str] = [
    # v1 — statements are separated by ";\n" (see newsletter.db.migrate)
    """CREATE TABLE deliveries (
  id INTEGER PRIMARY KEY,
  slug TEXT NOT NULL,
  issue_number INTEGER,
  content_hash TEXT NOT NULL,
  subject TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL CHECK (state IN ('scheduled','running','paused','done','cancelled','held')),
  created_at TEXT NOT NULL,
  send_at TEXT,
  started_at TEXT,
  finished_at TEXT,
  frozen_at TEXT,
  resume_at TEXT,
  reason TEXT,
  total INTEGER NOT NULL DEFAULT 0,
  last_batch_no INTEGER NOT NULL DEFAULT 0,
  lock_owner TEXT,
  lock_pid INTEGER,
  lock_host TEXT,
  lock_heartbeat TEXT,
  test INTEGER NOT NULL DEFAULT 0,
  transport TEXT
);
CREATE UNIQUE INDEX deliveries_one_open ON deliveries(slug)
  WHERE test = 0 AND state IN ('scheduled','running','paused','held');
CREATE INDEX deliveries_state ON deliveries(state, send_at);
CREATE TABLE ledger (
  delivery_id INTEGER NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
  subscriber_id INTEGER NOT NULL REFERENCES subscribers(id),
  email TEXT NOT NULL,
  name TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending','sending','sent','retry',
    'failed-temporary','failed-permanent','skipped','uncertain')),
  attempts INTEGER NOT NULL DEFAULT 0,
  last_error TEXT,
  provider_id TEXT,
  batch_no INTEGER,
  retry_batch INTEGER,
  next_attempt_at REAL,
  updated_at TEXT,
  PRIMARY KEY (delivery_id, subscriber_id)
) WITHOUT ROWID;
CREATE INDEX ledger_retry ON ledger(delivery_id, next_attempt_at) WHERE state = 'retry';
CREATE TABLE daily_counts (
  day TEXT NOT NULL,
  transport TEXT NOT NULL,
  count INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (day, transport)
) WITHOUT ROWID""",
]


def _v2_deferred(conn: sqlite3.Connection) -> None:
    """v2: deliveries may be ``deferred``; rows keep their first failure time and uncertain
    resends; each delivery gets a random nonce for its idempotency keys; retry times are
    wall-clock seconds (they were the old process's monotonic clock: due now)."""
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='deliveries'").fetchone()[0]
    old = "'done','cancelled','held')"
    if old in sql:  # a CHECK cannot be altered; the documented writable_schema edit keeps the rows in place
        version = conn.execute("PRAGMA schema_version").fetchone()[0]
        conn.execute("PRAGMA writable_schema=ON")
        conn.execute("UPDATE sqlite_master SET sql=? WHERE type='table' AND name='deliveries'",
                     (sql.replace(old, "'done','cancelled','held','deferred')"),))
        conn.execute(f"PRAGMA schema_version={int(version) + 1}")
        conn.execute("PRAGMA writable_schema=OFF")
    for statement in (
        "DROP INDEX deliveries_one_open",
        "CREATE UNIQUE INDEX deliveries_one_open ON deliveries(slug) "
        "WHERE test = 0 AND state IN ('scheduled','running','paused','held','deferred')",
        "ALTER TABLE deliveries ADD COLUMN nonce TEXT",
        "UPDATE deliveries SET nonce=lower(hex(randomblob(8)))",
        "ALTER TABLE ledger ADD COLUMN first_failure_at REAL",
        "ALTER TABLE ledger ADD COLUMN uncertain_resends INTEGER NOT NULL DEFAULT 0",
        "UPDATE ledger SET next_attempt_at=0 WHERE state='retry'",
    ):
        conn.execute(statement)


MIGRATIONS.append(_v2_deferred)
# v3: the edition (language tag, "" for the main one) each reader is sent, fixed when the list is frozen.
MIGRATIONS.append("ALTER TABLE ledger ADD COLUMN edition TEXT NOT NULL DEFAULT ''")


def _state_list(states: Sequence[str]) -> str:
    return "(" + ",".join(f"'{s}'" for s in states) + ")"


def _state_rows(states: Sequence[str]) -> str:
    return "(VALUES " + ",".join(f"('{s}')" for s in states) + ")"


#: The row states when v4 was written (a migration is history: later states are added by later ones).
_V4_ROW_STATES = ("pending", "sending", "sent", "retry", "failed-temporary", "failed-permanent", "skipped",
                  "uncertain")
_LATEST = (f"CASE WHEN new.state NOT IN {_state_list(OPEN_ROW_STATES)} AND typeof(new.updated_at)='text' "
           "AND new.updated_at > coalesce(latest, '') THEN new.updated_at ELSE latest END")


def _new_delivery_trigger(states: Sequence[str]) -> str:
    """Each new delivery starts with a zero count for every row state."""
    return ("CREATE TRIGGER delivery_counts_new AFTER INSERT ON deliveries BEGIN INSERT OR IGNORE INTO "
            f"delivery_counts(delivery_id, state) SELECT new.id, column1 FROM {_state_rows(states)}; END")


#: v4: readers per (delivery, state), kept current by triggers in the same transaction as the row,
#: so `status` and a send's report read eight rows instead of a delivery's whole ledger (a million
#: rows at a million readers). ``latest`` is the newest time a reader reached a finished state there
#: (text only: a row with an unreadable time counts as no time). A rebuild of ``ledger`` or
#: ``deliveries`` must recreate these triggers. (Statements end in ";\n", so trigger bodies keep
#: theirs on one line: see newsletter.db.migrate.) PostgreSQL's are in newsletter.pg_schema.
_DELIVERY_COUNTS = f"""CREATE TABLE delivery_counts (
  delivery_id INTEGER NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
  state TEXT NOT NULL,
  n INTEGER NOT NULL DEFAULT 0,
  latest TEXT,
  PRIMARY KEY (delivery_id, state)
) WITHOUT ROWID;
{_new_delivery_trigger(_V4_ROW_STATES)};
CREATE TRIGGER delivery_counts_add AFTER INSERT ON ledger BEGIN
  UPDATE delivery_counts SET n=n+1, latest={_LATEST} WHERE delivery_id=new.delivery_id AND state=new.state; END;
CREATE TRIGGER delivery_counts_drop AFTER DELETE ON ledger BEGIN
  UPDATE delivery_counts SET n=n-1 WHERE delivery_id=old.delivery_id AND state=old.state; END;
CREATE TRIGGER delivery_counts_move AFTER UPDATE OF state, updated_at, delivery_id ON ledger BEGIN
  UPDATE delivery_counts SET n=n-1 WHERE delivery_id=old.delivery_id AND state=old.state; """ \
  f"""UPDATE delivery_counts SET n=n+1, latest={_LATEST} WHERE delivery_id=new.delivery_id AND state=new.state; END;
INSERT INTO delivery_counts(delivery_id, state) SELECT d.id, s.column1 FROM deliveries d, {_state_rows(_V4_ROW_STATES)} s;
UPDATE delivery_counts SET n=g.n, latest=g.latest FROM (SELECT delivery_id, state, COUNT(*) AS n,
  MAX(CASE WHEN typeof(updated_at)='text' AND state NOT IN {_state_list(OPEN_ROW_STATES)} THEN updated_at END)
  AS latest FROM ledger GROUP BY delivery_id, state) AS g
  WHERE delivery_counts.delivery_id=g.delivery_id AND delivery_counts.state=g.state"""
MIGRATIONS.append(_DELIVERY_COUNTS)


def _v5_gave_up(conn: sqlite3.Connection) -> None:
    """v5: the final row state after the retry window is ``gave-up`` (it was ``failed-temporary``,
    which now means only a transport's "try again later"). The CHECK is edited in place as in v2;
    the counts move with the rows (v4's trigger), into a ``gave-up`` count every delivery gets."""
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='ledger'").fetchone()[0]
    if "'failed-temporary'" in sql:
        version = conn.execute("PRAGMA schema_version").fetchone()[0]
        conn.execute("PRAGMA writable_schema=ON")
        conn.execute("UPDATE sqlite_master SET sql=? WHERE type='table' AND name='ledger'",
                     (sql.replace("'failed-temporary'", "'gave-up'"),))
        conn.execute(f"PRAGMA schema_version={int(version) + 1}")
        conn.execute("PRAGMA writable_schema=OFF")
    conn.execute("DROP TRIGGER delivery_counts_new")
    conn.execute(_new_delivery_trigger(tuple(RowState)))
    conn.execute("INSERT OR IGNORE INTO delivery_counts(delivery_id, state) SELECT id, 'gave-up' FROM deliveries")
    conn.execute("UPDATE ledger SET state='gave-up' WHERE state='failed-temporary'")
    conn.execute("DELETE FROM delivery_counts WHERE state='failed-temporary'")


MIGRATIONS.append(_v5_gave_up)
# v6: which run claimed a row 'sending' (claim_batch), so a takeover settles only the dead holder's
# readers and never those a live helper has in flight (see begin_run).
MIGRATIONS.append("ALTER TABLE ledger ADD COLUMN claimed_by TEXT")
# v7: `status` reads the newest error and the other editions' readers through small partial indexes,
# not by scanning a delivery's every row (a million readers made it 2-6x slower than ten thousand)
MIGRATIONS.append("""CREATE INDEX ledger_errors ON ledger(delivery_id, updated_at)
  WHERE last_error IS NOT NULL;
CREATE INDEX ledger_editions ON ledger(delivery_id, edition, state) WHERE edition <> ''""")


def retry_index(conn: sqlite3.Connection) -> str:
    """SQLite's hint to read retry rows through the small partial index (PostgreSQL's planner needs none)."""
    return "INDEXED BY ledger_retry " if backend(conn) == "sqlite" else ""


_LEDGER_LOCK = "SELECT pg_advisory_xact_lock(7364928, 2)"  # pg_schema holds (7364928, 1) for migrations


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any exception (KeyboardInterrupt included), queued
    behind this process's other writers (see :func:`newsletter.db.write_transaction`).

    On PostgreSQL a plain BEGIN takes no lock, so the ledger's read-then-write steps (take the
    delivery's lock, freeze the list, claim a batch) take one advisory lock for the transaction:
    senders on every host serialise there as SQLite's writers do, while the web host's store
    writes (unsubscribes, signups, webhooks) never take it and never wait for a sender."""
    with write_transaction(conn):
        if backend(conn) != "sqlite":
            conn.execute(_LEDGER_LOCK)
        yield conn
