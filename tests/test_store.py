"""The subscriber store, on real SQLite files and on PostgreSQL (``store`` runs each test on both;
``sqlite_store`` tests what only SQLite has: WAL, PRAGMAs, old files to migrate)."""

from __future__ import annotations

import sqlite3

import pytest

from newsletter.db import connect, migrate
from newsletter.errors import HeaderInjectionError, InputError
from newsletter.store import MIGRATIONS, STATUSES, Subscriber, SubscriberStore


@pytest.fixture
def sqlite_store(tmp_path):
    s = SubscriberStore.open(tmp_path / "news.db")
    yield s
    s.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    target = tmp_path / "news.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    s = SubscriberStore.open(target)
    yield s
    s.close()


def test_add_and_get(store):
    sub = store.add("Sam@Example.ORG", "Sam Li", source="form", consent="double opt-in 2025-01-02")
    assert isinstance(sub, Subscriber)
    assert sub.id >= 1
    assert sub.email == "Sam@example.org"  # local part kept, domain normalised
    assert (sub.name, sub.status, sub.source, sub.consent) == ("Sam Li", "active", "form", "double opt-in 2025-01-02")
    assert sub.created_at.endswith("Z") and sub.created_at == sub.changed_at
    assert store.get(sub.id) == sub
    assert store.get(sub.id + 1000) is None
    assert store.get_by_email("sam@example.org") == sub
    assert store.get_by_email("SAM@EXAMPLE.ORG") == sub
    assert store.get_by_email("nobody@example.org") is None


def test_add_dedupes_case_insensitively(store):
    first = store.add("sam@example.org", "Sam")
    again = store.add("SAM@example.org")
    assert again == first  # unchanged, no new row
    renamed = store.add("Sam@EXAMPLE.org", "Samuel")
    assert renamed.id == first.id and renamed.name == "Samuel"
    assert renamed.email == "sam@example.org"  # stored address is not rewritten
    assert store.count() == 1


def test_unique_case_insensitive_at_the_sql_level(store):
    store.add("sam@example.org")
    with pytest.raises(sqlite3.IntegrityError):
        store.conn.execute("INSERT INTO subscribers(email, created_at, changed_at) VALUES('SAM@example.org','x','x')")


@pytest.mark.parametrize("bad", ["", "   ", "not-an-address", "a@b", "a@b.c\r\nBcc: x@evil.example"])
def test_add_rejects_invalid_addresses(store, bad):
    with pytest.raises(InputError):
        store.add(bad)
    assert store.count() == 0


def test_add_rejects_header_injection_in_name(store):
    with pytest.raises(HeaderInjectionError):
        store.add("sam@example.org", "Sam\r\nBcc: x@evil.example")
    assert store.count() == 0


@pytest.mark.parametrize("how", ["unsubscribe", "bounce", "complain"])
def test_suppressed_never_reactivated_without_resubscribe(store, how):
    sub = store.add("sam@example.org", "Sam")
    if how == "unsubscribe":
        store.unsubscribe("sam@example.org")
    elif how == "bounce":
        store.mark_bounced(sub.id, "550 5.1.1 user unknown")
    else:
        store.set_status(sub.id, "complained", "FBL report")
    status = store.get(sub.id).status
    assert status in ("unsubscribed", "bounced", "complained")
    with pytest.raises(InputError, match="not reactivated|never reactivated"):
        store.add("SAM@example.org", "Sam")
    with pytest.raises(InputError, match="not reactivated|never reactivated"):
        store.set_status(sub.id, "active")
    assert store.get(sub.id).status == status
    assert not store.is_active(sub.id)

    if how == "complain":  # a spam complaint is final: not even an explicit resubscribe undoes it
        with pytest.raises(InputError, match="never reactivated"):
            store.add("sam@example.org", "Sam Again", resubscribe=True)
        with pytest.raises(InputError, match="never reactivated"):
            store.set_status(sub.id, "active", resubscribe=True)
        assert store.get(sub.id).status == "complained"
        return
    back = store.add("sam@example.org", "Sam Again", resubscribe=True)
    assert back.id == sub.id and back.status == "active" and back.name == "Sam Again"
    assert store.is_active(sub.id)
    assert store.status_reason(sub.id) == ""


def test_unsubscribe_is_idempotent_and_keeps_stronger_status(store):
    a = store.add("a@example.org")
    first = store.unsubscribe(a.id, "link")
    assert first.status == "unsubscribed"
    second = store.unsubscribe("A@example.org", "link again")
    assert second == first  # nothing changed, changed_at kept
    assert store.status_reason(a.id) == "link"

    b = store.add("b@example.org")
    store.set_status(b.id, "complained", "abuse report")
    assert store.unsubscribe(b.id).status == "complained"
    assert store.mark_bounced(b.id, "550").status == "complained"

    with pytest.raises(InputError, match="no subscriber"):
        store.unsubscribe("ghost@example.org")


def test_mark_bounced_flattens_multiline_reason(store):
    sub = store.add("a@example.org")
    store.mark_bounced(sub.id, "550-5.1.1 The email account does not exist.\r\n550 5.1.1 Try again")
    assert store.get(sub.id).status == "bounced"
    reason = store.status_reason(sub.id)
    assert "\n" not in reason and "does not exist" in reason and "Try again" in reason


def test_set_status_validates(store):
    sub = store.add("a@example.org")
    with pytest.raises(InputError, match="unknown status"):
        store.set_status(sub.id, "paused")
    assert store.get(sub.id).status == "active"
    with pytest.raises(sqlite3.IntegrityError):  # the CHECK constraint holds even for raw SQL
        store.conn.execute("UPDATE subscribers SET status='paused' WHERE id=?", (sub.id,))


def test_remove_forgets(store):
    sub = store.add("a@example.org")
    store.unsubscribe(sub.id)
    assert store.remove("A@example.org") is True
    assert store.get(sub.id) is None
    assert store.remove("a@example.org") is False
    # Forgotten means no longer suppressed: adding again works without resubscribe.
    assert store.add("a@example.org").status == "active"


def test_streaming_iteration_in_batches(sqlite_store):
    store = sqlite_store
    store.conn.execute("BEGIN")
    store.conn.executemany(
        "INSERT INTO subscribers(email, created_at, changed_at, status) VALUES(?, 'x', 'x', ?)",
        [(f"u{i}@example.org", "unsubscribed" if i % 5 == 0 else "active") for i in range(2500)])
    store.conn.execute("COMMIT")

    queries: list[str] = []
    store.conn.set_trace_callback(queries.append)
    subs = list(store.iter_subscribers(batch=1000))
    store.conn.set_trace_callback(None)
    ids = [s.id for s in subs]
    assert len(ids) == 2500
    assert ids == sorted(ids) and len(set(ids)) == 2500
    selects = [q for q in queries if q.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 3  # 1000 + 1000 + 500: never one query for everything
    assert all("LIMIT" in q for q in selects)

    active = list(store.iter_subscribers(status="active", batch=300))
    assert len(active) == 2000 and all(s.status == "active" for s in active)
    assert [s.id for s in active] == sorted(s.id for s in active)
    assert len(list(store.iter_subscribers(status="unsubscribed", batch=7))) == 500


def test_iteration_survives_a_batch_size_multiple(store):
    for i in range(4):
        store.add(f"u{i}@example.org")
    assert [s.email for s in store.iter_subscribers(batch=2)] == [f"u{i}@example.org" for i in range(4)]
    assert [s.email for s in store.iter_subscribers(batch=1)] == [f"u{i}@example.org" for i in range(4)]


def test_counts_and_statuses(store):
    ids = [store.add(f"u{i}@example.org").id for i in range(6)]
    store.unsubscribe(ids[0])
    store.unsubscribe(ids[1])
    store.mark_bounced(ids[2], "550")
    store.set_status(ids[3], "complained")
    assert store.counts() == {"active": 2, "unsubscribed": 2, "bounced": 1, "complained": 1, "pending": 0}
    assert set(store.counts()) == set(STATUSES)
    assert store.count() == 6 and store.count("active") == 2 and store.count("bounced") == 1
    assert store.is_active(ids[4]) and not store.is_active(ids[0]) and not store.is_active(9999)
    got = store.statuses(ids + [9999])
    assert got == {ids[0]: "unsubscribed", ids[1]: "unsubscribed", ids[2]: "bounced",
                   ids[3]: "complained", ids[4]: "active", ids[5]: "active"}
    with pytest.raises(InputError):
        store.count("paused")


def test_statuses_handles_more_ids_than_sql_parameters(sqlite_store):
    store = sqlite_store
    store.conn.execute("BEGIN")
    store.conn.executemany("INSERT INTO subscribers(id, email, created_at, changed_at) VALUES(?, ?, 'x', 'x')",
                           [(i, f"u{i}@example.org") for i in range(1, 1201)])
    store.conn.execute("COMMIT")
    got = store.statuses(list(range(1, 1201)))
    assert len(got) == 1200 and set(got.values()) == {"active"}


def test_wal_and_foreign_keys(sqlite_store):
    store = sqlite_store
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    assert store.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_schema_has_the_agreed_columns(sqlite_store):
    store = sqlite_store
    cols = [r[1] for r in store.conn.execute("PRAGMA table_info(subscribers)")]
    assert cols[:9] == ["id", "email", "name", "status", "created_at", "changed_at", "source", "consent",
                        "status_reason"]  # v1 first, unchanged; v2 adds the consent record after them
    assert cols[9:14] == ["signup_requested_at", "signup_ip", "consent_requested_at", "consent_confirmed_at",
                          "consent_ip"]
    assert cols[14:] == ["signup_nonce", "lang"]  # v5: confirmation links are bound to one request; v6: editions
    indexes = {r[1] for r in store.conn.execute("PRAGMA index_list(subscribers)")}
    assert "subscribers_status" in indexes


def test_migrations_idempotent_on_reopen(tmp_path):
    path = tmp_path / "news.db"
    s1 = SubscriberStore.open(path)
    sid = s1.add("a@example.org", "A").id
    s1.close()
    s2 = SubscriberStore.open(path)  # re-running migrations must neither fail nor wipe data
    SubscriberStore(s2.conn)
    assert s2.get(sid).name == "A"
    version = s2.conn.execute("SELECT version FROM schema_migrations WHERE component='subscribers'").fetchone()[0]
    assert version == len(MIGRATIONS) == 7
    s2.close()


def test_store_shares_a_connection_with_other_components(tmp_path):
    conn = connect(tmp_path / "news.db")
    migrate(conn, "subscribers", MIGRATIONS)
    store = SubscriberStore(conn)
    conn.execute("CREATE TABLE ledger(subscriber_id INTEGER NOT NULL REFERENCES subscribers(id))")
    sub = store.add("a@example.org")
    conn.execute("INSERT INTO ledger VALUES(?)", (sub.id,))
    with pytest.raises(InputError, match="unsubscribe it instead"):
        store.remove("a@example.org")
    assert store.get(sub.id) is not None  # rolled back


def test_failed_write_rolls_back(store):
    store.add("a@example.org")
    with pytest.raises(RuntimeError):
        with store.transaction() as conn:
            conn.execute("UPDATE subscribers SET name='changed'")
            raise RuntimeError("boom")
    assert store.get_by_email("a@example.org").name == ""
    assert not store.conn.in_transaction


def test_store_writes_join_a_transaction_the_caller_opened(store):
    store.conn.execute("BEGIN IMMEDIATE")
    sub = store.add("a@example.org")
    store.unsubscribe(sub.id)
    assert store.conn.in_transaction  # the store did not commit the caller's transaction
    store.conn.execute("ROLLBACK")
    assert store.get_by_email("a@example.org") is None


def test_v2_migration_rebuilds_a_v1_database_keeping_rows_and_foreign_keys(tmp_path):
    """A database written by v1 (with a delivery row pointing at a reader) upgrades in place."""
    import sqlite3

    from newsletter.db import connect, migrate
    from newsletter.store import MIGRATIONS

    path = tmp_path / "old.db"
    conn = connect(path)
    migrate(conn, "subscribers", MIGRATIONS[:1])
    conn.execute("INSERT INTO subscribers(email, name, status, created_at, changed_at, status_reason)"
                 " VALUES('a@example.org', 'A', 'bounced', 't0', 't1', '550 gone')")
    conn.execute("CREATE TABLE child(id INTEGER PRIMARY KEY, sid INTEGER NOT NULL REFERENCES subscribers(id))")
    conn.execute("INSERT INTO child(sid) VALUES(1)")
    conn.close()
    store = SubscriberStore.open(path)
    sub = store.get(1)
    assert (sub.email, sub.name, sub.status, sub.changed_at) == ("a@example.org", "A", "bounced", "t1")
    assert store.status_reason(1) == "550 gone"
    assert store.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    with pytest.raises(sqlite3.IntegrityError):  # the child's reference still binds to the rebuilt table
        store.conn.execute("DELETE FROM subscribers WHERE id=1")
    store.conn.execute("UPDATE subscribers SET status='pending' WHERE id=1")  # the new CHECK allows it
    with pytest.raises(sqlite3.IntegrityError):
        store.conn.execute("UPDATE subscribers SET status='bogus' WHERE id=1")
    store.close()


def _open_together(path, n):
    """``n`` threads open ``path`` at the same instant; returns (stores opened, errors)."""
    import threading

    errors, stores = [], []
    barrier = threading.Barrier(n)

    def open_it():
        try:
            barrier.wait(timeout=10)
            stores.append(SubscriberStore.open(path))
        except Exception as exc:  # noqa: BLE001 - collected and asserted by the caller
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return stores, errors


def test_v2_rebuild_races_safely_between_two_openers(tmp_path):
    """Two processes (here: threads with their own connections) opening a v1 database at once:
    one rebuilds, the others find it done; none fails, no row is lost."""
    from newsletter.db import connect, migrate
    from newsletter.store import MIGRATIONS

    path = tmp_path / "race.db"
    conn = connect(path)
    migrate(conn, "subscribers", MIGRATIONS[:1])
    conn.executemany("INSERT INTO subscribers(email, created_at, changed_at) VALUES(?, 't', 't')",
                     [(f"r{i}@example.org",) for i in range(200)])
    conn.close()
    stores, errors = _open_together(path, 4)
    assert errors == [] and len(stores) == 4
    assert stores[0].count() == 200
    assert stores[0].conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    for s in stores:
        s.close()


def test_threads_opening_a_fresh_database_at_once_all_succeed(tmp_path):
    """SQLite refuses a concurrent switch to WAL on a fresh file at once ("database is locked",
    no busy wait); connect() retries it, so a web app's threads and a CLI can start together."""
    for i in range(30):
        stores, errors = _open_together(tmp_path / f"fresh{i}.db", 3)
        assert errors == []
        for s in stores:
            s.close()


# ---- v3: addresses stored with a Unicode domain before domains were kept in ASCII -------------
OLD_ROW = ("INSERT INTO subscribers(email, name, status, created_at, changed_at, status_reason) "
           "VALUES(?, ?, ?, ?, ?, ?)")


def old_database(path, rows: list[tuple[str, str, str]]) -> dict[str, int]:
    """A database made by the v2 store (before the IDNA change), holding ``rows`` (email, name,
    status) exactly as it stored them; their ids by address."""
    from newsletter.db import migrate

    conn = connect(path)
    migrate(conn, "subscribers", MIGRATIONS[:2])
    ids = {}
    for i, (email, name, status) in enumerate(rows):
        stamp = f"2025-01-0{i + 1}T00:00:00.000000Z"
        ids[email] = conn.execute(OLD_ROW, (email, name, status, stamp, stamp, f"why {email}")).lastrowid
    conn.close()
    return ids


def test_v3_gives_unicode_domains_their_ascii_form_and_keeps_suppressions(tmp_path):
    from newsletter.ledger import ensure_schema

    path = tmp_path / "old.db"
    ids = old_database(path, [
        ("a@xn--bcher-kva.example", "", "active"), ("a@bücher.example", "Anna", "bounced"),
        ("b@bücher.example", "Bo", "active"), ("b@xn--bcher-kva.example", "Bo", "unsubscribed"),
        ("c@bücher.example", "Cy", "active"), ("jörg@bücher.example", "Jörg", "active"),
        ("d@BÜCHER.example", "Di", "complained"), ("d@bücher.example", "Di", "active"),
    ])
    from newsletter.db import migrate
    from newsletter.ledger import MIGRATIONS as LEDGER

    conn = connect(path)
    from newsletter.events import MIGRATIONS as EVENTS

    migrate(conn, "delivery", LEDGER)  # a delivery frozen before the change, still open
    migrate(conn, "events", EVENTS)
    conn.execute("INSERT INTO feedback_events(dedupe_key, kind, source, subscriber_id, occurred_at, received_at, "
                 "outcome) VALUES('k', 'hard-bounce', 'inbox', ?, 'x', 'x', 'applied')", (ids["a@bücher.example"],))
    d = conn.execute("INSERT INTO deliveries(slug, content_hash, state, created_at, nonce) "
                         "VALUES('five', 'h', 'deferred', 'x', 'n')").lastrowid
    for email, state in (("a@xn--bcher-kva.example", "sent"), ("a@bücher.example", "failed-permanent"),
                         ("c@bücher.example", "retry"), ("b@bücher.example", "pending")):
        conn.execute("INSERT INTO ledger(delivery_id, subscriber_id, email, state) VALUES(?,?,?,?)",
                     (d, ids[email], email, state))
    conn.close()

    store = SubscriberStore.open(path)  # runs v3
    ensure_schema(store.conn)
    got = {s.email: (s.status, s.name) for s in store.iter_subscribers()}
    assert got == {
        "a@xn--bcher-kva.example": ("bounced", "Anna"),  # the suppression wins; the empty name is filled
        "b@xn--bcher-kva.example": ("unsubscribed", "Bo"),
        "c@xn--bcher-kva.example": ("active", "Cy"),
        "jörg@bücher.example": ("active", "Jörg"),  # a Unicode local part cannot be converted: kept as is
        "d@xn--bcher-kva.example": ("complained", "Di"),  # two spellings of one domain: one reader
    }
    assert store.status_reason(ids["a@xn--bcher-kva.example"]) == "why a@bücher.example"
    ledger = sorted(tuple(r) for r in store.conn.execute("SELECT subscriber_id, email, state FROM ledger"))
    assert ledger == sorted([
        (ids["a@xn--bcher-kva.example"], "a@xn--bcher-kva.example", "sent"),  # the sent row stays
        (ids["b@xn--bcher-kva.example"], "b@xn--bcher-kva.example", "pending"),
        (ids["c@bücher.example"], "c@xn--bcher-kva.example", "retry"),
    ])
    event_for = store.conn.execute("SELECT subscriber_id FROM feedback_events").fetchone()[0]
    assert event_for == ids["a@xn--bcher-kva.example"]
    assert store.conn.execute("PRAGMA foreign_key_check").fetchall() == []
    store.close()


def test_a_reader_imported_with_a_unicode_domain_before_v3_gets_the_dry_run_message(publication_root):
    from email import message_from_bytes, policy

    from tests.helpers import run

    old_database(publication_root / "newsletter.db", [("leser@bücher.example", "Leser", "active"),
                                                      ("plain@example.org", "Plain", "active")])
    result = run(publication_root, "send", "6", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Dry run: 2 message(s) for 2 active subscriber(s)" in result.output
    written = [message_from_bytes(p.read_bytes(), policy=policy.default)
               for p in (publication_root / "outbox").rglob("*.eml")]
    assert sorted(m["To"].addresses[0].addr_spec for m in written) == ["leser@xn--bcher-kva.example",
                                                                      "plain@example.org"]


def test_an_address_v3_cannot_convert_is_kept_and_reported(publication_root):
    from tests.helpers import run

    old_database(publication_root / "newsletter.db", [("jörg@bücher.example", "Jörg", "active"),
                                                      ("leser@bücher.example", "Leser", "active")])
    count = run(publication_root, "subscribers", "count")
    assert count.exit_code == 0 and "active: 2" in count.output
    assert "note: 1 active address(es) cannot be sent to, e.g. jörg@bücher.example" in count.output
    dry = run(publication_root, "send", "6", "--dry-run")
    assert dry.exit_code == 1 and "not written: jörg@bücher.example: " in dry.output, dry.output
    assert "Dry run: 1 message(s) for 2 active subscriber(s)" in dry.output


def test_v3_links_sent_to_a_unicode_domain_before_still_unsubscribe(tmp_path):
    """Mail sent before v3 carries tokens made for the Unicode address (and, for a merged row, the
    dropped id): after v3 they must still find the reader, or the reader cannot unsubscribe."""
    from newsletter.tokens import make_token

    path = tmp_path / "old.db"
    ids = old_database(path, [("r@bücher.example", "R", "active"), ("t@xn--bcher-kva.example", "T", "active"),
                              ("t@bücher.example", "T", "active"), ("p@bücher.example", "P", "pending")])
    secret = "s" * 40
    renamed = make_token(secret, ids["r@bücher.example"], "r@bücher.example")
    merged_away = make_token(secret, ids["t@bücher.example"], "t@bücher.example")
    confirm = make_token(secret, ids["p@bücher.example"], "p@bücher.example", "confirm")
    store = SubscriberStore.open(path)  # runs v3
    assert store.get_by_token(secret, renamed).email == "r@xn--bcher-kva.example"
    assert store.get_by_token(secret, merged_away).id == ids["t@xn--bcher-kva.example"]
    assert store.get_by_token(secret, confirm, "confirm").email == "p@xn--bcher-kva.example"
    # still verified: a token for the old id with another address, or the wrong purpose, finds nobody
    assert store.get_by_token(secret, make_token(secret, ids["t@bücher.example"], "x@bücher.example")) is None
    assert store.get_by_token(secret, renamed, "confirm") is None
    store.close()


def test_v3_merge_keeps_the_sent_row_when_the_dropped_address_was_the_one_sent(tmp_path):
    """Both spellings in one open delivery, the Unicode one already sent: the merged reader must not
    be mailed again."""
    from newsletter.db import migrate
    from newsletter.ledger import MIGRATIONS as LEDGER

    path = tmp_path / "old.db"
    ids = old_database(path, [("a@xn--bcher-kva.example", "A", "active"), ("a@bücher.example", "A", "active")])
    conn = connect(path)
    migrate(conn, "delivery", LEDGER)
    d = conn.execute("INSERT INTO deliveries(slug, content_hash, state, created_at, nonce) "
                     "VALUES('five', 'h', 'deferred', 'x', 'n')").lastrowid
    for email, state in (("a@xn--bcher-kva.example", "pending"), ("a@bücher.example", "sent")):
        conn.execute("INSERT INTO ledger(delivery_id, subscriber_id, email, state, provider_id) VALUES(?,?,?,?,?)",
                     (d, ids[email], email, state, f"pid-{state}"))
    conn.close()
    store = SubscriberStore.open(path)
    rows = [tuple(r) for r in store.conn.execute("SELECT subscriber_id, state, provider_id FROM ledger")]
    assert rows == [(ids["a@xn--bcher-kva.example"], "sent", "pid-sent")]
    assert store.conn.execute("PRAGMA foreign_key_check").fetchall() == []
    store.close()


def test_v3_merge_carries_the_consent_record_of_the_status_it_keeps(tmp_path):
    """The ASCII row is a signup never confirmed; the Unicode one an active reader with a consent
    record. The merged reader is active, so it must keep the record that made it active."""
    path = tmp_path / "old.db"
    ids = old_database(path, [("a@xn--bcher-kva.example", "", "pending"), ("a@bücher.example", "A", "active")])
    conn = connect(path)
    conn.execute("UPDATE subscribers SET source='form', consent='', signup_requested_at='2025-02-01' WHERE id=?",
                 (ids["a@xn--bcher-kva.example"],))
    conn.execute("UPDATE subscribers SET source='import', consent='opted in at the fair', "
                 "consent_confirmed_at='2024-05-05', consent_ip='192.0.2.1' WHERE id=?", (ids["a@bücher.example"],))
    conn.close()
    store = SubscriberStore.open(path)
    row = store.conn.execute("SELECT status, source, consent, consent_confirmed_at, consent_ip, signup_requested_at "
                             "FROM subscribers").fetchall()
    assert [tuple(r) for r in row] == [("active", "import", "opted in at the fair", "2024-05-05", "192.0.2.1", "")]
    store.close()


def test_v3_former_addresses_go_with_the_reader(tmp_path):
    """Erasure forgets the old address too, and an id SQLite hands out again inherits no old link."""
    from newsletter.tokens import make_token

    path = tmp_path / "old.db"
    ids = old_database(path, [("a@xn--aaa-ola.example", "", "active"), ("r@bücher.example", "R", "active")])
    secret = "s" * 40
    old_link = make_token(secret, ids["r@bücher.example"], "r@bücher.example")
    store = SubscriberStore.open(path)
    assert store.get_by_token(secret, old_link) is not None
    assert store.remove("r@xn--bcher-kva.example")
    assert store.conn.execute("SELECT COUNT(*) FROM subscriber_former_addresses").fetchone()[0] == 0
    again = store.add("someone@example.org")
    assert again.id == ids["r@bücher.example"]  # the id came back
    assert store.get_by_token(secret, old_link) is None
    store.close()


@pytest.mark.parametrize("ascii_status", STATUSES)
@pytest.mark.parametrize("unicode_status", STATUSES)
def test_v3_merge_of_every_status_pair_keeps_the_stronger(tmp_path, ascii_status, unicode_status):
    """Whichever row holds the suppression, the merged reader keeps it: a bounced, complained or
    unsubscribed address is never mailed again because its other spelling was active."""
    rank = ["pending", "active", "unsubscribed", "bounced", "complained"]
    path = tmp_path / "old.db"
    ids = old_database(path, [("Reader@xn--bcher-kva.example", "", ascii_status),
                              ("reader@Bücher.example", "", unicode_status)])
    store = SubscriberStore.open(path)
    (only,) = list(store.iter_subscribers())
    assert (only.id, only.email) == (ids["Reader@xn--bcher-kva.example"], "Reader@xn--bcher-kva.example")
    assert only.status == max(ascii_status, unicode_status, key=rank.index)
    assert store.get_by_email("READER@bücher.example") == only
    store.close()


def test_v3_stopped_part_way_changes_nothing_and_runs_again(tmp_path):
    """v3 is one transaction: a failure at the second merge (here a trigger; in life a full disk or
    a kill) leaves every row, address and the schema version as they were, and the next open
    does the whole job."""
    path = tmp_path / "old.db"
    rows = [("a@xn--bcher-kva.example", "", "active"), ("a@bücher.example", "", "bounced"),
            ("b@bücher.example", "", "active"), ("c@xn--bcher-kva.example", "", "active"),
            ("c@bücher.example", "", "complained")]
    old_database(path, rows)
    conn = connect(path)
    conn.execute("CREATE TRIGGER stop BEFORE DELETE ON subscribers WHEN old.email='c@bücher.example' "
                 "BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    before = [tuple(r) for r in conn.execute("SELECT * FROM subscribers ORDER BY id")]
    conn.close()
    with pytest.raises(sqlite3.IntegrityError, match="disk full"):
        SubscriberStore.open(path)
    conn = connect(path)
    assert [tuple(r) for r in conn.execute("SELECT * FROM subscribers ORDER BY id")] == before
    assert conn.execute("SELECT version FROM schema_migrations WHERE component='subscribers'").fetchone()[0] == 2
    conn.execute("DROP TRIGGER stop")
    conn.close()
    store = SubscriberStore.open(path)
    assert {(s.email, s.status) for s in store.iter_subscribers()} == {
        ("a@xn--bcher-kva.example", "bounced"), ("b@xn--bcher-kva.example", "active"),
        ("c@xn--bcher-kva.example", "complained")}
    store.close()


def test_v3_two_openers_at_once_convert_once(tmp_path):
    """Two processes (here threads, each with its own connection) opening the old database at the
    same moment: one runs v3, the other finds it done; no error, one row per reader."""
    import threading

    path = tmp_path / "old.db"
    old_database(path, [(f"r{i}@xn--bcher-kva.example", "", "active") for i in range(50)]
                 + [(f"r{i}@bücher.example", "", "unsubscribed") for i in range(50)])
    start, errors, stores = threading.Barrier(2), [], []

    def open_store():
        start.wait()
        try:
            stores.append(SubscriberStore.open(path))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and len(stores) == 2
    assert stores[0].counts() == stores[1].counts() == {**dict.fromkeys(STATUSES, 0), "unsubscribed": 50}
    for s in stores:
        s.close()
