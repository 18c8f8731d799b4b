"""CSV import/export on real files and a real SQLite database."""

from __future__ import annotations

import csv
import io
import os

import pytest

from newsletter.csvio import EXPORT_COLUMNS, ImportReport, export_csv, import_csv
from newsletter.errors import InputError
from newsletter.store import SubscriberStore


@pytest.fixture
def store(tmp_path):
    s = SubscriberStore.open(tmp_path / "news.db")
    yield s
    s.close()


def write(tmp_path, content: str | bytes, name: str = "list.csv"):
    path = tmp_path / name
    if isinstance(content, str):
        path.write_bytes(content.encode("utf-8"))
    else:
        path.write_bytes(content)
    return path


def emails(store):
    return [s.email for s in store.iter_subscribers()]


def test_good_rows_land_and_bad_rows_are_reported_by_line(store, tmp_path):
    path = write(tmp_path, (
        "email,name\n"                       # 1
        "ana@example.org,Ana\n"              # 2
        "not-an-address,Bad\n"               # 3
        ",Empty\n"                           # 4
        '"a@b.c\r\nBcc: x@evil.example",Injected\n'  # 5-6 (one quoted field over two lines)
        "bo@example.org,Bo\n"                # 7
        "\n"                                 # 8 blank: ignored
        "cy@example.org,\"Cy\nMulti\"\n"     # 9-10 name with a line break
        "di@example.org,Di\n"                # 11
    ))
    report = store_import = import_csv(store, path)
    assert isinstance(store_import, ImportReport)
    assert report.added == 3 and report.updated == 0
    assert emails(store) == ["ana@example.org", "bo@example.org", "di@example.org"]
    lines = [line for line, _ in report.errors]
    assert lines == [3, 4, 5, 9]
    reasons = dict(report.errors)
    assert "invalid" in reasons[3]
    assert reasons[4] == "empty email"
    assert "line break" in reasons[5]
    assert "name" in reasons[9]
    assert report.encoding == "utf-8" and not report.warnings
    assert store.get_by_email("ana@example.org").source == "import:list.csv"


def test_duplicates_within_file_and_against_db(store, tmp_path):
    store.add("old@example.org", "Old")
    path = write(tmp_path, (
        "Email Address,Name\n"
        "new@example.org,New\n"          # 2
        "NEW@example.org,Again\n"        # 3 duplicate of 2
        "old@example.org,Old\n"          # 4 already subscribed, same name
        "new@EXAMPLE.org,\n"             # 5 duplicate of 2
    ))
    report = import_csv(store, path)
    assert report.added == 1 and report.updated == 0 and report.errors == []
    assert report.skipped == [
        (3, "NEW@example.org", "duplicate of line 2"),
        (4, "old@example.org", "already subscribed"),
        (5, "new@example.org", "duplicate of line 2"),
    ]
    assert store.count() == 2
    assert store.get_by_email("new@example.org").name == "New"


def test_existing_active_name_is_updated(store, tmp_path):
    store.add("old@example.org", "Old Name")
    report = import_csv(store, write(tmp_path, "email,name\nOLD@example.org,New Name\n"))
    assert (report.added, report.updated, report.skipped) == (0, 1, [])
    assert store.get_by_email("old@example.org").name == "New Name"
    assert store.count() == 1


def test_utf8_bom_and_crlf(store, tmp_path):
    path = write(tmp_path, "\ufeffE-mail,Name,Consent,Source,Ignored\r\n"
                           "zoe@example.org,Zoë Ünal,web form 2025-01-01,signup,x\r\n"
                           "bad,,,,\r\n"
                           "li@example.org,李雷,,,\r\n")
    report = import_csv(store, path, source="cli")
    assert report.encoding == "utf-8-sig"
    assert report.added == 2 and report.errors[0][0] == 3
    zoe = store.get_by_email("zoe@example.org")
    assert zoe.name == "Zoë Ünal" and zoe.consent == "web form 2025-01-01" and zoe.source == "signup"
    li = store.get_by_email("li@example.org")
    assert li.name == "李雷" and li.source == "cli"  # no cell of its own → the import's source


def test_semicolon_separated(store, tmp_path):
    report = import_csv(store, write(tmp_path, "Name;Email\nAna;ana@example.org\n"))
    assert report.added == 1 and store.get_by_email("ana@example.org").name == "Ana"


def test_cp1252_falls_back_with_warning(store, tmp_path):
    path = write(tmp_path, "email,name\r\nzoe@example.org,Zoë\r\nx@example.org,Café “quoted”\r\n".encode("cp1252"))
    report = import_csv(store, path)
    assert report.encoding == "cp1252"
    assert len(report.warnings) == 1 and "cp1252" in report.warnings[0]
    assert store.get_by_email("zoe@example.org").name == "Zoë"
    assert store.get_by_email("x@example.org").name == "Café “quoted”"


def test_binary_garbage_is_refused_naming_the_file(store, tmp_path):
    path = write(tmp_path, bytes(range(256)) * 8 + os.urandom(4096), name="photo.csv")
    with pytest.raises(InputError) as exc:
        import_csv(store, path)
    assert "photo.csv" in str(exc.value)
    assert store.count() == 0


def test_binary_that_decodes_as_cp1252_is_still_refused(store, tmp_path):
    # No byte here is undefined in cp1252, so only the content check can catch it.
    path = write(tmp_path, b"email\n" + b"\x00\x01\x02\x03PK\x03\x04" * 100, name="archive.zip")
    with pytest.raises(InputError, match="archive.zip.*binary"):
        import_csv(store, path)


def test_no_email_column(store, tmp_path):
    path = write(tmp_path, "name,phone\nAna,123\n", name="people.csv")
    with pytest.raises(InputError) as exc:
        import_csv(store, path)
    assert str(exc.value) == f"{path}:1: no 'email' column (found: 'name', 'phone')"
    assert exc.value.exit_code == 2


def test_empty_file(store, tmp_path):
    with pytest.raises(InputError, match="no 'email' column"):
        import_csv(store, write(tmp_path, ""))


def test_missing_file(store, tmp_path):
    with pytest.raises(InputError, match="nope.csv"):
        import_csv(store, tmp_path / "nope.csv")


def test_unsubscribed_not_reactivated(store, tmp_path):
    for e in ("u@example.org", "b@example.org", "c@example.org"):
        store.add(e)
    store.unsubscribe("u@example.org")
    store.mark_bounced(store.get_by_email("b@example.org").id, "550")
    store.set_status("c@example.org", "complained")
    path = write(tmp_path, "email,name\nU@example.org,U\nb@example.org,B\nc@example.org,C\nnew@example.org,N\n")
    report = import_csv(store, path)
    assert report.added == 1 and report.updated == 0
    assert report.skipped == [(2, "U@example.org", "suppressed: unsubscribed"),
                              (3, "b@example.org", "suppressed: bounced"),
                              (4, "c@example.org", "suppressed: complained")]
    assert store.counts() == {"active": 1, "unsubscribed": 1, "bounced": 1, "complained": 1, "pending": 0}


def test_resubscribe_reactivates(store, tmp_path):
    store.add("u@example.org", "Old")
    store.unsubscribe("u@example.org", "link")
    report = import_csv(store, write(tmp_path, "email,name\nu@example.org,New\n"), resubscribe=True)
    assert report.added == 0 and report.updated == 1 and report.skipped == []
    sub = store.get_by_email("u@example.org")
    assert sub.status == "active" and sub.name == "New"
    assert store.status_reason(sub.id) == ""


def test_malformed_csv_imports_nothing(store, tmp_path):
    import csv as _csv
    limit = _csv.field_size_limit()
    path = write(tmp_path, "email,name\nok@example.org,Ok\nbig@example.org," + "x" * (limit + 10) + "\n")
    with pytest.raises(InputError, match=r"list.csv:3: malformed CSV"):
        import_csv(store, path)
    assert store.count() == 0


def test_export_round_trip(store, tmp_path):
    store.add("ana@example.org", "Ana, \"the\" first", source="form", consent="2025-01-01 double opt-in")
    store.add("zoe@example.org", "Zoë")
    store.add("calc@example.org", "=HYPERLINK(\"http://evil\")")
    store.unsubscribe("zoe@example.org")
    buf = io.StringIO(newline="")
    assert export_csv(store, buf) == 3
    text = buf.getvalue()
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert tuple(rows[0]) == EXPORT_COLUMNS
    assert [r[0] for r in rows[1:]] == ["ana@example.org", "zoe@example.org", "calc@example.org"]
    assert rows[3][1].startswith("'=")  # a spreadsheet will not run it as a formula
    assert rows[2][2] == "unsubscribed"

    only_active = io.StringIO()
    assert export_csv(store, only_active, status="active") == 2

    other = SubscriberStore.open(tmp_path / "other.db")
    out = tmp_path / "export.csv"
    with out.open("w", encoding="utf-8", newline="") as fh:
        export_csv(store, fh)
    report = import_csv(other, out)
    assert report.added == 3 and report.errors == []
    for s in store.iter_subscribers():
        o = other.get_by_email(s.email)
        assert (o.email, o.name, o.consent) == (s.email, s.name, s.consent)
        assert o.source == (s.source or "import:export.csv")
    # Statuses are not imported from the status column: a fresh import makes readers active.
    assert other.get_by_email("zoe@example.org").status == "active"
    other.close()


def test_import_of_many_rows_is_one_transaction(store, tmp_path):
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("email,name\r\n")
        for i in range(20_000):
            fh.write(f"user{i}@example.org,User {i}\r\n")
    commits: list[str] = []
    store.conn.set_trace_callback(lambda q: commits.append(q) if q.strip().upper() == "COMMIT" else None)
    report = import_csv(store, path)
    store.conn.set_trace_callback(None)
    assert report.added == 20_000 and report.errors == []
    assert store.count("active") == 20_000
    assert len(commits) == 1
