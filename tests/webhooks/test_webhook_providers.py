"""Every provider's webhook over real HTTP: valid events change the store once; forged,
tampered, stale, replayed, oversized and malformed requests change nothing.

Signed with keys generated in the tests; time is the app's injected FakeClock.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from datetime import timedelta

import pytest

from newsletter.db import connect
from newsletter.events import delivery_event_counts
from newsletter.web.app import DB_ATTEMPTS
from newsletter.webhooks import MAX_BODY_BYTES
from tests.webhooks.conftest import HTTP
from tests.webhooks.kits import KITS, NOW, READERS

ALL = sorted(KITS)
TIMESTAMPED = sorted(n for n, k in KITS.items() if k.timestamped)
BODY_SIGNED = sorted(n for n, k in KITS.items() if k.body_signed)
A, B, C = READERS


@pytest.fixture(params=ALL)
def kit(request, keys):
    return KITS[request.param](keys)


def send(site, kit, kind, email, ident, **sign):
    signed = kit.sign(kit.payload(kind, email, ident), at=sign.pop("at", NOW), **sign)
    return site.post(kit.name, signed.body, signed.headers, signed.query)


def unchanged(site):
    return site.statuses() == {e: "active" for e in READERS} and site.event_rows() == 0


def test_hard_bounce_and_complaint_change_their_readers_once(site, kit):
    r = send(site, kit, "hard", A, "h1")
    assert r.status_code == 200, r.text
    assert r.json()["applied"] == 1
    assert site.statuses() == {A: "bounced", B: "active", C: "active"}
    again = send(site, kit, "hard", A, "h1")  # the provider delivers the same event again, freshly signed
    assert again.status_code == 200 and again.json()["duplicate"] == 1
    assert send(site, kit, "complaint", B, "c1").status_code == 200
    assert site.statuses() == {A: "bounced", B: "complained", C: "active"}
    send(site, kit, "hard", B, "c2")  # a later bounce never undoes the complaint
    assert site.status(B) == "complained"
    assert site.event_rows() == 3


def test_forged_or_missing_credentials_are_refused(site, keys, kit):
    forged = send(site, kit, "hard", A, "f1", forged=True)
    assert forged.status_code == 401
    for secret in (keys.shared, keys.mailgun, keys.resend, keys.sendgrid_public()):
        assert secret not in forged.text
    assert len(forged.text.splitlines()) == 1
    signed = kit.sign(kit.payload("hard", A, "m1"), at=NOW)
    bare = {k: v for k, v in signed.headers.items() if k == "Content-Type"}
    body = signed.body
    if kit.name == "mailgun":
        body = body.replace(b'"signature": {', b'"unsigned": {')
    if kit.name == "ses":
        body = body.replace(b'"Signature": "', b'"Signature": "AAAA')
    assert site.post(kit.name, body, bare).status_code == 401
    assert unchanged(site)


def test_soft_bounces_are_counted_then_suppress(site, kit):
    # NEWSLETTER_SOFT_BOUNCE_LIMIT=2 in the test environment
    assert send(site, kit, "soft", C, "s1").status_code == 200
    assert site.status(C) == "active"
    assert send(site, kit, "soft", C, "s1").json()["duplicate"] == 1  # the same soft bounce counts once
    assert site.status(C) == "active"
    assert send(site, kit, "soft", C, "s2").status_code == 200
    assert site.status(C) == "bounced"


def test_unknown_event_type_is_ignored_with_200(site, kit):
    r = send(site, kit, "unknown", A, "u1")
    assert r.status_code == 200, r.text
    assert r.json()["events"] == 0
    assert unchanged(site)


@pytest.mark.parametrize("name", BODY_SIGNED)
def test_tampered_body_is_refused(site, keys, name):
    kit = KITS[name](keys)
    signed = kit.sign(kit.payload("hard", A, "t1"), at=NOW)
    tampered = signed.body.replace(A.encode(), B.encode())
    assert tampered != signed.body
    assert site.post(name, tampered, signed.headers).status_code == 401
    assert unchanged(site)


@pytest.mark.parametrize("name", TIMESTAMPED)
@pytest.mark.parametrize("late", [True, False])
def test_stale_or_future_timestamp_is_refused(site, keys, name, late):
    from newsletter.webhooks import PROVIDERS

    kit = KITS[name](keys)
    signed = kit.sign(kit.payload("hard", A, "st1"), at=NOW)
    # our clock moves; the signed timestamp stays. Past: the provider's retry span (5 minutes,
    # Mailgun's 8.5 hours as it may retry with the first signature); future: 5 minutes for all.
    site.clock.advance(PROVIDERS[name].tolerance.total_seconds() + 1 if late else -301)
    assert site.post(name, signed.body, signed.headers).status_code == 403
    assert unchanged(site)


@pytest.mark.parametrize("name", TIMESTAMPED)
def test_timestamp_within_tolerance_is_accepted(site, keys, name):
    kit = KITS[name](keys)
    signed = kit.sign(kit.payload("hard", A, "ok1"), at=NOW)
    site.clock.advance(290)
    assert site.post(name, signed.body, signed.headers).status_code == 200
    assert site.status(A) == "bounced"


def test_mailgun_replayed_token_is_refused(site, keys):
    kit = KITS["mailgun"](keys)
    signed = kit.sign(kit.payload("soft", A, "r1"), at=NOW, token="t" * 50)
    assert site.post("mailgun", signed.body, signed.headers).status_code == 200
    replay = kit.sign(kit.payload("soft", A, "r2"), at=NOW, token="t" * 50)  # another event, the same token
    assert site.post("mailgun", replay.body, replay.headers).status_code == 403
    assert site.status(A) == "active" and site.event_rows() == 1  # the limit is 2: the replay did not count


def test_mailgun_tokens_are_forgotten_once_stale(site, keys):
    from newsletter.webhooks import PROVIDERS

    kit = KITS["mailgun"](keys)
    for i in range(3):
        signed = kit.sign(kit.payload("unknown", A, f"p{i}"), at=site.clock.now())
        assert site.post("mailgun", signed.body, signed.headers).status_code == 200
        site.clock.advance(PROVIDERS["mailgun"].tolerance.total_seconds() / 2 + 400)
    with closing(connect(site.db)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM webhook_nonces").fetchone()[0] <= 2


def test_unconfigured_provider_is_404_and_changes_nothing(make_site, keys, kit):
    site = make_site(env={})
    r = send(site, kit, "hard", A, "n1")
    assert r.status_code == 404
    assert unchanged(site)


def test_unknown_provider_is_404(site):
    assert site.post("sparkpost", b"{}", {"Content-Type": "application/json"}).status_code == 404


def test_oversized_body_is_refused(site, keys, kit):
    signed = kit.sign(kit.payload("hard", A, "big"), at=NOW)
    body = signed.body + b" " * (MAX_BODY_BYTES + 1 - len(signed.body))
    assert site.post(kit.name, body, signed.headers).status_code == 413
    assert unchanged(site)


def test_oversized_chunked_body_is_refused(site, keys):
    kit = KITS["postmark"](keys)
    signed = kit.sign(kit.payload("hard", A, "chunk"), at=NOW)
    chunks = (b" " * 65536 for _ in range(MAX_BODY_BYTES // 65536 + 2))
    r = site.post("postmark", chunks, signed.headers)  # no Content-Length: Transfer-Encoding chunked
    assert r.status_code == 413
    assert unchanged(site)


def test_malformed_body_is_400(site, keys, kit):
    headers = kit.sign(kit.payload("hard", A, "x"), at=NOW).headers
    for body in (b"{not json", b"\xff\xfe{}", b"[" * 100000 + b"]" * 100000, b""):
        assert site.post(kit.name, body, headers).status_code == 400, body[:10]
    assert unchanged(site)


@pytest.mark.parametrize("payload", [[], {}, [1, "x", None], {"RecordType": "Bounce", "Type": "HardBounce",
                                                                 "Email": ["a@example.org"]}])
def test_wrong_shapes_from_an_authentic_sender_change_nothing(site, keys, payload):
    for name in ("postmark", "brevo", "sendgrid"):
        kit = KITS[name](keys)
        signed = kit.sign(payload, at=NOW)
        assert site.post(name, signed.body, signed.headers).status_code == 200
    assert unchanged(site)


def test_events_are_tied_to_the_delivery_by_provider_id(site, kit):
    with closing(connect(site.db)) as conn:  # autocommits
        delivery = conn.execute("INSERT INTO deliveries(slug, content_hash, state, created_at) "
                                "VALUES('global-governance-of-ai', 'h', 'done', 'x') RETURNING id").fetchone()[0]
        conn.execute("INSERT INTO ledger(delivery_id, subscriber_id, email, state, provider_id) "
                     "SELECT ?, id, email, 'sent', ? FROM subscribers WHERE email=?",
                     (delivery, kit.provider_id("d1"), A))
    assert send(site, kit, "hard", A, "d1").status_code == 200
    with closing(connect(site.db)) as conn:
        assert delivery_event_counts(conn, delivery)["hard-bounce"] == 1


def test_a_broken_key_setting_is_503_not_a_traceback(make_site, keys):
    env = {**keys.env(), "SENDGRID_WEBHOOK_PUBLIC_KEY": "not-base64!", "NEWSLETTER_SOFT_BOUNCE_LIMIT": "lots"}
    site = make_site(env=env)
    kit = KITS["sendgrid"](keys)
    assert send(site, kit, "hard", A, "k1").status_code == 503
    postmark = KITS["postmark"](keys)
    assert send(site, postmark, "hard", A, "k2").status_code == 503  # the bad limit: retry later, nothing lost
    assert unchanged(site)


def test_get_is_not_allowed(site):
    assert HTTP.get(f"{site.url}/webhooks/postmark", timeout=5).status_code == 405


def test_soft_bounce_window_comes_from_settings(site, keys):
    kit = KITS["postmark"](keys)
    first = kit.payload("soft", C, "w1")
    first["BouncedAt"] = (NOW - timedelta(days=8)).isoformat()  # outside the 7-day window
    signed = kit.sign(first, at=NOW)
    assert site.post("postmark", signed.body, signed.headers).status_code == 200
    assert send(site, kit, "soft", C, "w2").status_code == 200
    assert site.status(C) == "active"


def test_a_batch_is_applied_all_or_nothing(site, keys, monkeypatch):
    import newsletter.webhooks.base as base

    real, calls = base.apply_event, []

    def failing_second(store, event, **kw):
        calls.append(event.email)
        if event.email == B:  # stays locked: the app's bounded in-request retries all fail
            raise sqlite3.OperationalError("database is locked")
        return real(store, event, **kw)

    monkeypatch.setattr(base, "apply_event", failing_second)
    kit = KITS["sendgrid"](keys)
    batch = kit.payload("hard", A, "b1") + kit.payload("complaint", B, "b2")
    signed = kit.sign(batch, at=NOW)
    assert site.post("sendgrid", signed.body, signed.headers).status_code == 503  # the provider retries
    assert calls == [A, B] * DB_ATTEMPTS and unchanged(site)
    monkeypatch.setattr(base, "apply_event", real)
    assert site.post("sendgrid", signed.body, signed.headers).status_code == 200  # the retry lands whole
    assert site.statuses() == {A: "bounced", B: "complained", C: "active"}


def test_a_bug_is_one_line_500_and_changes_nothing(site, keys, monkeypatch):
    from newsletter.webhooks.postmark import PostmarkWebhook

    monkeypatch.setattr(PostmarkWebhook, "events", lambda self, payload, request: 1 / 0)
    r = send(site, KITS["postmark"](keys), "hard", A, "bug")
    assert r.status_code == 500 and r.text == "internal error\n"
    assert unchanged(site)


def test_a_bounce_for_an_unknown_address_finds_the_reader_by_provider_id(site, kit):
    with closing(connect(site.db)) as conn:  # autocommits
        did = conn.execute("INSERT INTO deliveries(slug, content_hash, state, created_at) "
                           "VALUES('s', 'h', 'done', 'x') RETURNING id").fetchone()[0]
        conn.execute("INSERT INTO ledger(delivery_id, subscriber_id, email, state, provider_id) "
                     "SELECT ?, id, email, 'sent', ? FROM subscribers WHERE email=?",
                     (did, kit.provider_id("alias"), B))
    assert send(site, kit, "hard", "forwarded-alias@example.net", "alias").status_code == 200
    assert site.statuses() == {A: "active", B: "bounced", C: "active"}


def test_a_webhook_before_the_first_send_still_lands(make_site, tmp_path, keys):
    from newsletter.store import SubscriberStore

    fresh = tmp_path / "fresh.db"
    with SubscriberStore.open(fresh) as store:  # subscribers only: no ledger tables yet
        store.add(A)
    site = make_site(db_path=fresh)
    assert send(site, KITS["postmark"](keys), "hard", A, "first").status_code == 200
    assert site.status(A) == "bounced"


def test_mailgun_timestamp_may_be_a_number(site, keys):
    kit = KITS["mailgun"](keys)
    signed = json.loads(kit.sign(kit.payload("hard", A, "int"), at=NOW).body)
    signed["signature"]["timestamp"] = int(signed["signature"]["timestamp"])
    assert site.post("mailgun", json.dumps(signed).encode(), {"Content-Type": "application/json"}).status_code == 200
    assert site.status(A) == "bounced"


def test_a_secret_in_the_query_string_is_not_accepted(site, keys):
    kit = KITS["postmark"](keys)
    body = json.dumps(kit.payload("hard", A, "q")).encode()
    r = site.post("postmark", body, {"Content-Type": "application/json"}, query=f"token={keys.shared}")
    assert r.status_code == 401  # access logs keep URLs: the secret travels in a header only
    assert unchanged(site)


def test_resend_accepts_the_standard_webhooks_header_names(site, keys):
    kit = KITS["resend"](keys)
    signed = kit.sign(kit.payload("complaint", A, "std"), at=NOW)
    headers = {k.replace("svix-", "webhook-"): v for k, v in signed.headers.items()}
    assert "webhook-signature" in headers
    assert site.post("resend", signed.body, headers).status_code == 200
    assert site.status(A) == "complained"
