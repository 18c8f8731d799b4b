"""Export → import restores every reader (issue 16): status, consent record, signup fields and dates;
no import lifts a suppression; and the file checks that keep a list from being read wrong (a column
named twice, a UTF-8 file with one stray cp1252 byte)."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner

from newsletter.cli import cli
from newsletter.clock import FakeClock
from newsletter.csvio import EXPORT_COLUMNS, RECORD, export_csv, import_csv
from newsletter.errors import InputError
from newsletter.signups import Signups
from newsletter.store import STATUSES, SubscriberStore

ENV = {"NEWSLETTER_TRANSPORT": "dryrun", "NEWSLETTER_SECRET_KEY": "test-secret-0123456789"}


def run(root, db, *args):
    return CliRunner().invoke(cli, ["--root", str(root), *args], env={**ENV, "NEWSLETTER_DB": str(db)})


def records(store: SubscriberStore) -> dict[str, tuple]:
    """Every reader's whole record, by address (ids differ between databases)."""
    return {row[0]: row for row in store.iter_records(EXPORT_COLUMNS)}


def populate(store: SubscriberStore) -> None:
    """A list as a real one looks: confirmed web signups with IPs, open requests, an import, a
    reader who left, bounces and complaints; some statuses several times."""
    clock = FakeClock(datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc))
    signups = Signups(store, clock=clock)
    for i in range(6):
        clock.advance(3600)
        decision = signups.request(f"web{i}@example.org", f"Web {i}", ip=f"198.51.100.{i + 1}",
                                   source="web signup", consent="By subscribing you agree")
        if i < 4:
            clock.advance(60)
            signups.confirm(decision.mail.id, ip=f"2001:db8::{i + 1}")
    store.add("cli@example.org", "=Formula, \"quoted\"", source="cli", consent="phoned in 2025-01-01")
    for i in range(3):
        store.add(f"left{i}@example.org", f"Left {i}", source="import:old.csv")
        store.unsubscribe(f"left{i}@example.org", "one-click (RFC 8058)")
    for i in range(2):
        store.mark_bounced(store.add(f"bounce{i}@example.org").id, "550 5.1.1 no such user")
    store.mark_complained(store.add("abuse@example.org", "Zoë").id, "ARF abuse report")
    store.unsubscribe("web0@example.org", "unsubscribe page")  # confirmed, then left: consent kept


@pytest.fixture(params=["sqlite", "postgresql"])
def databases(request, tmp_path) -> tuple:
    """Two empty databases of one backend: the list's, and the one it is restored into."""
    if request.param == "sqlite":
        return tmp_path / "a.db", tmp_path / "b.db"
    make = request.getfixturevalue("pg_database")
    return make(), make()


@pytest.fixture
def original(databases):
    store = SubscriberStore.open(databases[0])
    populate(store)
    yield store
    store.close()


def test_export_then_import_into_an_empty_database_restores_every_reader(original, databases, publication_root,
                                                                          tmp_path):
    before_counts = original.counts()
    assert all(before_counts[s] for s in STATUSES)  # every status is in the test
    out = tmp_path / "export.csv"
    exported = run(publication_root, databases[0], "subscribers", "export", "--out", str(out))
    assert exported.exit_code == 0, exported.output
    imported = run(publication_root, databases[1], "subscribers", "import", str(out))
    assert imported.exit_code == 0, imported.output
    with SubscriberStore.open(databases[1]) as restored:
        assert restored.counts() == before_counts
        assert records(restored) == records(original)  # consent records, IPs, signup fields, dates
        web = Signups(restored).consent(restored.get_by_email("web1@example.org").id)
        assert web.ip == "2001:db8::2" and web.confirmed_at == "2026-03-01T11:02:00.000000Z"


def test_a_restored_list_stays_suppressed_against_this_file_and_any_plain_list(original, tmp_path):
    buf = io.StringIO(newline="")
    export_csv(original, buf)
    path = tmp_path / "export.csv"
    path.write_text(buf.getvalue(), encoding="utf-8", newline="")
    before = records(original)
    again = import_csv(original, path)  # the same export, back into its own database
    assert (again.added, again.updated, again.error_count) == (0, 0, 0)
    assert records(original) == before
    suppressed = [e for e, r in before.items() if r[2] in ("unsubscribed", "bounced", "complained")]
    plain = tmp_path / "plain.csv"
    plain.write_text("email,name\n" + "".join(f"{e},Back\n" for e in suppressed), encoding="utf-8")
    report = import_csv(original, plain)
    assert report.added == report.updated == 0 and report.skipped_count == len(suppressed)
    assert {original.get_by_email(e).status for e in suppressed} <= {"unsubscribed", "bounced", "complained"}
    # A file that says "active" for a reader who left does not bring them back either.
    edited = tmp_path / "edited.csv"
    edited.write_text(buf.getvalue().replace(",unsubscribed,", ",active,"), encoding="utf-8", newline="")
    import_csv(original, edited)
    assert original.get_by_email("left0@example.org").status == "unsubscribed"


def test_a_stronger_status_in_the_file_wins_over_a_weaker_one_in_the_database(any_db, tmp_path):
    store = SubscriberStore.open(any_db)
    store.add("x@example.org", "X")
    store.add("y@example.org")
    path = tmp_path / "f.csv"
    path.write_text("email,status,status_reason,changed_at\n"
                    "x@example.org,unsubscribed,asked by mail,2026-02-01T10:00:00+01:00\n"
                    "y@example.org,active,,\n"
                    "z@example.org,bounced,550 gone,\n", encoding="utf-8")
    report = import_csv(store, path)
    assert (report.added, report.updated) == (1, 1) and report.skipped == [(3, "y@example.org", "already subscribed")]
    x = store.get_by_email("x@example.org")
    assert (x.status, x.changed_at, store.status_reason(x.id)) == ("unsubscribed", "2026-02-01T09:00:00.000000Z",
                                                                   "asked by mail")
    assert store.get_by_email("z@example.org").status == "bounced"
    store.close()


@pytest.mark.parametrize("row, why", [
    ("a@example.org,actve,", "unknown status 'actve'"),
    ("a@example.org,active,yesterday", "created_at: 'yesterday' is not a time"),
    ("a@example.org,active,2026-03-01T09:00:00", "created_at: '2026-03-01T09:00:00' is not a time"),
])
def test_a_bad_record_cell_is_a_bad_row_with_its_line(store_path, row, why):
    store = SubscriberStore.open(store_path / "r.db")
    path = store_path / "bad.csv"
    path.write_text(f"email,status,created_at\nok@example.org,pending,\n{row}\n", encoding="utf-8")
    report = import_csv(store, path)
    assert report.added == 1 and [line for line, _ in report.errors] == [3]
    assert why in report.errors[0][1]
    store.close()


def test_a_bad_ip_is_a_bad_row(store_path):
    store = SubscriberStore.open(store_path / "r.db")
    path = store_path / "bad.csv"
    path.write_text("email,status,consent_ip\na@example.org,active,999.1.1.1\n", encoding="utf-8")
    report = import_csv(store, path)
    assert report.added == 0 and "consent_ip" in report.errors[0][1]
    store.close()


@pytest.fixture
def store_path(tmp_path):
    return tmp_path


def test_a_plain_list_keeps_todays_rules(store_path):
    store = SubscriberStore.open(store_path / "p.db")
    path = store_path / "plain.csv"
    path.write_text("email,name,created_at\nnew@example.org,New,1999-01-01T00:00:00Z\n", encoding="utf-8")
    assert import_csv(store, path).added == 1
    sub = store.get_by_email("new@example.org")
    assert (sub.status, sub.source) == ("active", "import:plain.csv")
    assert not sub.created_at.startswith("1999")  # only an export (a status column) restores dates
    store.close()


def test_the_record_is_one_list_export_and_import_share():
    assert EXPORT_COLUMNS == tuple(c.name for c in RECORD)
    assert EXPORT_COLUMNS[:3] == ("email", "name", "status")


def test_the_import_option_that_lifted_suppressions_is_refused(original, publication_root, tmp_path):
    path = tmp_path / "l.csv"
    path.write_text("email\nleft0@example.org\n", encoding="utf-8")
    result = run(publication_root, tmp_path / "a.db", "subscribers", "import", str(path), "--resubscribe")
    assert result.exit_code == 2 and "subscribers add ADDRESS --resubscribe" in result.output
    assert original.get_by_email("left0@example.org").status == "unsubscribed"


# ---- the file itself ---------------------------------------------------------------------------
@pytest.mark.parametrize("header", ["email,name,email", "Email,E-mail", "email,notes,Notes", "name,email,Full Name"])
def test_a_header_naming_a_column_twice_is_refused(store_path, header, publication_root):
    path = store_path / "twice.csv"
    cells = header.count(",") + 1
    path.write_text(f"{header}\n" + ",".join(f"a{i}@example.org" for i in range(cells)) + "\n", encoding="utf-8")
    store = SubscriberStore.open(store_path / "t.db")
    with pytest.raises(InputError, match="names .* and .*: one column each") as err:
        import_csv(store, path)
    assert err.value.line == 1 and store.count() == 0
    store.close()
    result = run(publication_root, store_path / "t.db", "subscribers", "import", str(path))
    assert result.exit_code == 2 and f"{path}:1: the header names" in result.output
    assert "Traceback" not in result.output


def test_a_utf8_file_with_one_stray_cp1252_byte_is_refused_with_its_line(store_path, publication_root):
    data = ("email,name\nzoe@example.org,Zoë\nx@example.org,Ann\n".encode("utf-8")
            + "y@example.org,Café\n".encode("cp1252") + b"w@example.org,W\n")
    path = store_path / "mixed.csv"
    path.write_bytes(data)
    store = SubscriberStore.open(store_path / "m.db")
    with pytest.raises(InputError, match="line 2 is: the file mixes encodings") as err:
        import_csv(store, path)
    assert err.value.line == 4 and store.count() == 0
    store.close()
    result = run(publication_root, store_path / "m.db", "subscribers", "import", str(path))
    assert result.exit_code == 2 and f"{path}:4: not UTF-8 here" in result.output


def test_the_stray_byte_line_is_counted_as_the_csv_reader_counts_lines(store_path):
    path = store_path / "cr.csv"
    path.write_bytes("email,name\rzoe@example.org,Zoë\rbad@example.org,Caf".encode() + b"\xe9\r")
    store = SubscriberStore.open(store_path / "m.db")
    with pytest.raises(InputError) as err:
        import_csv(store, path)
    assert err.value.line == 3
    store.close()


def test_valid_utf8_is_never_re_decoded_and_pure_cp1252_still_reads(store_path):
    store = SubscriberStore.open(store_path / "e.db")
    good = store_path / "utf8.csv"
    good.write_text("email,name\nzoe@example.org,Zoë\n", encoding="utf-8")
    assert import_csv(store, good).encoding == "utf-8"
    assert store.get_by_email("zoe@example.org").name == "Zoë"
    legacy = store_path / "excel.csv"
    legacy.write_bytes("email,name\r\nann@example.org,Anaïs\r\n".encode("cp1252"))
    report = import_csv(store, legacy)
    assert report.encoding == "cp1252" and store.get_by_email("ann@example.org").name == "Anaïs"
    store.close()


def test_export_reads_every_column_through_one_query_per_page(original):
    rows = list(csv.reader(io.StringIO(_export(original), newline="")))
    assert rows[0] == list(EXPORT_COLUMNS) and len(rows) - 1 == original.count()
    cli_row = next(r for r in rows if r[0] == "cli@example.org")
    assert cli_row[1] == "'=Formula, \"quoted\"" and cli_row[EXPORT_COLUMNS.index("source")] == "cli"


def _export(store: SubscriberStore) -> str:
    buf = io.StringIO(newline="")
    export_csv(store, buf)
    return buf.getvalue()


def test_no_link_made_before_a_restore_confirms_a_restored_request(original, tmp_path):
    """Pending readers come back pending with their request, under a nonce no link was made with."""
    from newsletter.tokens import make_confirm_token, make_token

    secret = "s" * 32
    path = tmp_path / "export.csv"
    path.write_text(_export(original), encoding="utf-8", newline="")
    with SubscriberStore.open(tmp_path / "restored.db") as restored:
        import_csv(restored, path)
        pending = list(restored.iter_subscribers("pending"))
        assert len(pending) == 2
        for sub in pending:
            old_nonce = original.conn.execute("SELECT signup_nonce FROM subscribers WHERE email=?",
                                              (sub.email,)).fetchone()[0]
            for link in (make_token(secret, sub.id, sub.email, "confirm"),
                         make_confirm_token(secret, sub.id, sub.email, old_nonce)):
                assert restored.get_by_token(secret, link, "confirm") is None


# ---- a careless edit or another tool's export never loses who must not be mailed (review) ---------
@pytest.mark.parametrize("cell", ["07/12/2026 05:54", "2026-12-07 05:54:03", "yesterday"])
def test_a_suppressed_row_with_a_bad_date_keeps_its_suppression(store_path, cell):
    """A spreadsheet rewrote a date: the row's other cells are not worth the reader's wish."""
    store = SubscriberStore.open(store_path / "s.db")
    path = store_path / "edited.csv"
    path.write_text(f"email,status,status_reason,changed_at,consent_ip\nbob@example.org,unsubscribed,cli,{cell},\n"
                    f"zed@example.org,complained,ARF,,999.1.1.1\n", encoding="utf-8")
    report = import_csv(store, path)
    assert store.get_by_email("bob@example.org").status == "unsubscribed"
    assert store.get_by_email("zed@example.org").status == "complained"
    assert any(":2: changed_at" in w and "unsubscribed" in w for w in report.warnings), report.warnings
    assert any(":3: consent_ip" in w for w in report.warnings), report.warnings
    plain = store_path / "plain.csv"
    plain.write_text("email\nbob@example.org\nzed@example.org\n", encoding="utf-8")
    import_csv(store, plain)
    assert {store.get_by_email(e).status for e in ("bob@example.org", "zed@example.org")} == {"unsubscribed",
                                                                                             "complained"}
    store.close()


@pytest.mark.parametrize("header, value", [
    ("Subscription Status", "unsubscribed"),  # Mailchimp-like
    ("unsubscribed_at", "2025-01-01"),
    ("UNSUB_TIME", "2025-01-01 10:00:00"),  # Mailchimp's unsubscribed export
    ("subscribed_to_emails", "false"),  # Ghost's members export
    ("active_subscription", "false"),  # Substack's export
    ("email_disabled", "true"),
    ("Bounced", "yes"),
    ("opted out", "yes"),
    ("Subscriber Type", "unsubscribed"),  # Buttondown-like
    ("Email State", "unsubscribed"),
    ("Member Status", "cleaned"),
])
def test_a_plain_list_with_a_column_that_may_say_who_left_is_refused(store_path, publication_root, header, value):
    """A column this import does not read may hold the only record that a reader left: importing the
    file as a plain list would make them active. Refused, naming the column; nothing imported."""
    path = store_path / "other-tool.csv"
    path.write_text(f"email,{header}\nbob@example.org,{value}\n", encoding="utf-8")
    store = SubscriberStore.open(store_path / "o.db")
    with pytest.raises(InputError, match=f"{header!r}") as err:
        import_csv(store, path)
    assert err.value.line == 1 and store.count() == 0
    store.close()
    result = run(publication_root, store_path / "o.db", "subscribers", "import", str(path))
    assert result.exit_code == 2 and "Traceback" not in result.output


@pytest.mark.parametrize("header", ["Subscribed At", "date subscribed", "created_at", "notes (optional)", "Company", "OPTIN_TIME",
                                    "CONFIRM_IP", "Subscriber ID", "State", "State/Province", "Type"])
def test_a_plain_list_with_harmless_extra_columns_still_imports(store_path, header):
    path = store_path / "extra.csv"
    path.write_text(f"email,{header}\nann@example.org,2025-01-01\n", encoding="utf-8")
    store = SubscriberStore.open(store_path / "h.db")
    assert import_csv(store, path).added == 1
    store.close()


def test_the_import_command_shows_the_reports_warnings(publication_root, tmp_path):
    path = tmp_path / "cp.csv"
    path.write_bytes(b"email,name\nz@example.org,Zo\xeb\n")
    result = run(publication_root, tmp_path / "w.db", "subscribers", "import", str(path))
    assert result.exit_code == 0 and "read as Windows-1252" in result.output
