"""The reply-to inbox against a real Dovecot on 127.0.0.1, and the whole loop end to end:
send #6 to aiosmtpd, mail comes back into the IMAP box, `newsletter inbox` reads it,
the next send skips exactly the readers it suppressed, `replies 6` shows the reply.

Each test that reads the sent publication runs on SQLite and on PostgreSQL: there the sent
publication is moved with `db copy --to` first, so the Message-IDs and tokens it mailed from
SQLite must still be recognised."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import pytest

from tests import inbox_messages as m
from tests.imap_server import PASSWORD, DovecotServer, Mailbox
from tests.smtp_server import SMTPTestServer
from tests.helpers import REPO, run

pytestmark = pytest.mark.skipif(not Path("/usr/sbin/dovecot").exists() and not shutil.which("dovecot"),
                                reason="Debian's dovecot-imapd is not installed (.ci/run installs it)")

READERS = ["gone", "angry", "li", "leaving", "away", "quiet"]


def addr(who: str) -> str:
    return f"{who}@reader.example"


@pytest.fixture(scope="module")
def imap_server(tmp_path_factory):
    with DovecotServer(tmp_path_factory.mktemp("imap")) as server:
        yield server


@pytest.fixture
def imap(imap_server, request):
    """A fresh folder on the module's Dovecot for each test."""
    name = request.node.name.lower()
    tag = hashlib.sha1(name.encode()).hexdigest()[:8]  # tells apart names that differ past the cut
    return Mailbox(imap_server, "t-" + re.sub(r"[^a-z0-9]+", "-", name)[:50] + "-" + tag)


@pytest.fixture(scope="module")
def sent_once(tmp_path_factory):
    """A publication with only issue #6 and a clean issue #7 and six readers, after #6 was sent
    to all of them through aiosmtpd: each reader's Message-ID, token and subject."""
    root = tmp_path_factory.mktemp("sent") / "pub"
    (root / "issues").mkdir(parents=True)
    shutil.copy(REPO / "newsletter.toml", root / "newsletter.toml")
    shutil.copytree(REPO / "templates", root / "templates")
    shutil.copy(REPO / "issues" / "006-global-governance-of-ai.md", root / "issues")
    shutil.copy(REPO / "tests" / "fixtures" / "007-clean.md", root / "issues" / "007-clean.md")
    csv = root / "readers.csv"
    csv.write_text("email,name\n" + "".join(f"{addr(w)},{w.title()} Reader\n" for w in READERS), encoding="utf-8")
    assert run(root, "subscribers", "import", str(csv)).exit_code == 0
    with SMTPTestServer() as smtp:
        result = run(root, "send", "6", "--yes", "--skip-checks", env=smtp.env())
        assert result.exit_code == 0, result.output
        msgs = [x.parse() for x in smtp.messages]
    out = {}
    for msg in msgs:
        token = re.search(r"subject=unsubscribe%20([^>,\s]+)>", msg["List-Unsubscribe"]).group(1)
        out[msg["To"].addresses[0].addr_spec] = (msg["Message-ID"], token, str(msg["Subject"]))
    assert sorted(out) == sorted(addr(w) for w in READERS)
    return root, out


@pytest.fixture
def sqlite_pub(sent_once, tmp_path) -> Path:
    """This test's own copy of the sent publication (its database holds the real ledger)."""
    return Path(shutil.copytree(sent_once[0], tmp_path / "pub"))


@pytest.fixture(params=["sqlite", "postgresql"])
def pub(request, sqlite_pub) -> Path:
    """The copy on SQLite, or moved into a fresh PostgreSQL database (its ``.env`` names it, and
    the SQLite file is gone, so nothing can read it by mistake)."""
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
        moved = run(sqlite_pub, "db", "copy", "--to", url)
        assert moved.exit_code == 0, moved.output
        (sqlite_pub / "newsletter.db").unlink()
        (sqlite_pub / ".env").write_text(f"NEWSLETTER_DB={url}\n", encoding="utf-8")
    return sqlite_pub


def sql(pub: Path, statement: str) -> None:
    """Run one statement on ``pub``'s database, whichever backend (each autocommits)."""
    from newsletter.config import load_settings
    from newsletter.db import connect

    with closing(connect(load_settings(pub, environ={}).db_target)) as conn:
        conn.execute(statement)


@pytest.fixture
def sent(sent_once):
    return sent_once[1]


def statuses(pub: Path) -> dict[str, str]:
    listing = run(pub, "subscribers", "list").output
    return {line.split("\t")[0]: line.split("\t")[2] for line in listing.splitlines() if "\t" in line}


def inbox(pub: Path, imap: Mailbox, *args: str, security: str = "none", **env: str):
    return run(pub, "inbox", *args, env={**imap.env(security), **env})


# ---- Real IMAP: every class, read twice -----------------------------------------------------------
def test_every_class_is_read_once_and_nothing_changes_in_the_mailbox(pub, imap, sent):
    mid = {a: v[0] for a, v in sent.items()}
    subject = sent[addr("li")][2]
    messages = [
        m.reply(addr("li"), mid[addr("li")]),
        m.reply(addr("quiet"), None, subject=f"Re: {subject}", msgid="<by-subject@reader.example>",
                name="Quiet Reader", body="Short and useful, thanks.\n"),
        m.auto_reply(addr("away"), mid[addr("away")]),
        m.dsn(addr("gone"), mid[addr("gone")]),
        m.arf(addr("angry"), mid[addr("angry")]),
        m.mailed_unsubscribe(addr("leaving"), sent[addr("leaving")][1]),
        m.mailed_unsubscribe(addr("quiet"), sent[addr("quiet")][1][:-4] + "AAAA", msgid="<forged@x.example>"),
        m.other(),
        m.malformed_mime(mid[addr("away")], addr("away")),
        m.wrong_charset(mid[addr("away")], addr("away")),
        m.unknown_charset(mid[addr("away")], addr("away")),
        m.no_message_id(mid[addr("away")], addr("away")),
        m.html_only(mid[addr("away")], addr("away")),
        m.forwarded_issue(addr("away")),
        m.huge_attachment(mid[addr("away")], addr("away"), megabytes=3),
    ]
    imap.append(*messages)

    first = inbox(pub, imap)
    assert first.exit_code == 0, first.output
    assert "Traceback" not in first.output
    lines = [line for line in first.output.splitlines() if re.match(r"^\s+\d+\s", line)]
    assert len(lines) == len(messages)  # one line per message, whatever its shape
    text = first.output
    assert re.search(r"reply\s+a reply \(In-Reply-To/References\) → reply to global-governance-of-ai "
                     r"\(matched by Message-ID\)", text)
    assert "matched by sender and subject" in text
    assert re.search(r"auto-reply\s+an auto-reply: Auto-Submitted: auto-replied", text)
    assert re.search(r"bounce\s+RFC 3464 delivery status: hard bounce for gone@reader.example \(5.1.1\)"
                     r" → hard-bounce applied", text)
    assert re.search(r"complaint\s+an RFC 5965 abuse report \(abuse\) about angry@reader.example → complaint applied",
                     text)
    assert "unsubscribe applied" in text and "the token does not verify: nothing changed" in text
    assert "谢谢你们的通讯" in run(pub, "replies", "6").output  # GB 2312 labelled UTF-8, read anyway
    for note in ("malformed MIME", "not valid utf-8", "unknown charset 'x-klingon-9'", "no Message-ID",
                 "HTML only", "forwarded message", "only the first 256 KB of 3072 KB read"):
        assert note in text, note
    assert f"Read {len(messages)} new message(s)" in text

    assert statuses(pub) == {addr("gone"): "bounced", addr("angry"): "complained", addr("li"): "active",
                             addr("leaving"): "unsubscribed", addr("away"): "active", addr("quiet"): "active"}

    second = inbox(pub, imap)
    assert second.exit_code == 0 and "Read 0 new message(s)." in second.output
    assert imap.count() == len(messages)                 # nothing deleted or moved
    assert imap.seen_flags() == [False] * len(messages)  # read-only: not even \Seen

    digest = run(pub, "replies", "6")
    assert digest.exit_code == 0, digest.output
    assert "Li Wei <l***@reader.example>" in digest.output
    assert "Could you cover the EU AI Act next?" in digest.output
    assert "Fudan" not in digest.output and "sixth edition" not in digest.output
    assert "Quiet Reader <q***@reader.example>" in digest.output
    data = json.loads(run(pub, "replies", "6", "--format", "json").output)
    assert data["counts"]["bounce"] == 1 and data["counts"]["complaint"] == 1
    assert data["counts"]["reply"] == 2 + 6  # two readers, and the six odd replies from "away"
    assert data["counts"]["auto-reply"] == 1      # counted by class, never as a reply
    assert data["counts"]["unsubscribe"] == 1     # the forged one concerns nobody
    assert "I am away" not in json.dumps(data["replies"])
    texts = [r["excerpt"] for r in data["replies"]]
    assert "Great issue, thank you!\nMore on Africa please." in texts   # HTML only, quote dropped
    assert "My slides are attached." in texts                          # huge, read in part
    assert all("@reader.example" not in json.dumps(r).replace("***@reader.example", "") for r in data["replies"])
    md = run(pub, "replies", "6", "--format", "markdown").output
    assert md.startswith("# Replies to The Global Governance") and "| bounce | 1 |" in md


def test_changed_uidvalidity_rereads_but_applies_nothing_twice(pub, imap, sent):
    imap.append(m.dsn(addr("gone"), sent[addr("gone")][0]), m.reply(addr("li"), sent[addr("li")][0]))
    assert inbox(pub, imap).exit_code == 0
    sql(pub, "UPDATE inbox_state SET uidvalidity = uidvalidity + 1")
    again = inbox(pub, imap)
    assert again.exit_code == 0 and again.output.count("already read") == 2
    data = json.loads(run(pub, "replies", "6", "--format", "json").output)
    assert len(data["replies"]) == 1 and data["counts"]["bounce"] == 1


def test_move_processed_files_mail_away(pub, imap, sent):
    imap.append(m.reply(addr("li"), sent[addr("li")][0]), m.other())
    handled = imap.folder + "-handled"  # the server is the module's: one folder per test
    imap.server.create(handled)
    result = inbox(pub, imap, "--move-processed", handled)
    assert result.exit_code == 0, result.output
    assert imap.count() == 0 and imap.count(handled) == 2
    assert "Read 0 new" in inbox(pub, imap).output


def test_move_to_a_missing_folder_is_one_line(pub, imap, sent):
    imap.append(m.other())
    result = inbox(pub, imap, "--move-processed", "No Such Folder")
    assert result.exit_code == 4 and "UID MOVE" in result.output and "Traceback" not in result.output
    assert imap.count() == 1


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_tls_and_starttls(tmp_path, imap, security):
    pub = tmp_path
    imap.append(m.other())
    result = inbox(pub, imap, security=security)
    assert result.exit_code == 0, result.output
    assert "Read 1 new message(s): 1 other." in result.output


@pytest.mark.parametrize("env, needle", [
    ({"IMAP_PASSWORD": "wrong-password-123"}, "AUTHENTICATIONFAILED"),
    ({"IMAP_CA_FILE": ""}, "CERTIFICATE_VERIFY_FAILED"),
    ({"IMAP_SECURITY": "ssl3"}, "IMAP_SECURITY='ssl3'"),
    ({"IMAP_FOLDER": "Nope"}, "opening folder 'Nope' failed"),
    ({"IMAP_FOLDER": "Dossiers reçus"}, "only printable ASCII folder names"),
    ({"IMAP_PASSWORD": "pässword"}, "must be ASCII"),
    ({"IMAP_CA_FILE": "/nonexistent/ca.pem"}, "IMAP_CA_FILE: cannot use /nonexistent/ca.pem"),
    ({"IMAP_SECURITY": "starttls", "IMAP_PORT": "0"}, "IMAP_PORT"),
])
def test_refusals_are_one_line_without_secrets(tmp_path, imap, env, needle):
    pub = tmp_path
    result = inbox(pub, imap, security="tls", **env)
    assert result.exit_code in (3, 4), result.output
    assert needle in result.output and len(result.output.strip().splitlines()) == 1
    assert PASSWORD not in result.output and "wrong-password-123" not in result.output


def test_plaintext_login_to_a_host_that_is_not_loopback_is_refused_unless_opted_in(pub, imap, sent):
    # 0.0.0.0 is not a loopback address, yet Linux connects it to this machine: the real Dovecot
    # answers there, so without the check the password would cross the connection in clear.
    imap.append(m.other())
    refused = inbox(pub, imap, IMAP_HOST="0.0.0.0")
    assert refused.exit_code == 3, refused.output
    assert "IMAP_SECURITY=none" in refused.output and "IMAP_ALLOW_PLAINTEXT" in refused.output
    assert len(refused.output.strip().splitlines()) == 1 and PASSWORD not in refused.output
    assert imap.count() == 1 and "Read 1 new message" not in refused.output
    opted_in = inbox(pub, imap, IMAP_HOST="0.0.0.0", IMAP_ALLOW_PLAINTEXT="1")
    assert opted_in.exit_code == 0 and "Read 1 new message(s): 1 other." in opted_in.output, opted_in.output
    bad_flag = inbox(pub, imap, IMAP_HOST="0.0.0.0", IMAP_ALLOW_PLAINTEXT="maybe")
    assert bad_flag.exit_code == 3 and "IMAP_ALLOW_PLAINTEXT='maybe' is not on or off" in bad_flag.output


@pytest.mark.parametrize("host, allowed", [
    ("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("localhost", True), ("LOCALHOST", True),
    ("0.0.0.0", False), ("10.0.0.7", False), ("imap.example.org", False), ("localhost.example.org", False),
    ("127.0.0.1.example.org", False), ("::ffff:127.0.0.1", False),
])
def test_security_none_is_for_loopback_hosts_only(publication_root, host, allowed):
    from newsletter.config import load_settings
    from newsletter.errors import ConfigError
    from newsletter.inbox import ImapConfig

    env = {"IMAP_HOST": host, "IMAP_USERNAME": "u", "IMAP_PASSWORD": "p", "IMAP_SECURITY": "none"}
    settings = load_settings(publication_root, environ=env)
    if allowed:
        assert ImapConfig.from_settings(settings).security == "none"
    else:
        with pytest.raises(ConfigError, match="IMAP_SECURITY=none"):
            ImapConfig.from_settings(settings)
    for extra in ({"IMAP_ALLOW_PLAINTEXT": "yes"}, {"IMAP_SECURITY": "starttls"}):
        assert ImapConfig.from_settings(load_settings(publication_root, environ={**env, **extra})).host == host


def test_unconfigured_inbox_says_what_to_set(tmp_path):
    result = run(tmp_path, "inbox")
    assert result.exit_code == 3 and "IMAP_HOST is not set" in result.output


def test_worker_loop_reads_the_inbox_until_stopped(pub, imap, sent):
    from newsletter.config import load_settings
    from newsletter.inbox import poll_inbox

    imap.append(m.dsn(addr("gone"), sent[addr("gone")][0]))
    settings = load_settings(pub, environ={"NEWSLETTER_SECRET_KEY": "test-secret", **imap.env()})
    stop, seen, errors = threading.Event(), [], []

    def on_result(r):
        seen.append(r)
        stop.set()

    poll_inbox(settings, stop, interval=3600, on_result=on_result, on_error=errors.append)
    assert [r.handled.category for r in seen] == ["bounce"] and errors == []
    assert statuses(pub)[addr("gone")] == "bounced"


# ---- End to end ---------------------------------------------------------------------------------
def test_end_to_end_the_next_send_skips_exactly_the_suppressed(pub, imap, sent):
    mid = {a: v[0] for a, v in sent.items()}
    imap.append(m.dsn(addr("gone"), mid[addr("gone")]),
                m.arf(addr("angry"), mid[addr("angry")]),
                m.reply(addr("li"), mid[addr("li")]),
                m.mailed_unsubscribe(addr("leaving"), sent[addr("leaving")][1]))
    result = inbox(pub, imap)
    assert result.exit_code == 0 and "Read 4 new message(s): 1 bounce, 1 complaint, 1 reply, 1 unsubscribe." \
        in result.output, result.output

    with SMTPTestServer() as smtp:
        nxt = run(pub, "send", "7", "--yes", "--skip-checks", env=smtp.env())
        assert nxt.exit_code == 0, nxt.output
        got = sorted(smtp.recipients())
    assert got == sorted([addr("li"), addr("away"), addr("quiet")])

    digest = run(pub, "replies", "6")
    assert "Li Wei <l***@reader.example>" in digest.output and "EU AI Act" in digest.output
    status = run(pub, "status", "6")
    assert status.exit_code == 0 and "1 hard, 0 soft" in status.output


def test_forget_older_than_removes_stored_replies(pub, imap, sent):
    imap.append(m.reply(addr("li"), sent[addr("li")][0]))
    inbox(pub, imap)
    sql(pub, "UPDATE inbox_messages SET received_at = '2020-01-01T00:00:00.000000Z'")
    result = run(pub, "replies", "6", "--forget-older-than", "30", "--format", "json")
    assert result.exit_code == 0 and "Forgot 1 message record(s)" in result.output
    assert json.loads(result.output[result.output.index("{"):])["replies"] == []
    assert "Read 0 new" in inbox(pub, imap).output  # forgetting does not make the inbox read it again


def test_a_locked_database_stops_the_run_in_one_line_and_loses_nothing(sqlite_pub, imap, sent, monkeypatch):
    """SQLite's database-wide writer lock (PostgreSQL has none to wait on)."""
    import newsletter.db

    pub = sqlite_pub
    imap.append(m.dsn(addr("gone"), sent[addr("gone")][0]))
    monkeypatch.setattr(newsletter.db, "BUSY_TIMEOUT_MS", 50)
    blocker = sqlite3.connect(pub / "newsletter.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        locked = inbox(pub, imap)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert locked.exit_code == 75 and "database is locked" in locked.output and "Traceback" not in locked.output
    again = inbox(pub, imap)
    assert "Read 1 new message(s): 1 bounce." in again.output and statuses(pub)[addr("gone")] == "bounced"


def test_a_large_backlog_is_searched_in_windows(tmp_path, imap, monkeypatch):
    import newsletter.inbox

    monkeypatch.setattr(newsletter.inbox, "SEARCH_WINDOW", 2)
    imap.append(*(m.other(msgid=f"<o{i}@x.example>") for i in range(5)))
    first = inbox(tmp_path, imap)
    assert first.exit_code == 0 and "Read 5 new message(s): 5 other." in first.output
    assert [int(line.split()[0]) for line in first.output.splitlines()[:5]] == [1, 2, 3, 4, 5]
    imap.append(m.other(msgid="<o6@x.example>"))
    assert "Read 1 new message(s)" in inbox(tmp_path, imap).output


def test_a_different_message_reusing_a_message_id_is_still_read(pub, imap, sent):
    """Issue 16: the Message-ID is a header anyone can set; messages are told apart by their
    content (and read once by UID with UIDVALIDITY), so a reused id drops nothing."""
    reused = "<reused@mx.example>"
    first = m.dsn(addr("gone"), sent[addr("gone")][0], msgid=reused)
    second = m.dsn(addr("angry"), sent[addr("angry")][0], msgid=reused)
    third = m.reply(addr("li"), sent[addr("li")][0], msgid=reused)
    imap.append(first, second, third, first)  # the last: the very same bytes again (a copy)
    result = inbox(pub, imap)
    assert result.exit_code == 0, result.output
    assert result.output.count("hard-bounce applied") == 2 and result.output.count("already read") == 1
    assert statuses(pub)[addr("gone")] == "bounced" and statuses(pub)[addr("angry")] == "bounced"
    data = json.loads(run(pub, "replies", "6", "--format", "json").output)
    assert len(data["replies"]) == 1
    again = inbox(pub, imap)  # read by UID: nothing new
    assert "Read 0 new" in again.output
