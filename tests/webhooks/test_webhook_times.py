"""Times outside a sane range are a 400 that changes nothing, never a 500 (issue 16): every
provider, every time field it sends, signed as the provider signs. Time is the app's FakeClock."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from tests.webhooks.kits import KITS, NOW, READERS

A = READERS[0]
HUGE = ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "1969-12-31T23:59:59Z", "2100-01-01T00:00:00Z",
        "not a time", "2026-02-30T00:00:00Z", 12]
HUGE_UNIX = [999999999999, 1e300, -1, "nan", "inf", "1e400", 4102444800, "x", True]


def unchanged(site) -> bool:
    return site.statuses() == {e: "active" for e in READERS} and site.event_rows() == 0


def _ses_note(payload: dict, path: tuple[str, ...], value) -> dict:
    note = json.loads(payload["Message"])
    target = note
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return {**payload, "Message": json.dumps(note)}


def _set(d: dict, key: str, value) -> dict:
    return {**d, key: value}


# (provider, kind, how to put a bad value into the payload, the bad values)
FIELDS = [
    ("postmark", "hard", lambda p, v: _set(p, "BouncedAt", v), HUGE),
    ("postmark", "complaint", lambda p, v: _set(p, "BouncedAt", v), HUGE[:1]),
    ("postmark", "hard", lambda p, v: {"RecordType": "SubscriptionChange", "MessageID": "pm-x", "Recipient": A,
                                       "ChangedAt": v, "SuppressSending": True,
                                       "SuppressionReason": "ManualSuppression"}, HUGE),
    ("resend", "hard", lambda p, v: _set(p, "created_at", v), HUGE),
    ("ses", "hard", lambda p, v: _ses_note(p, ("bounce", "timestamp"), v), HUGE),
    ("ses", "complaint", lambda p, v: _ses_note(p, ("complaint", "timestamp"), v), HUGE[:2]),
    ("sendgrid", "hard", lambda p, v: [p[0], _set(p[1], "timestamp", v)], HUGE_UNIX),
    ("mailgun", "hard", lambda p, v: {"event-data": _set(p["event-data"], "timestamp", v)}, HUGE_UNIX),
    ("brevo", "hard", lambda p, v: _set(p, "ts_epoch", v * 1000 if isinstance(v, (int, float)) and
                                        not isinstance(v, bool) else v), HUGE_UNIX),
    ("brevo", "soft", lambda p, v: {k: x for k, x in _set(p, "ts_event", v).items() if k != "ts_epoch"}, HUGE_UNIX),
]
CASES = [(name, kind, put, value) for name, kind, put, values in FIELDS for value in values]


@pytest.mark.parametrize("name, kind, put, value", CASES,
                         ids=[f"{n}-{k}-{v!r}"[:60] for n, k, _, v in CASES])
def test_an_event_time_out_of_range_is_400_and_changes_nothing(site, keys, name, kind, put, value):
    kit = KITS[name](keys)
    signed = kit.sign(put(kit.payload(kind, A, "t1"), value), at=NOW)
    r = site.post(name, signed.body, signed.headers)
    assert r.status_code == 400, (r.status_code, r.text)
    assert len(r.text.splitlines()) == 1
    assert unchanged(site)


@pytest.mark.parametrize("name", ["postmark", "resend", "ses", "sendgrid", "mailgun", "brevo"])
def test_an_event_time_days_ahead_of_our_clock_is_400(site, keys, name):
    kit = KITS[name](keys)
    ahead = NOW + timedelta(days=3)
    put = {"postmark": lambda p: _set(p, "BouncedAt", ahead.isoformat()),
           "resend": lambda p: _set(p, "created_at", ahead.isoformat()),
           "ses": lambda p: _ses_note(p, ("bounce", "timestamp"), ahead.isoformat()),
           "sendgrid": lambda p: [p[0], _set(p[1], "timestamp", int(ahead.timestamp()))],
           "mailgun": lambda p: {"event-data": _set(p["event-data"], "timestamp", ahead.timestamp())},
           "brevo": lambda p: _set(p, "ts_epoch", int(ahead.timestamp() * 1000))}[name]
    signed = kit.sign(put(kit.payload("hard", A, "f1")), at=NOW)
    assert site.post(name, signed.body, signed.headers).status_code == 400
    assert unchanged(site)


@pytest.mark.parametrize("name", ["postmark", "resend", "ses", "sendgrid", "mailgun", "brevo"])
def test_a_late_report_of_an_old_event_is_still_applied(site, keys, name):
    kit = KITS[name](keys)
    old = NOW - timedelta(days=200)
    put = {"postmark": lambda p: _set(p, "BouncedAt", old.isoformat().replace("+00:00", "-05:00")),
           "resend": lambda p: _set(p, "created_at", old.isoformat().replace("+00:00", "Z")),
           "ses": lambda p: _ses_note(p, ("bounce", "timestamp"), old.isoformat()),
           "sendgrid": lambda p: [p[0], _set(p[1], "timestamp", int(old.timestamp()))],
           "mailgun": lambda p: {"event-data": _set(p["event-data"], "timestamp", old.timestamp())},
           "brevo": lambda p: _set(p, "ts_epoch", int(old.timestamp() * 1000))}[name]
    signed = kit.sign(put(kit.payload("hard", A, "o1")), at=NOW)
    assert site.post(name, signed.body, signed.headers).status_code == 200
    assert site.status(A) == "bounced"


@pytest.mark.parametrize("stamp", ["999999999999", "99999999999999999999", "4102444800", "0", "946684799"])
def test_resend_signature_timestamp_out_of_range_is_400(site, keys, stamp):
    kit = KITS["resend"](keys)
    signed = kit.sign(kit.payload("hard", A, "r1"), at=NOW)
    r = site.post("resend", signed.body, {**signed.headers, "svix-timestamp": stamp})
    assert r.status_code == 400, r.text
    assert unchanged(site)


@pytest.mark.parametrize("stamp", ["999999999999", "1e300", "nan", "-1", "abc"])
def test_sendgrid_and_mailgun_signature_timestamps_out_of_range_are_400(site, keys, stamp):
    sg = KITS["sendgrid"](keys)
    signed = sg.sign(sg.payload("hard", A, "s1"), at=NOW)
    # signed over the bad timestamp, as an attacker holding nothing could not: only the time is wrong
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    import base64
    sig = keys.sendgrid.sign(stamp.encode() + signed.body, ec.ECDSA(hashes.SHA256()))
    headers = {**signed.headers, "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
               "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(sig).decode()}
    assert site.post("sendgrid", signed.body, headers).status_code == 400
    mg = KITS["mailgun"](keys)
    body = json.loads(mg.sign(mg.payload("hard", A, "m1"), at=NOW).body)
    from tests.webhooks.kits import hmac_hex
    body["signature"] = {"timestamp": stamp, "token": "t" * 50, "signature": hmac_hex(keys.mailgun, stamp + "t" * 50)}
    assert site.post("mailgun", json.dumps(body).encode(), {"Content-Type": "application/json"}).status_code == 400
    assert unchanged(site)
