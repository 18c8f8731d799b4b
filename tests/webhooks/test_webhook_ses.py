"""SES through SNS: the topic allow-list, the certificate (fetched only from an SNS host,
through the injected fetcher, and cached), both signature versions, and subscription
confirmation only for listed topics. The production URL check has its own table."""

from __future__ import annotations

import json

import pytest

from newsletter.webhooks.ses import is_sns_url
from tests.webhooks.kits import CERT_URL, KITS, NOW, OTHER_TOPIC, TOPIC, sign_sns

A = "a@example.org"


def notification(keys, ident: str, topic: str = TOPIC, version: str = "2"):
    kit = KITS["ses"](keys)
    payload = {**kit.payload("hard", A, ident), "TopicArn": topic}
    return kit.sign(payload, at=NOW, version=version)


def confirmation(keys, topic: str, subscribe_url: str | None = None) -> bytes:
    url = subscribe_url or ("https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription"
                            f"&TopicArn={topic}&Token=2336412f37fb687f5d51e6e2425")
    message = {"Type": "SubscriptionConfirmation", "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
               "Token": "2336412f37fb687f5d51e6e2425", "TopicArn": topic,
               "Message": f"You have chosen to subscribe to the topic {topic}.", "SubscribeURL": url,
               "Timestamp": "2026-03-01T11:59:00.000Z"}
    return sign_sns(keys, message)


@pytest.mark.parametrize("version", ["1", "2"])
def test_both_signature_versions_verify(site, keys, sns, version):
    signed = notification(keys, f"v{version}", version=version)
    assert site.post("ses", signed.body, signed.headers).status_code == 200
    assert site.status(A) == "bounced"


def test_certificate_is_fetched_once_and_cached(site, keys, sns):
    for i in range(3):
        signed = notification(keys, f"cache{i}")
        assert site.post("ses", signed.body, signed.headers).status_code == 200
    pem_fetches = [p for p in sns.requests if p.endswith(".pem")]
    assert pem_fetches == ["/SimpleNotificationService-0123456789abcdef.pem"]


def test_unknown_topic_is_refused_before_any_fetch(site, keys, sns):
    signed = notification(keys, "other", topic=OTHER_TOPIC)
    assert site.post("ses", signed.body, signed.headers).status_code == 403
    assert sns.requests == [] and site.status(A) == "active"


def test_subscription_is_confirmed_for_a_listed_topic(site, keys, sns):
    r = site.post("ses", confirmation(keys, TOPIC))
    assert r.status_code == 200, r.text
    confirms = [p for p in sns.requests if "Action=ConfirmSubscription" in p]
    assert len(confirms) == 1 and "Token=2336412f37fb687f5d51e6e2425" in confirms[0]


def test_subscription_for_another_topic_is_never_confirmed(site, keys, sns):
    r = site.post("ses", confirmation(keys, OTHER_TOPIC))
    assert r.status_code == 403
    assert sns.requests == []


def test_subscribe_url_on_another_host_is_never_fetched(site, keys, sns):
    body = confirmation(keys, TOPIC, subscribe_url="https://evil.example/?Action=ConfirmSubscription&x=1")
    assert site.post("ses", body).status_code == 400
    assert not any("Action=ConfirmSubscription" in p for p in sns.requests)


def test_certificate_url_off_sns_is_refused_without_fetching(site, keys, sns):
    signed = notification(keys, "evilcert")
    message = json.loads(signed.body)
    message["SigningCertURL"] = "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem"
    assert site.post("ses", json.dumps(message).encode()).status_code == 401
    assert sns.requests == [] and site.status(A) == "active"


def test_not_spam_feedback_and_delivery_notifications_are_ignored(site, keys, sns):
    kit = KITS["ses"](keys)
    payload = kit.payload("complaint", A, "ns")
    note = json.loads(payload["Message"])
    note["complaint"]["complaintFeedbackType"] = "not-spam"
    payload["Message"] = json.dumps(note)
    for p in (payload, kit.payload("unknown", A, "dl")):
        signed = kit.sign(p, at=NOW)
        assert site.post("ses", signed.body, signed.headers).status_code == 200
    assert site.status(A) == "active"


def test_certificate_outside_its_validity_is_refused(site, keys, sns):
    site.clock.advance(400 * 86400)  # the test certificate is valid for a year from NOW
    kit = KITS["ses"](keys)
    payload = {**kit.payload("hard", A, "expired"), "Timestamp": site.clock.now().isoformat()}
    signed = kit.sign(payload, at=site.clock.now())
    assert site.post("ses", signed.body, signed.headers).status_code == 401
    assert site.status(A) == "active"


def test_unreachable_certificate_is_503_so_sns_retries(make_site, keys, sns):
    site = make_site()
    sns.pem = b"not a certificate"
    signed = notification(keys, "nocert")
    assert site.post("ses", signed.body, signed.headers).status_code == 503
    assert site.status(A) == "active"


GOOD = [
    CERT_URL,
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
    "https://sns.ap-southeast-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem",
    "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
    "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
]
BAD = [
    "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",          # not https
    "https://sns.us-east-1.amazonaws.com.evil.example/SimpleNotificationService.pem",  # look-alike suffix
    "https://evil.example/sns.us-east-1.amazonaws.com/cert.pem",                       # host elsewhere
    "https://sns.us-east-1.amazonaws.com@evil.example/cert.pem",                       # user info
    "https://evil.example@sns.us-east-1.amazonaws.com/cert.pem",                       # user info
    "https://sns.us-east-1.amazonaws.com:8443/cert.pem",                                # port
    "https://sns.us-east-1.amazonaws.com/cert.pem?x=1",                                 # query
    "https://sns.us-east-1.amazonaws.com/cert.txt",                                     # not a .pem
    "https://sns.ap-southeast-2.amazonaws.com/x/y.pem",                                 # not SNS's certificate path
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-a/../b.pem",
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-.pem",
    "https://s3.us-east-1.amazonaws.com/cert.pem",                                      # another service
    "https://sns.amazonaws.com/cert.pem",                                               # no region
    "https://sns.us-east-1.amazonaws.com\\@evil.example/cert.pem",                     # backslash trick
    "https://SNS.us-east-1.amazonaws.com/cert.pem",                                     # not the canonical host
    "https://sns.us-east-1.amazonaws.com /cert.pem",
    "file:///etc/passwd.pem",
    "",
    None,
]


@pytest.mark.parametrize("url", GOOD)
def test_production_url_check_accepts_sns_hosts(url):
    assert is_sns_url(url, pem=True)


@pytest.mark.parametrize("url", BAD)
def test_production_url_check_refuses_everything_else(url):
    assert not is_sns_url(url, pem=True)


def test_confirmation_url_check():
    good = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn&Token=t"
    assert is_sns_url(good, pem=False)
    assert not is_sns_url(good.replace("ConfirmSubscription", "Unsubscribe"), pem=False)
    assert not is_sns_url(good.replace("https://sns.eu-west-1", "https://sns.eu-west-1.evil"), pem=False)
    assert not is_sns_url(good.replace("https", "http"), pem=False)
