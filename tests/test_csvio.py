"""CSV import/export on real files and a real SQLite database, or PostgreSQL (the ``store`` fixture)."""

from __future__ import annotations

import csv
import io
import os

import pytest

from newsletter.csvio import EXPORT_COLUMNS, ImportReport, export_csv, import_csv
from newsletter.errors import InputError
from newsletter.store import SubscriberStore


@pytest.fixture
def store(any_db):
    s = SubscriberStore.open(any_db)
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
                              (4, "c@example.org", "suppressed: complained (never reactivated)")]
    assert store.counts() == {"active": 1, "unsubscribed": 1, "bounced": 1, "complained": 1, "pending": 0}


def test_an_import_never_reactivates_a_suppressed_reader(store, tmp_path):
    """Not a plain list, and (issue 16) no flag: a bulk file is not the reader asking to come back.
    One reader who asked: `subscribers add --resubscribe`."""
    store.add("u@example.org", "Old")
    store.unsubscribe("u@example.org", "link")
    report = import_csv(store, write(tmp_path, "email,name\nu@example.org,New\n"))
    assert report.updated == 0 and report.skipped == [(2, "u@example.org", "suppressed: unsubscribed")]
    assert store.get_by_email("u@example.org").status == "unsubscribed"
    with pytest.raises(TypeError):
        import_csv(store, write(tmp_path, "email\nu@example.org\n"), resubscribe=True)


def test_an_unconfirmed_web_signup_in_the_file_is_activated_as_add_does(store, tmp_path):
    """The editor's list vouches for consent, as `subscribers add` does: the import neither leaves the
    reader pending (to be purged when the link expires) nor reports them "already subscribed"."""
    for email, name in (("p@example.org", "Pat"), ("q@example.org", "Quinn")):
        sid = store.add(email, name).id
        store.conn.execute("UPDATE subscribers SET status='pending', signup_requested_at='2030-01-01T00:00:00.000000Z'"
                           " WHERE id=?", (sid,))
    added = store.add("q@example.org")  # the mechanism the import must agree with
    assert added.status == "active" and added.name == "Quinn"
    report = import_csv(store, write(tmp_path, "email,name,consent\np@example.org,,signed form 2030-01-02\n"))
    assert (report.added, report.updated, report.skipped) == (0, 1, [])
    sub = store.get_by_email("p@example.org")
    assert (sub.status, sub.name, sub.consent) == ("active", "Pat", "signed form 2030-01-02")
    assert store.counts()["pending"] == 0


def test_an_import_never_reactivates_a_complaint(store, tmp_path):
    store.add("c@example.org", "C")
    store.mark_complained(store.get_by_email("c@example.org").id, "ARF abuse report")
    report = import_csv(store, write(tmp_path, "email,name,status\nc@example.org,C,active\n"))
    assert report.updated == 0 and report.skipped == [(2, "c@example.org", "suppressed: complained (never reactivated)")]
    assert store.get_by_email("c@example.org").status == "complained"


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
        assert o == s._replace(id=o.id)  # the whole reader: status, dates, source and consent as they were
    assert other.get_by_email("zoe@example.org").status == "unsubscribed"
    other.close()


def test_import_of_many_rows_is_one_transaction(tmp_path):
    store = SubscriberStore.open(tmp_path / "news.db")  # the statement trace is SQLite's
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


def test_row_with_more_cells_than_the_header_is_a_bad_row(store, tmp_path):
    path = write(tmp_path, "email,name\n"
                           "ana@example.org,Ana, Jr\n"      # 2: unquoted comma in the name
                           "bo@example.org,\"Bo, Jr\"\n"    # 3: quoted: fine
                           "cy@example.org,Cy,\n"           # 4: a trailing empty cell loses nothing
                           "di@example.org;Di\n")           # 5: one cell only: an invalid address
    report = import_csv(store, path)
    assert emails(store) == ["bo@example.org", "cy@example.org"]
    assert [line for line, _ in report.errors] == [2, 5]
    assert "3 cells but the header has 2" in report.errors[0][1]
    assert store.get_by_email("bo@example.org").name == "Bo, Jr"


def test_a_quote_that_never_closes_refuses_the_file_naming_its_line(store, tmp_path):
    path = write(tmp_path, "email,name\n"
                           "ana@example.org,Ana\n"
                           "bo@example.org,\"Bo\n"          # 3: the quote opens here
                           "cy@example.org,Cy\n"
                           "di@example.org,Di\n"
                           "ed@example.org,Ed\n")
    with pytest.raises(InputError) as exc:
        import_csv(store, path)
    assert str(exc.value).startswith(f"{path}:3: a quote opened here never closes")
    assert "3-6" in str(exc.value)
    assert exc.value.exit_code == 2
    assert store.count() == 0


def test_a_quote_that_swallows_rows_and_closes_later_refuses_the_file(store, tmp_path):
    path = write(tmp_path, "email,name,source\n"
                           "ana@example.org,Ana,web\n"
                           "bo@example.org,\"Bo,web\n"       # 3: the quote opens here
                           "cy@example.org,Cy,web\n"
                           "di@example.org,Di,web\n"
                           "ed@example.org,\"Ed\",web\n"     # the next quote closes the runaway cell
                           "fa@example.org,Fa,web\n")
    with pytest.raises(InputError, match=r"list.csv:3: a quoted cell opened here.*whole rows"):
        import_csv(store, path)
    assert store.count() == 0


def test_international_domains_are_stored_as_idna(store, tmp_path):
    path = write(tmp_path, "email,name\n"
                           "idn@bücher.example,Unicode\n"
                           "puny@xn--bcher-kva.example,Puny\n"
                           "ü@example.org,Local\n"          # a non-ASCII local part cannot be sent
                           "IDN@BÜCHER.example,Again\n")
    report = import_csv(store, path)
    assert emails(store) == ["idn@xn--bcher-kva.example", "puny@xn--bcher-kva.example"]
    assert [line for line, _ in report.errors] == [4]
    assert report.skipped == [(5, "IDN@xn--bcher-kva.example", "duplicate of line 2")]
    assert store.get_by_email("idn@bücher.example").name == "Unicode"


def test_export_guards_formulas_in_the_address_and_import_round_trips(store, tmp_path):
    store.add("=1+2@example.org", "Calc")
    store.add("-dash@example.org")
    out = tmp_path / "export.csv"
    with out.open("w", encoding="utf-8", newline="") as fh:
        export_csv(store, fh)
    rows = list(csv.reader(out.open(encoding="utf-8", newline="")))
    assert [r[0] for r in rows[1:]] == ["'=1+2@example.org", "'-dash@example.org"]
    other = SubscriberStore.open(tmp_path / "other.db")
    report = import_csv(other, out)
    assert report.added == 2 and report.errors == []
    assert [s.email for s in other.iter_subscribers()] == ["=1+2@example.org", "-dash@example.org"]
    other.close()


def test_report_keeps_the_first_details_and_counts_all(store, tmp_path):
    from newsletter.csvio import DETAIL_LIMIT

    n = DETAIL_LIMIT + 250
    path = tmp_path / "bad.csv"
    path.write_text("email\n" + "".join(f"bad{i}\n" for i in range(n)) + "ok@example.org\n", encoding="utf-8")
    seen: list[tuple[int, int, int]] = []
    report = import_csv(store, path, progress=lambda rows, done, size: seen.append((rows, done, size)))
    assert report.error_count == n and len(report.errors) == DETAIL_LIMIT
    assert report.errors[-1][0] == DETAIL_LIMIT + 1
    assert report.added == 1 and not report.ok
    assert seen[-1] == (n + 1, path.stat().st_size, path.stat().st_size)
    assert f"{n} error(s)" in report.summary()


def test_a_huge_line_is_refused_without_reading_it_whole(store, tmp_path):
    path = tmp_path / "one-line.csv"
    path.write_text("email,name\nok@example.org," + "x" * (3 << 20), encoding="utf-8")
    with pytest.raises(InputError, match=r"one-line.csv:2: a line longer than"):
        import_csv(store, path)
    assert store.count() == 0


def test_duplicates_across_chunks_name_their_first_line(store, tmp_path):
    from newsletter.csvio import _ROW_CHUNK

    path = tmp_path / "dups.csv"
    lines = [f"u{i}@example.org" for i in range(_ROW_CHUNK * 2 + 5)] + ["U3@EXAMPLE.org"]
    path.write_text("email\n" + "\n".join(lines) + "\n", encoding="utf-8")
    report = import_csv(store, path)
    assert report.added == _ROW_CHUNK * 2 + 5
    assert report.skipped == [(len(lines) + 1, "U3@example.org", "duplicate of line 5")]


def test_cli_import_shows_progress_for_big_files_and_counts_unlisted_rows(tmp_path):
    from click.testing import CliRunner

    from newsletter.cli import cli
    from newsletter.cli.subscribers import PROGRESS_FROM_BYTES
    from newsletter.csvio import DETAIL_LIMIT

    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("email,name\n")
        i = 0
        while fh.tell() < PROGRESS_FROM_BYTES:
            fh.write(f"reader{i}@example.org,Reader {i} {'x' * 40}\n")
            i += 1
        fh.write("".join(f"bad{j}\n" for j in range(DETAIL_LIMIT + 5)))
    env = {"NEWSLETTER_DB": str(tmp_path / "news.db")}
    result = CliRunner().invoke(cli, ["--root", str(tmp_path), "subscribers", "import", str(path)], env=env)
    # The good rows landed, and the exit code says the file was not all good (the last line, why).
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1].startswith(f"error: {path}: {DETAIL_LIMIT + 5} bad row(s) not imported")
    assert "Importing" in result.output and f"{i + DETAIL_LIMIT + 5:,} rows" in result.output
    assert f"Imported {i} new, updated 0, skipped 0, {DETAIL_LIMIT + 5} bad row(s)" in result.output
    assert "5 more bad or skipped row(s) not listed" in result.output


def test_rows_are_checked_without_holding_the_write_lock(tmp_path):
    """A send or the web app may write while a big file is read; only the final apply locks
    (SQLite's database-wide lock: PostgreSQL has none)."""
    import sqlite3

    store = SubscriberStore.open(tmp_path / "news.db")

    path = tmp_path / "big.csv"
    path.write_text("email\n" + "".join(f"u{i}@example.org\n" for i in range(1200)), encoding="utf-8")
    other = sqlite3.connect(store.conn.execute("PRAGMA database_list").fetchone()[2], isolation_level=None,
                            timeout=0)
    writes: list[int] = []

    def progress(rows: int, done: int, size: int) -> None:
        if done < size:  # still reading: another connection can take the write lock at once
            other.execute("BEGIN IMMEDIATE")
            other.execute("UPDATE subscribers SET name='x' WHERE 0")
            other.execute("COMMIT")
            writes.append(rows)

    report = import_csv(store, path, progress=progress)
    other.close()
    assert writes and report.added == 1200


def test_a_fifo_is_refused_not_read(store, tmp_path):
    """Opening a FIFO for reading blocks until a writer comes: the import must not wait for one."""
    fifo = tmp_path / "list.csv"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        import_csv(store, fifo)
    assert store.count() == 0
