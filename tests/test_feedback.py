"""Applying classified inbox messages to a real SQLite file and to PostgreSQL: who a report is about is proved
by the Message-ID it quotes; forged reports change nobody; each message counts once."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from newsletter import replies
from newsletter.classify import classify
from newsletter.feedback import Applier
from newsletter.ledger import ensure_schema as ensure_ledger
from newsletter.message_ids import make_message_id, real_send_salt, verify_message_id
from newsletter.store import SubscriberStore
from newsletter.tokens import make_token
from tests import inbox_messages as m

SECRET = "feedback-test-secret"
DOMAIN = m.OUR_DOMAIN
SLUG = "global-governance-of-ai"
SUBJECT = "#6 China Scholar Insights: The Global Governance of Artificial Intelligence"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def our_id(email: str, slug: str = SLUG) -> str:
    return make_message_id(SECRET, real_send_salt(slug), slug, email, DOMAIN)


@pytest.fixture
def store(any_db):
    s = SubscriberStore.open(any_db)  # on SQLite and on PostgreSQL (tests/conftest.py)
    ensure_ledger(s.conn)
    cur = s.conn.execute("INSERT INTO deliveries(slug, content_hash, subject, state, created_at) "
                         "VALUES(?, 'h', ?, 'done', 'x') RETURNING id", (SLUG, SUBJECT)).fetchone()
    for who in ("a", "b", "c"):
        sub = s.add(f"{who}@reader.example", f"Reader {who.upper()}")
        s.conn.execute("INSERT INTO ledger(delivery_id, subscriber_id, email, state) VALUES(?,?,?,'sent')",
                       (cur[0], sub.id, sub.email))
    yield s
    s.close()


@pytest.fixture
def applier(store):
    return Applier(store, secret_key=SECRET, sender_domain=DOMAIN, now=NOW)


def status(store, who: str) -> str:
    return store.get_by_email(f"{who}@reader.example").status


def test_message_ids_verify_only_for_their_reader():
    mid = our_id("a@reader.example")
    assert verify_message_id(SECRET, mid, "A@reader.example", DOMAIN)
    assert not verify_message_id(SECRET, mid, "b@reader.example", DOMAIN)
    assert not verify_message_id("other-key", mid, "a@reader.example", DOMAIN)
    assert not verify_message_id(SECRET, mid.replace(DOMAIN, "evil.example"), "a@reader.example", DOMAIN)


def test_bounce_quoting_our_id_applies_once(applier, store):
    raw = m.dsn("a@reader.example", our_id("a@reader.example"))
    first = applier.apply(classify(raw))
    assert first.outcome == "hard-bounce applied" and first.slug == SLUG
    assert status(store, "a") == "bounced"
    assert applier.apply(classify(raw)).outcome == "already read"


def test_forged_bounce_changes_nobody(applier, store):
    forged = f"<{SLUG}.{'0' * 24}@{DOMAIN}>"
    h = applier.apply(classify(m.dsn("a@reader.example", forged)))
    assert "is not one we sent: nothing changed" in h.outcome and status(store, "a") == "active"
    bare = m.dsn("b@reader.example", "<x@y>").replace(b"Message-ID: <x@y>\r\n", b"")
    h = applier.apply(classify(bare.replace(b"Message-Id: <2025", b"Message-Id: <other-2025")))
    assert "quotes no Message-ID of ours" in h.outcome and status(store, "b") == "active"


def test_complaint_with_the_recipient_redacted_finds_the_reader_by_the_id(applier, store):
    h = applier.apply(classify(m.arf("b@reader.example", our_id("b@reader.example"), redact=True)))
    assert h.outcome == "complaint applied" and status(store, "b") == "complained"
    assert status(store, "a") == status(store, "c") == "active"


def test_bounce_naming_another_address_goes_to_the_reader_the_id_was_made_for(applier, store):
    # Forwarded mail: we sent to c@, it bounced at the forwarding target.
    h = applier.apply(classify(m.dsn("c.forwarded@elsewhere.example", our_id("c@reader.example"))))
    assert h.outcome == "hard-bounce applied" and status(store, "c") == "bounced"


def _delivery(store, slug: str, state: str, readers: list[str]) -> None:
    cur = store.conn.execute("INSERT INTO deliveries(slug, content_hash, subject, state, created_at) "
                             "VALUES(?, 'h', ?, ?, 'x') RETURNING id", (slug, f"About {slug}", state)).fetchone()
    for who in readers:
        sub = store.get_by_email(f"{who}@reader.example") or store.add(f"{who}@reader.example")
        store.conn.execute("INSERT INTO ledger(delivery_id, subscriber_id, email, state) VALUES(?,?,?,'sent')",
                           (cur[0], sub.id, sub.email))


def test_forwarded_bounce_about_any_delivery_of_an_older_issue_finds_its_reader(applier, store):
    # Issue 5 went out in two deliveries (the first cancelled part-way: d got it there, e in the
    # second); issue 6 (the fixture's) went out after both. Reports quoting 5's ids, naming the
    # forwarding target rather than our reader, still prove who they are about.
    _delivery(store, "older-issue", "cancelled", ["d"])
    _delivery(store, "older-issue", "done", ["e"])
    for who in ("d", "e"):
        h = applier.apply(classify(m.dsn(f"{who}.fwd@elsewhere.example", our_id(f"{who}@reader.example", "older-issue"),
                                         msgid=f"<fwd-{who}@mx.example>")))
        assert h.outcome == "hard-bounce applied" and h.slug == "older-issue", h
        assert status(store, who) == "bounced"
    complaint = applier.apply(classify(m.arf("a@reader.example", our_id("a@reader.example", "older-issue"),
                                             redact=True)))
    assert "is not one we sent: nothing changed" in complaint.outcome and status(store, "a") == "active"
    forged = applier.apply(classify(m.dsn("c.fwd@elsewhere.example", f"<older-issue.{'1' * 24}@{DOMAIN}>",
                                          msgid="<forged@mx.example>")))
    assert "is not one we sent" in forged.outcome and status(store, "c") == "active"


def test_a_flood_of_forged_reports_costs_one_pass_over_the_readers(applier, store, monkeypatch):
    """Each forged Message-ID of a real issue is looked for among all its readers: per message, that
    is one HMAC per reader (100k readers: about half a second). Forty forged reports must not cost
    forty passes; a real forwarded bounce after them still finds its reader."""
    import hmac as hmac_module

    _delivery(store, SLUG, "cancelled", [f"r{i}" for i in range(150)])
    _delivery(store, SLUG, "done", [f"s{i}" for i in range(150)])
    digests = []
    real_digest = hmac_module.digest
    monkeypatch.setattr(hmac_module, "digest", lambda *a: digests.append(1) or real_digest(*a))
    for n in range(40):
        forged = f"<{SLUG}.{n:024x}@{DOMAIN}>"
        h = applier.apply(classify(m.dsn(f"x{n}@elsewhere.example", forged, msgid=f"<forged-{n}@mx.example>")))
        assert "is not one we sent" in h.outcome
    assert len(digests) <= 303 + 2 * 40  # one pass over the issue's readers, then a lookup (and a check) each
    h = applier.apply(classify(m.dsn("r7.fwd@elsewhere.example", our_id("r7@reader.example"), msgid="<real@mx>")))
    assert h.outcome == "hard-bounce applied" and status(store, "r7") == "bounced"
    assert status(store, "a") == "active"


def test_a_delivery_frozen_during_the_run_is_seen_by_later_reports(applier, store):
    """The issue's ids are made once per run; a delivery of the issue that freezes its readers
    after that (a send beside the inbox in `worker`) must not make their bounces 'not ours': the
    message would be recorded as read and never looked at again."""
    later = store.conn.execute("INSERT INTO deliveries(slug, content_hash, subject, state, created_at) "
                               "VALUES(?, 'h', 's', 'scheduled', 'x') RETURNING id", (SLUG,)).fetchone()[0]  # no readers yet
    forged = applier.apply(classify(m.dsn("x@elsewhere.example", f"<{SLUG}.{'2' * 24}@{DOMAIN}>",
                                          msgid="<forged@mx.example>")))
    assert "is not one we sent" in forged.outcome
    z = store.add("z@reader.example")  # the run starts: readers frozen, the first messages go out
    store.conn.execute("INSERT INTO ledger(delivery_id, subscriber_id, email, state) VALUES(?,?,?,'sent')",
                       (later, z.id, z.email))
    store.conn.execute("UPDATE deliveries SET state='running', frozen_at='2026-03-01T12:00:00.000000Z' WHERE id=?",
                       (later,))
    h = applier.apply(classify(m.dsn("z.fwd@elsewhere.example", our_id("z@reader.example"), msgid="<z@mx.example>")))
    assert h.outcome == "hard-bounce applied" and status(store, "z") == "bounced"


def test_soft_bounces_only_count_until_the_limit(store):
    from newsletter.events import SoftBouncePolicy

    applier = Applier(store, secret_key=SECRET, sender_domain=DOMAIN, now=NOW, policy=SoftBouncePolicy(limit=2))
    for i in range(2):
        raw = m.dsn("a@reader.example", our_id("a@reader.example"), status="4.2.2", msgid=f"<soft{i}@mx.example>")
        assert applier.apply(classify(raw)).outcome == "soft-bounce applied"
        assert status(store, "a") == "active"  # two delay reports about one message: one soft bounce
    _delivery(store, "the-next-issue", "done", ["a"])
    raw = m.dsn("a@reader.example", our_id("a@reader.example", "the-next-issue"), status="4.2.2",
                msgid="<soft-next@mx.example>")
    assert applier.apply(classify(raw)).outcome == "soft-bounce applied"
    assert status(store, "a") == "bounced"  # a second message soft-bounced: the limit of 2 is reached


def test_reply_matching(applier, store):
    by_id = applier.apply(classify(m.reply("stranger@else.example", our_id("a@reader.example"))))
    assert by_id.category == "reply" and "matched by Message-ID" in by_id.outcome
    by_subject = applier.apply(classify(m.reply("b@reader.example", None, subject=f"RE: {SUBJECT}",
                                                msgid="<s@b>")))
    assert "matched by sender and subject" in by_subject.outcome
    stranger = applier.apply(classify(m.reply("stranger@else.example", None, subject=f"Re: {SUBJECT}",
                                              msgid="<s@x>")))
    assert stranger.category == "other" and "answers nothing we sent" in stranger.outcome
    other_domain = applier.apply(classify(m.reply("b@reader.example", f"<{SLUG}.abc@evil.example>",
                                                  subject="Re: hello", msgid="<s@y>")))
    assert other_domain.category == "other"
    d = replies.digest(store.conn, SLUG)
    assert sorted(r.masked_email for r in d.replies) == ["b***@reader.example", "s***@else.example"]  # same Date
    assert d.counts["reply"] == 2 and d.counts["other"] == 0


def test_mailed_unsubscribe_needs_a_valid_token(applier, store):
    b = store.get_by_email("b@reader.example")
    forged = applier.apply(classify(m.mailed_unsubscribe("b@reader.example", make_token("wrong", b.id, b.email))))
    assert "does not verify" in forged.outcome and status(store, "b") == "active"
    good = applier.apply(classify(m.mailed_unsubscribe("anyone@else.example", make_token(SECRET, b.id, b.email),
                                                       msgid="<u2@x>")))
    assert good.outcome == "unsubscribe applied" and good.slug == SLUG and status(store, "b") == "unsubscribed"


def test_forget_keeps_recent_records(applier, store):
    applier.apply(classify(m.reply("a@reader.example", our_id("a@reader.example"))))
    from datetime import timedelta

    assert replies.forget(store.conn, timedelta(days=1), now=NOW) == 0
    assert replies.forget(store.conn, timedelta(days=1), now=NOW + timedelta(days=2)) == 1
    assert replies.digest(store.conn, SLUG).replies == []


# ---- the paste case: `subscribers unsubscribe` takes what a reader mailed -------------------------
@pytest.mark.parametrize("shape", ["{t}", "unsubscribe {t}", "  Unsubscribe   {t} ",
                                   "mailto:news@example.org?subject=unsubscribe%20{t}"])
def test_cli_unsubscribe_accepts_the_pasted_subject(tmp_path, shape):
    from tests.helpers import run

    root = tmp_path / "pub"
    root.mkdir()
    assert run(root, "subscribers", "add", "reader@example.org").exit_code == 0
    token = make_token("test-secret", 1, "reader@example.org")  # test_cli's NEWSLETTER_SECRET_KEY
    result = run(root, "subscribers", "unsubscribe", shape.format(t=token))
    assert result.exit_code == 0, result.output
    assert "Unsubscribed reader@example.org." in result.output


@pytest.mark.parametrize("text", ["unsubscribe 1.AAAAAAAAAAAAAAAAAAAAAA", "unsubscribe me", "1.x" * 300])
def test_cli_unsubscribe_refuses_forged_or_garbled_in_one_line(tmp_path, text):
    from tests.helpers import run

    root = tmp_path / "pub"
    root.mkdir()
    run(root, "subscribers", "add", "reader@example.org")
    result = run(root, "subscribers", "unsubscribe", text)
    assert result.exit_code == 2 and "neither an address nor a valid unsubscribe token" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "active: 1" in run(root, "subscribers", "count").output


def test_worker_polls_only_when_the_inbox_is_configured(tmp_path):
    import threading

    from newsletter.config import load_settings
    from newsletter.inbox import start_inbox_polling

    stop = threading.Event()
    stop.set()  # the thread, if started, returns at once
    polls = lambda env: start_inbox_polling(load_settings(tmp_path, environ=env), stop, print, print)  # noqa: E731
    assert polls({}) is None
    assert polls({"IMAP_HOST": "127.0.0.1", "NEWSLETTER_INBOX_POLL": "0"}) is None
    assert polls({"IMAP_HOST": "127.0.0.1"}) == 15
    assert polls({"IMAP_HOST": "127.0.0.1", "NEWSLETTER_INBOX_POLL": "2.5"}) == 2.5


def test_replies_command_errors_are_one_line(tmp_path):
    from tests.helpers import run

    neither = run(tmp_path, "replies")
    assert neither.exit_code == 2 and "give an ISSUE" in neither.output
    unknown = run(tmp_path, "replies", "99")
    assert unknown.exit_code == 2 and len(unknown.output.strip().splitlines()) == 1
    too_long = run(tmp_path, "replies", "--forget-older-than", "99999999")
    assert too_long.exit_code == 2 and "Traceback" not in too_long.output


def test_ids_quoted_in_a_body_never_put_escapes_on_the_terminal(applier):
    raw = ("From: MAILER-DAEMON@mx.example\r\nSubject: failure notice\r\nMessage-ID: <esc@mx>\r\n\r\n"
           "Hi. This is the qmail-send program at mx.example.\r\n"
           "I'm afraid I wasn't able to deliver your message to the following addresses.\r\n"
           "This is a permanent error; I've given up. Sorry it didn't work out.\r\n\r\n"
           "<a@reader.example>:\r\nSorry, no mailbox here by that name. (#5.1.1)\r\n\r\n"
           "--- Below this line is a copy of the message.\r\n\r\n"
           "Message-ID: <\x1b]0;pwned\x07@chinaffairs.example.org>\r\n").encode()
    line = applier.apply(classify(raw)).line()
    assert "\x1b" not in line and "\x07" not in line and "not one we sent" in line
