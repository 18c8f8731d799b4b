"""Issue 16 and 22 rules for provider webhooks, over real HTTP with signed requests:
no silent cut of a batch, Mailgun's retries and legacy form webhooks, SNS freshness and its
certificate host and fetch budget, every provider's names for complaints and unsubscribes,
and the provider message id when the address is missing."""

from __future__ import annotations

import json
from contextlib import closing
from datetime import timedelta
from urllib.parse import urlencode

import pytest

from newsletter.db import connect
from newsletter.webhooks import MAX_BODY_BYTES
from newsletter.webhooks.base import MAX_EVENTS
from tests.webhooks.kits import CERT_URL, KITS, NOW, READERS, TOPIC, hmac_hex, sign_sns

A, B, C = READERS


def unchanged(site) -> bool:
    return site.statuses() == {e: "active" for e in READERS} and site.event_rows() == 0


def add_readers(db, n: int) -> list[str]:
    emails = [f"r{i:04d}@many.example" for i in range(n)]
    from newsletter.store import SubscriberStore

    with SubscriberStore.open(db) as store:
        for e in emails:
            store.add(e)
    return emails


def count_status(db, status: str) -> int:
    with closing(connect(db)) as conn:
        return conn.execute("SELECT COUNT(*) FROM subscribers WHERE status=? AND email LIKE '%@many.example'",
                            (status,)).fetchone()[0]


# ---- no silent truncation ---------------------------------------------------------------------
@pytest.mark.parametrize("n", [101, 500])
def test_resend_event_with_many_recipients_applies_every_one(site, keys, n):
    emails = add_readers(site.db, n)
    kit = KITS["resend"](keys)
    payload = kit.payload("hard", A, "many")
    payload["data"]["to"] = emails
    signed = kit.sign(payload, at=NOW)
    r = site.post("resend", signed.body, signed.headers)
    assert r.status_code == 200 and r.json()["events"] == n
    assert count_status(site.db, "bounced") == n


@pytest.mark.parametrize("kind", ["hard", "complaint"])
def test_ses_notification_with_many_recipients_applies_every_one(site, keys, kind):
    emails = add_readers(site.db, 500)
    kit = KITS["ses"](keys)
    payload = kit.payload(kind, A, "many")
    note = json.loads(payload["Message"])
    people = [{"emailAddress": e, "status": "5.1.1"} for e in emails]
    note["bounce" if kind == "hard" else "complaint"]["bouncedRecipients" if kind == "hard"
                                                      else "complainedRecipients"] = people
    payload["Message"] = json.dumps(note)
    signed = kit.sign(payload, at=NOW)
    assert site.post("ses", signed.body, signed.headers).status_code == 200
    assert count_status(site.db, "bounced" if kind == "hard" else "complained") == 500


def test_more_events_than_we_apply_at_once_is_refused_whole_so_the_provider_retries(site, keys):
    kit = KITS["sendgrid"](keys)
    batch = [{"event": "bounce", "type": "bounce", "sg_event_id": f"e{i}", "email": f"n{i}@x.example",
              "timestamp": 1772366340} for i in range(MAX_EVENTS + 1)]
    body = json.dumps(batch).encode()
    assert len(body) < MAX_BODY_BYTES
    signed = kit.sign(batch, at=NOW)
    r = site.post("sendgrid", signed.body, signed.headers)
    assert r.status_code == 413 and site.event_rows() == 0


# ---- Mailgun: retries, replays, legacy webhooks ----------------------------------------------
def test_mailgun_identical_retry_is_200_and_changes_nothing(site, keys):
    kit = KITS["mailgun"](keys)
    signed = kit.sign(kit.payload("soft", A, "once"), at=NOW, token="k" * 50)
    assert site.post("mailgun", signed.body, signed.headers).status_code == 200
    for later in (0, 600, 3600 * 4):  # the answer was lost: Mailgun sends the very same bytes again
        site.clock.advance(later)
        r = site.post("mailgun", signed.body, signed.headers)
        assert r.status_code == 200, r.text
        assert r.json()["duplicate"] == 1 and r.json()["applied"] == 0
    assert site.event_rows() == 1 and site.status(A) == "active"


def test_mailgun_first_delivery_hours_late_with_its_original_signature_is_applied(site, keys):
    kit = KITS["mailgun"](keys)
    signed = kit.sign(kit.payload("hard", A, "late"), at=NOW)
    site.clock.advance(3 * 3600)  # our server was down; Mailgun retried during its 8 hours
    assert site.post("mailgun", signed.body, signed.headers).status_code == 200
    assert site.status(A) == "bounced"


def test_mailgun_token_reused_with_another_body_is_refused(site, keys):
    kit = KITS["mailgun"](keys)
    first = kit.sign(kit.payload("unknown", A, "a"), at=NOW, token="z" * 50)
    assert site.post("mailgun", first.body, first.headers).status_code == 200
    for other in (kit.payload("hard", A, "a"), kit.payload("complaint", B, "b")):
        forged = kit.sign(other, at=NOW, token="z" * 50)
        assert site.post("mailgun", forged.body, forged.headers).status_code == 403
    # the same body re-serialised differently is another body: the token binds the bytes
    spaced = first.body.replace(b", ", b",  ")
    assert site.post("mailgun", spaced, first.headers).status_code == 403
    assert unchanged(site)


def legacy(keys, fields: dict, *, at=NOW, token: str = "legacytoken" * 4, forged: bool = False) -> dict:
    stamp = str(int(at.timestamp()))
    key = "wrong" if forged else keys.mailgun
    return {**fields, "timestamp": stamp, "token": token, "signature": hmac_hex(key, stamp + token)}


LEGACY = [  # fields as Mailgun's legacy webhooks post them (see tests/data/webhooks/mailgun)
    ({"event": "bounced", "recipient": A, "code": "550", "error": "550 5.1.1 No such user",
      "Message-Id": "<20260301.1@mg.example.org>", "domain": "mg.example.org"}, "bounced"),
    ({"event": "dropped", "recipient": A, "code": "605", "reason": "hardfail",
      "description": "Not delivering to previously bounced address"}, "bounced"),
    ({"event": "dropped", "recipient": A, "code": "607", "reason": "hardfail",
      "description": "Not delivering to a user who marked your messages as spam"}, "complained"),
    ({"event": "complained", "recipient": A, "Message-Id": "<20260301.2@mg.example.org>"}, "complained"),
    ({"event": "unsubscribed", "recipient": A}, "unsubscribed"),
    ({"event": "delivered", "recipient": A}, "active"),
    ({"event": "opened", "recipient": A}, "active"),
]


@pytest.mark.parametrize("fields, status", LEGACY, ids=[f"{f['event']}-{f.get('code', '')}" for f, _ in LEGACY])
@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_mailgun_legacy_form_webhooks_are_verified_and_applied(site, keys, fields, status, encoding):
    import requests

    data = legacy(keys, fields, token=f"{fields['event']}{fields.get('code', '')}" * 5)
    if encoding == "urlencoded":
        r = site.post("mailgun", urlencode(data).encode(), {"Content-Type": "application/x-www-form-urlencoded"})
    else:
        prepared = requests.Request("POST", "http://x/", files={k: (None, v) for k, v in data.items()}).prepare()
        r = site.post("mailgun", prepared.body, {"Content-Type": prepared.headers["Content-Type"]})
    assert r.status_code == 200, r.text
    assert site.status(A) == status


def test_mailgun_legacy_forged_stale_or_replayed_is_refused(site, keys):
    fields = {"event": "bounced", "recipient": A}
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert site.post("mailgun", urlencode(legacy(keys, fields, forged=True)).encode(), form).status_code == 401
    unsigned = {**fields, "timestamp": "1772366400", "token": "t" * 50}
    assert site.post("mailgun", urlencode(unsigned).encode(), form).status_code == 401
    old = legacy(keys, fields, at=NOW - timedelta(hours=9))
    assert site.post("mailgun", urlencode(old).encode(), form).status_code == 403
    first = legacy(keys, {"event": "opened", "recipient": A}, token="r" * 50)
    assert site.post("mailgun", urlencode(first).encode(), form).status_code == 200
    again = legacy(keys, fields, token="r" * 50)
    assert site.post("mailgun", urlencode(again).encode(), form).status_code == 403
    assert site.status(A) == "active"


def test_mailgun_legacy_signature_fields_take_the_last_value(site, keys):
    """Mailgun merges user variables into the form: a message's own 'token' comes first."""
    data = legacy(keys, {"event": "complained", "recipient": A})
    body = urlencode([("token", "from-a-user-variable"), ("timestamp", "1"), *data.items()]).encode()
    r = site.post("mailgun", body, {"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and site.status(A) == "complained"


# ---- SES / SNS ---------------------------------------------------------------------------------
def ses_signed(keys, ident: str, **changes):
    kit = KITS["ses"](keys)
    payload = {**kit.payload("hard", A, ident), **changes}
    message = {k: v for k, v in payload.items()}
    body = json.loads(sign_sns(keys, message))
    return body


@pytest.mark.parametrize("timestamp", ["2019-06-01T00:00:00.000Z", "2099-06-01T00:00:00.000Z",
                                       "2026-03-01T10:54:00.000Z", "2026-03-01T12:05:01.000Z"])
def test_sns_timestamps_outside_the_retry_span_are_refused(site, keys, sns, timestamp):
    body = ses_signed(keys, "ts", Timestamp=timestamp)
    assert site.post("ses", json.dumps(body).encode()).status_code == 403
    assert unchanged(site) and not [p for p in sns.requests if p.endswith(".pem")]  # refused before any fetch


@pytest.mark.parametrize("timestamp", ["2026-03-01T11:01:00.000Z", "2026-03-01T12:04:00.000Z"])
def test_sns_timestamps_within_the_retry_span_are_accepted(site, keys, sns, timestamp):
    body = ses_signed(keys, "ok", Timestamp=timestamp)
    assert site.post("ses", json.dumps(body).encode()).status_code == 200
    assert site.status(A) == "bounced"


@pytest.mark.parametrize("timestamp", ["", "yesterday", "9999-12-31T23:59:59-23:59"])
def test_sns_timestamp_missing_or_malformed_is_400(site, keys, sns, timestamp):
    body = ses_signed(keys, "bad", Timestamp=timestamp)
    assert site.post("ses", json.dumps(body).encode()).status_code == 400
    assert unchanged(site)


@pytest.mark.parametrize("url", [
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem",  # not the topic's region
    "https://sns.xx-evil-9.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem",
    "https://sns.eu-west-1.amazonaws.com/anything/else.pem",
])
def test_sns_certificate_only_from_the_topics_region_in_snss_own_form(site, keys, sns, url):
    body = ses_signed(keys, "cert")
    body["SigningCertURL"] = url
    assert site.post("ses", json.dumps(body).encode()).status_code == 401
    assert sns.requests == [] and unchanged(site)


def test_sns_certificate_fetches_are_limited_per_minute(site, keys, sns):
    codes = []
    for i in range(14):  # each names another (made-up) certificate of the right form
        body = ses_signed(keys, f"budget{i}")
        body["SigningCertURL"] = CERT_URL.replace("0123456789abcdef", f"{i:016x}")
        r = site.post("ses", json.dumps(body).encode())
        codes.append(r.status_code)
        if r.status_code == 503:
            assert r.headers["Retry-After"] == "60"
    fetched = [p for p in sns.requests if p.endswith(".pem")]
    assert len(fetched) == 10 and codes[:10] == [200] * 10 and codes[10:] == [503] * 4
    site.clock.advance(61)  # a minute later SNS's retry gets its fetch (and the real certificate verifies)
    body = json.loads(KITS["ses"](keys).sign({**KITS["ses"](keys).payload("hard", A, "after"),
                                              "Timestamp": site.clock.now().isoformat()}, at=NOW).body)
    assert site.post("ses", json.dumps(body).encode()).status_code == 200


def test_production_fetch_is_bounded_in_total_time(monkeypatch):
    import requests

    from newsletter.webhooks import fetching

    ticks = iter(range(0, 10_000, 2))

    class Trickle:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def raise_for_status(self):
            pass

        def iter_content(self, size):
            while True:
                yield b"x"  # one byte at a time, each well within the socket timeout

    monkeypatch.setattr(requests, "get", lambda *a, **k: Trickle())
    monkeypatch.setattr(fetching.time, "monotonic", lambda: float(next(ticks)))
    with pytest.raises(TimeoutError):
        fetching.fetch_https("https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-a.pem")


# ---- names for complaints and unsubscribes, and the message-id fallback ----------------------
BREVO = [("spam", "complained"), ("complaint", "complained"), ("unsubscribed", "unsubscribed"),
         ("unsubscribe", "unsubscribed"), ("hard_bounce", "bounced"), ("hardBounce", "bounced"),
         ("invalid_email", "bounced"), ("invalid", "bounced"), ("blocked", "active"), ("deferred", "active"),
         ("delivered", "active"), ("opened", "active"), ("click", "active"), ("request", "active")]


@pytest.mark.parametrize("name, status", BREVO)
def test_brevo_event_names(site, keys, name, status):
    kit = KITS["brevo"](keys)
    signed = kit.sign({**kit.payload("hard", A, name), "event": name}, at=NOW)
    assert site.post("brevo", signed.body, signed.headers).status_code == 200
    assert site.status(A) == status


POSTMARK = [("Unsubscribe", "unsubscribed"), ("SpamComplaint", "complained"), ("HardBounce", "bounced"),
            ("BadEmailAddress", "bounced"), ("Blocked", "active"), ("AutoResponder", "active"),
            ("DMARCPolicy", "active"), ("Subscribe", "active")]


@pytest.mark.parametrize("typ, status", POSTMARK)
def test_postmark_bounce_types(site, keys, typ, status):
    kit = KITS["postmark"](keys)
    signed = kit.sign({**kit.payload("hard", A, typ), "Type": typ}, at=NOW)
    assert site.post("postmark", signed.body, signed.headers).status_code == 200
    assert site.status(A) == status


def _without_address(name: str, payload):
    if name == "postmark":
        return {k: v for k, v in payload.items() if k != "Email"}
    if name == "brevo":
        return {k: v for k, v in payload.items() if k != "email"}
    if name == "sendgrid":
        return [payload[0], {k: v for k, v in payload[1].items() if k != "email"}]
    if name == "mailgun":
        return {"event-data": {k: v for k, v in payload["event-data"].items() if k != "recipient"}}
    if name == "resend":
        return {**payload, "data": {**payload["data"], "to": []}}
    note = json.loads(payload["Message"])
    note["bounce"]["bouncedRecipients"] = [{"status": "5.1.1"}]
    return {**payload, "Message": json.dumps(note)}


@pytest.mark.parametrize("name", sorted(KITS))
def test_without_an_address_the_reader_is_found_by_the_provider_message_id(site, keys, name):
    kit = KITS[name](keys)
    with closing(connect(site.db)) as conn:  # autocommits, on either backend
        did = conn.execute("INSERT INTO deliveries(slug, content_hash, state, created_at) "
                           "VALUES('s', 'h', 'done', 'x') RETURNING id").fetchone()[0]
        conn.execute("INSERT INTO ledger(delivery_id, subscriber_id, email, state, provider_id) "
                     "SELECT ?, id, email, 'sent', ? FROM subscribers WHERE email=?",
                     (did, kit.provider_id("noaddr"), B))
    signed = kit.sign(_without_address(name, kit.payload("hard", A, "noaddr")), at=NOW)
    r = site.post(name, signed.body, signed.headers)
    assert r.status_code == 200, r.text
    assert site.statuses() == {A: "active", B: "bounced", C: "active"}


def test_postmark_unsubscribe_bounce_without_email_finds_the_reader_by_message_id(site, keys):
    kit = KITS["postmark"](keys)
    with closing(connect(site.db)) as conn:  # autocommits, on either backend
        did = conn.execute("INSERT INTO deliveries(slug, content_hash, state, created_at) "
                           "VALUES('s', 'h', 'done', 'x') RETURNING id").fetchone()[0]
        conn.execute("INSERT INTO ledger(delivery_id, subscriber_id, email, state, provider_id) "
                     "SELECT ?, id, email, 'sent', ? FROM subscribers WHERE email=?",
                     (did, kit.provider_id("u1"), C))
    payload = {k: v for k, v in kit.payload("hard", A, "u1").items() if k != "Email"}
    payload.update(Type="Unsubscribe", TypeCode=16, Details="Unsubscribe request", Description="Unsubscribe")
    signed = kit.sign(payload, at=NOW)
    assert site.post("postmark", signed.body, signed.headers).status_code == 200
    assert site.status(C) == "unsubscribed"


# ---- soft bounces: attempts at one message count once -----------------------------------------
def test_mailgun_attempts_at_one_message_are_one_soft_bounce(site, keys):
    # NEWSLETTER_SOFT_BOUNCE_LIMIT=2 in the test environment
    kit = KITS["mailgun"](keys)
    for attempt in range(1, 6):
        payload = kit.payload("soft", A, "slow")
        payload["event-data"].update(id=f"attempt-{attempt}", timestamp=NOW.timestamp() + attempt)
        payload["event-data"]["delivery-status"].update({"attempt-no": attempt, "retry-seconds": 600 * attempt,
                                                         "code": 450, "message": "Greylisted"})
        signed = kit.sign(payload, at=NOW)
        assert site.post("mailgun", signed.body, signed.headers).json()["applied"] == 1
    assert site.status(A) == "active"
    other = kit.payload("soft", A, "another-message")
    signed = kit.sign(other, at=NOW)
    assert site.post("mailgun", signed.body, signed.headers).status_code == 200
    assert site.status(A) == "bounced"


@pytest.mark.parametrize("name", sorted(KITS))
def test_every_provider_counts_soft_bounces_per_message(site, keys, name):
    kit = KITS[name](keys)
    for attempt in range(3):  # three reports about the message "m1", each a different event
        payload = kit.payload("soft", C, "m1")
        signed = kit.sign(_another_report(name, payload, attempt), at=NOW)
        assert site.post(name, signed.body, signed.headers).status_code == 200
    assert site.status(C) == "active"
    signed = kit.sign(kit.payload("soft", C, "m2"), at=NOW)
    assert site.post(name, signed.body, signed.headers).status_code == 200
    assert site.status(C) == "bounced"


def _another_report(name: str, payload, n: int):
    """The same message's soft bounce, reported again as a new event (a new attempt)."""
    if name == "postmark":
        return {**payload, "ID": payload["ID"] + n + 1}
    if name == "brevo":
        return {**payload, "ts_epoch": payload["ts_epoch"] + 60_000 * (n + 1)}
    if name == "sendgrid":
        return [payload[0], {**payload[1], "sg_event_id": f"{payload[1]['sg_event_id']}-{n}"}]
    if name == "mailgun":
        return {"event-data": {**payload["event-data"], "id": f"{payload['event-data']['id']}-{n}"}}
    if name == "resend":
        return {**payload, "_ident": f"{payload['_ident']}-{n}"}  # a new svix-id, the same email_id
    note = json.loads(payload["Message"])
    note["bounce"]["feedbackId"] += f"-{n}"
    return {**payload, "Message": json.dumps(note), "MessageId": payload["MessageId"] + f"-{n}"}


# ---- the usual event's reads come before the writer line ----------------------------------------
def test_a_reader_changed_between_the_reads_and_the_write_is_applied_the_slow_way(site, keys, monkeypatch):
    from newsletter.webhooks import base

    prepared, real = [], base.prepare

    def prepare_then_complain(store, event):
        ready = real(store, event)
        prepared.append(ready)
        with closing(connect(site.db)) as conn:  # another writer, meanwhile
            conn.execute("UPDATE subscribers SET status='complained' WHERE email=?", (A,))
        return ready

    monkeypatch.setattr(base, "prepare", prepare_then_complain)
    kit = KITS["postmark"](keys)
    signed = kit.sign(kit.payload("hard", A, "stale-1"), at=NOW)
    r = site.post("postmark", signed.body, signed.headers)
    assert r.status_code == 200, r.text
    assert prepared and prepared[0] is not None  # the fast path was taken, and found stale
    assert r.json()["no-change"] == 1 and r.json()["applied"] == 0
    assert site.status(A) == "complained" and site.event_rows() == 1
