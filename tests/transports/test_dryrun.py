"""DryRunTransport: .eml files and a summary in the outbox, and never a socket."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import sys
import threading
from pathlib import Path

import pytest

from newsletter.config import Publication, load_settings
from newsletter.message import PreparedIssue, Recipient
from newsletter.render import RenderedEmail
from newsletter.transports import get_transport
from newsletter.transports.base import Status
from newsletter.transports.dryrun import DryRunTransport, safe_name

SECRET_KEY = "dry-run-secret-key-3c1e9a7b"
SMTP_PASSWORD = "smtp-password-never-on-disk-77"


def prepared(slug: str = "006-global-governance-of-ai", secret_key: str = SECRET_KEY) -> PreparedIssue:
    rendered = RenderedEmail(
        slug=slug, number=6, title="Global governance", subject="Issue 6: global governance of AI",
        preheader="", lang="en", reply_to=None, content_hash="ab" * 32,
        html='<p>Dear %%NAME%%,</p><p><a href="%%UNSUBSCRIBE_URL%%">Unsubscribe</a></p>\n',
        text="Dear %%NAME%%,\n\nUnsubscribe: %%UNSUBSCRIBE_URL%%\n",
    )
    return PreparedIssue(rendered=rendered, publication=Publication(name="Dry Weekly", from_email="news@example.org",
                                                                    base_url="https://news.example.org"),
                         secret_key=secret_key)


def messages(*emails: str, issue: PreparedIssue | None = None):
    issue = issue or prepared()
    return [issue.personalise(Recipient(email=e, name=f"Reader {i}", token=f"tok{i}")) for i, e in enumerate(emails)]


def dry_settings(root: Path, **env: str):
    return load_settings(root=root, environ={"NEWSLETTER_SECRET_KEY": SECRET_KEY, "SMTP_PASSWORD": SMTP_PASSWORD,
                                             "SMTP_USERNAME": "user", "SMTP_HOST": "smtp.example.org", **env})


def eml_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.eml"))


def test_writes_one_eml_per_message_and_a_summary(tmp_path):
    emails = ["ada@example.com", "bob@example.com", "cy@example.com"]
    msgs = messages(*emails)
    t = get_transport(dry_settings(tmp_path))  # NEWSLETTER_TRANSPORT defaults to dryrun
    assert isinstance(t, DryRunTransport) and t.real is False
    with t:
        results = t.send(msgs[:2])
        results += t.send(msgs[2:])
    folder = tmp_path / "outbox" / "006-global-governance-of-ai"
    assert eml_files(folder) == ["00001-ada@example.com.eml", "00002-bob@example.com.eml",
                                 "00003-cy@example.com.eml"]
    assert [r.recipient for r in results] == emails
    assert [r.status for r in results] == [Status.SENT] * 3
    assert [r.provider_id for r in results] == [m.message_id for m in msgs]
    for msg, name in zip(msgs, eml_files(folder)):
        data = (folder / name).read_bytes()
        assert data == msg.as_bytes()
        parsed = email.message_from_bytes(data, policy=email.policy.default)
        assert parsed["To"].addresses[0].addr_spec == msg.to_email
        assert parsed["Message-ID"] == msg.message_id
        assert parsed["Subject"] == "Issue 6: global governance of AI"
        assert parsed["List-Unsubscribe"]
    summary = json.loads((folder / "summary.json").read_text("utf-8"))
    assert summary["count"] == 3
    assert summary["recipients"] == emails
    assert summary["total_bytes"] == sum((folder / n).stat().st_size for n in eml_files(folder))
    assert summary["subject"] == "Issue 6: global governance of AI"
    assert summary["slug"] == "006-global-governance-of-ai"
    assert summary["created"]


def test_outbox_setting_is_used(tmp_path):
    with get_transport(dry_settings(tmp_path, NEWSLETTER_OUTBOX="elsewhere/out")) as t:
        t.send(messages("a@example.com"))
    assert (tmp_path / "elsewhere" / "out" / "006-global-governance-of-ai" / "summary.json").exists()


def test_never_opens_a_socket(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the dry run tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    # Even with SMTP settings present, the default transport stays the dry run.
    with get_transport(dry_settings(tmp_path, SMTP_PORT="587")) as t:
        results = t.send(messages("a@example.com", "b@example.com"))
    assert [r.status for r in results] == [Status.SENT] * 2
    # the guard itself works
    with pytest.raises(AssertionError):
        socket.create_connection(("127.0.0.1", 9))


def test_secrets_never_in_the_files(tmp_path):
    with get_transport(dry_settings(tmp_path)) as t:
        t.send(messages("a@example.com", "b@example.com"))
    files = list((tmp_path / "outbox").rglob("*"))
    assert any(f.name == "summary.json" for f in files) and len([f for f in files if f.suffix == ".eml"]) == 2
    for f in files:
        if f.is_file():
            data = f.read_bytes()
            assert SECRET_KEY.encode() not in data
            assert SMTP_PASSWORD.encode() not in data


@pytest.mark.parametrize("address", [
    "../../escape@example.com",
    "..@example.com",
    "a/b\\c@example.com",
    "/etc/passwd@example.com",
    "x" * 300 + "@example.com",
    ".hidden@example.com",
])
def test_recipient_names_cannot_escape_the_folder(tmp_path, address):
    outbox = tmp_path / "outbox"
    with DryRunTransport(outbox) as t:
        [result] = t.send(messages(address))
    assert result.status is Status.SENT
    folder = outbox / "006-global-governance-of-ai"
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert sorted(p.name for p in written) == sorted(["summary.json", *eml_files(folder)])
    [eml] = eml_files(folder)
    assert eml.startswith("00001-") and len(eml) < 140 and "/" not in eml and "\\" not in eml
    assert all(p.parent == folder for p in written)


def test_slug_cannot_escape_the_outbox(tmp_path):
    outbox = tmp_path / "outbox"
    with DryRunTransport(outbox) as t:
        t.send(messages("a@example.com", issue=prepared(slug="../../../outside")))
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and all(outbox in p.parents for p in written)
    assert all(p.parent.parent == outbox for p in written)


@pytest.mark.parametrize("text", ["", ".", "..", "../..", "a/../b", "CON", "name with spaces", "ünïcode"])
def test_safe_name(text):
    name = safe_name(text, "fallback")
    assert name and name not in (".", "..") and "/" not in name and "\\" not in name
    assert ".." not in name and not name.startswith(".")


def test_second_run_replaces_the_first_unless_appending(tmp_path):
    outbox = tmp_path / "outbox"
    folder = outbox / "006-global-governance-of-ai"
    with DryRunTransport(outbox) as t:
        t.send(messages("a@example.com", "b@example.com", "c@example.com"))
    (folder / "notes.txt").write_text("mine")
    with DryRunTransport(outbox) as t:
        t.send(messages("z@example.com"))
    assert eml_files(folder) == ["00001-z@example.com.eml"]
    assert (folder / "notes.txt").read_text() == "mine"  # only our own files are removed
    assert json.loads((folder / "summary.json").read_text())["recipients"] == ["z@example.com"]

    with DryRunTransport(outbox, append=True) as t:
        t.send(messages("y@example.com"))
    assert eml_files(folder) == ["00001-z@example.com.eml", "00002-y@example.com.eml"]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["recipients"] == ["z@example.com", "y@example.com"] and summary["count"] == 2


def test_close_is_idempotent_and_lazy(tmp_path):
    t = DryRunTransport(tmp_path / "outbox")
    t.close()
    assert not (tmp_path / "outbox").exists()  # nothing sent, nothing written
    t.send(messages("a@example.com"))
    t.close()
    t.close()
    assert (tmp_path / "outbox" / "006-global-governance-of-ai" / "summary.json").exists()


def test_bad_recipient_fails_alone(tmp_path):
    issue = prepared()
    msgs = [issue.personalise(Recipient(email="evil@example.com\r\nBcc: x@example.com", token="t")),
            issue.personalise(Recipient(email="ok@example.com", token="u"))]
    with DryRunTransport(tmp_path / "outbox") as t:
        results = t.send(msgs)
    assert [r.status for r in results] == [Status.FAILED_PERMANENT, Status.SENT]
    assert eml_files(tmp_path / "outbox" / "006-global-governance-of-ai") == ["00001-ok@example.com.eml"]


def test_parallel_instances_share_the_folder(tmp_path):
    """A delivery with concurrency > 1 opens one transport per worker thread."""
    outbox = tmp_path / "outbox"
    folder = outbox / "006-global-governance-of-ai"
    issue = prepared()
    first = DryRunTransport(outbox)
    first.send(messages("early@example.com", issue=issue))
    workers = [DryRunTransport(outbox) for _ in range(3)]
    emails = [[f"w{w}-{i}@example.com" for i in range(40)] for w in range(3)]

    def work(t, mine):
        for i in range(0, len(mine), 5):
            t.send(messages(*mine[i:i + 5], issue=issue))

    threads = [threading.Thread(target=work, args=(t, e)) for t, e in zip(workers, emails)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    for t in [first, *workers]:
        t.close()
    names = eml_files(folder)
    assert len(names) == 121  # the early file was not cleared by the later instances
    assert sorted(int(n[:5]) for n in names) == list(range(1, 122))  # no number used twice
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["count"] == 121
    assert sorted(summary["recipients"]) == sorted(["early@example.com", *sum(emails, [])])


def test_reuse_after_close_keeps_earlier_files(tmp_path):
    t = DryRunTransport(tmp_path / "outbox")
    t.send(messages("a@example.com"))
    t.close()
    t.send(messages("b@example.com"))
    t.close()
    folder = tmp_path / "outbox" / "006-global-governance-of-ai"
    assert eml_files(folder) == ["00001-a@example.com.eml", "00002-b@example.com.eml"]
    assert json.loads((folder / "summary.json").read_text())["count"] == 2


def test_no_reader_string_is_interned(tmp_path, monkeypatch):
    """The interpreter's table of interned strings never shrinks: a string interned per reader
    (pathlib interns every path component on CPython 3.11) made the table, and a dry run's
    peak memory, step up with the list's size. Each message's file name must stay a plain str."""
    interned: list[str] = []
    real_intern = sys.intern

    def spy(text: str) -> str:
        interned.append(text)
        return real_intern(text)

    emails = [f"reader{i}@example.com" for i in range(5)]
    with DryRunTransport(tmp_path / "outbox") as t:
        t.send(messages(*emails[:1]))  # the folder (one per issue) is set up here
        monkeypatch.setattr(sys, "intern", spy)
        results = t.send(messages(*emails[1:]))
    monkeypatch.undo()
    assert [r.status for r in results] == [Status.SENT] * 4
    assert len(eml_files(tmp_path / "outbox" / "006-global-governance-of-ai")) == 5
    assert [s for s in interned if "@example.com" in s] == []
