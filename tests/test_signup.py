"""Signup with double opt-in, in process: limits, expiry and consent on a FakeClock, real SQLite.

The end-to-end run through a real server process and aiosmtpd is in test_web_server.py.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest
from werkzeug.test import Client

from newsletter.clock import FakeClock
from newsletter.config import load_settings
from newsletter.errors import ConfigError
from newsletter.signups import Signups
from newsletter.store import SubscriberStore
from newsletter.tokens import make_confirm_token
from newsletter.web import make_app
from newsletter.web.proxies import client_ip

SECRET = "test-secret-key-0123456789"
BASE = "https://news.example.org"


@pytest.fixture
def env():
    return {"NEWSLETTER_SECRET_KEY": SECRET, "NEWSLETTER_BASE_URL": BASE, "NEWSLETTER_SIGNUP_HOURLY_CAP": "50",
            "NEWSLETTER_SIGNUP_PER_IP_HOURLY": "10"}


@pytest.fixture
def clock():
    return FakeClock(datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc))


class World:
    def __init__(self, tmp_path, env, clock, db=None):
        (tmp_path / "newsletter.toml").write_text('name = "The Letter"\nfrom_email = "news@example.org"\n')
        self.settings = load_settings(tmp_path, environ=env)
        self.db = db or tmp_path / "subs.db"
        self.clock = clock
        self.sent = []
        self.wsgi = make_app(self.settings, store_path=self.db, clock=clock, mail_sender=self.sent.append)
        self.app = self.wsgi.web_app
        self.client = Client(self.wsgi)
        self.store = SubscriberStore.open(self.db)

    def mails(self):
        self.app.extensions["signup"]["mail"].join()
        return self.sent

    def stamp(self):
        page = self.client.get("/subscribe").get_data(as_text=True)
        return re.search(r'name="form" value="([^"]+)"', page).group(1)

    def signup(self, email, name="", *, ip="203.0.113.7", wait=5, **extra):
        stamp = self.stamp()
        self.clock.advance(wait)
        data = {"email": email, "name": name, "website": "", "form": stamp, **extra}
        return self.client.post("/subscribe", data=data, environ_base={"REMOTE_ADDR": ip})

    def confirm_url(self, mail):
        text = mail.as_bytes().decode() if hasattr(mail, "to_bytes") else str(mail)
        return re.search(r"/confirm/[A-Za-z0-9_=\r\n-]+", text).group(0)

    def link_for(self, email):
        """The link the newest request for ``email`` mailed (its nonce is stored with the request)."""
        sub = self.store.get_by_email(email)
        nonce = self.store.conn.execute("SELECT signup_nonce FROM subscribers WHERE id=?", (sub.id,)).fetchone()[0]
        return f"/confirm/{make_confirm_token(SECRET, sub.id, sub.email, nonce)}"


@pytest.fixture(params=["sqlite", "postgresql-web-role"])
def world(request, tmp_path, env, clock):
    """The signup pages on a SQLite file, and on PostgreSQL as the least-privilege web role."""
    w = World(tmp_path, env, clock, None if request.param == "sqlite" else request.getfixturevalue("pg_web_url"))
    yield w
    w.store.close()
    w.app.close()  # its mail thread, and on PostgreSQL its pool, before the database goes


def test_form_page_has_labels_and_a_stamp(world):
    r = world.client.get("/subscribe")
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    assert '<label for="nl-email">' in page and '<label for="nl-name">' in page
    assert 'name="website"' in page and "By subscribing you agree" in page
    csp = r.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "script-src" not in csp and "default-src 'none'" in csp


def test_signup_then_confirm_records_consent(world):
    r = world.signup("new.reader@example.org", "New Reader", ip="198.51.100.4")
    assert r.status_code == 200 and "Check your inbox" in r.get_data(as_text=True)
    sub = world.store.get_by_email("new.reader@example.org")
    assert sub.status == "pending" and sub.name == "New Reader"
    (mail,) = world.mails()
    assert mail.to_email == "new.reader@example.org"
    raw = mail.as_bytes().decode()
    assert "Subject: Confirm your subscription to The Letter" in raw
    assert f"{BASE}/confirm/" in raw.replace("=\r\n", "")
    link = world.link_for("new.reader@example.org")
    # GET shows a button and changes nothing.
    page = world.client.get(link)
    assert page.status_code == 200 and "Confirm subscription</button>" in page.get_data(as_text=True)
    assert world.store.get(sub.id).status == "pending"
    world.clock.advance(3600)
    r = world.client.post(link, data={"confirm": "yes"}, environ_base={"REMOTE_ADDR": "198.51.100.9"})
    assert r.status_code == 200 and "You are subscribed" in r.get_data(as_text=True)
    assert world.store.get(sub.id).status == "active"
    consent = Signups(world.store).consent(sub.id)
    assert consent.source == "web signup" and "By subscribing" in consent.text
    assert consent.requested_at == "2026-03-01T09:00:05.000000Z"
    assert consent.confirmed_at == "2026-03-01T10:00:05.000000Z"
    assert consent.ip == "198.51.100.9"


def test_reusing_a_link_changes_nothing(world):
    world.signup("a@example.org")
    link = world.link_for("a@example.org")
    assert world.client.post(link).status_code == 200
    first = world.store.get_by_email("a@example.org")
    world.clock.advance(60)
    r = world.client.post(link)
    assert r.status_code == 200 and "You are subscribed" in r.get_data(as_text=True)
    assert world.store.get_by_email("a@example.org") == first
    # After unsubscribing, the old confirmation link does not bring the reader back.
    world.store.unsubscribe("a@example.org")
    assert world.client.post(link).status_code == 404
    assert world.store.get_by_email("a@example.org").status == "unsubscribed"


def test_expired_link_and_purge(world):
    world.signup("late@example.org")
    link = world.link_for("late@example.org")
    world.clock.advance(48 * 3600 + 1)
    r = world.client.get(link)
    assert r.status_code == 410 and "expired" in r.get_data(as_text=True)
    assert world.client.post(link).status_code == 410
    assert world.store.get_by_email("late@example.org").status == "pending"
    # The next signup request (or a restart) purges expired pending readers.
    world.signup("other@example.org")
    assert world.store.get_by_email("late@example.org") is None
    assert world.client.get(link).status_code == 404


def test_an_unreadable_request_time_is_an_expired_link_not_a_500(world):
    world.signup("garbled@example.org")
    link = world.link_for("garbled@example.org")
    world.store.conn.execute("UPDATE subscribers SET signup_requested_at='yesterday' WHERE email=?",
                             ("garbled@example.org",))
    assert world.client.get(link).status_code == 410
    assert world.client.post(link).status_code == 410
    assert world.store.get_by_email("garbled@example.org").status == "pending"


def test_honeypot_and_speed_send_nothing(world):
    r = world.signup("bot@example.org", website="http://spam.example")
    assert r.status_code == 200 and "Check your inbox" in r.get_data(as_text=True)
    r = world.signup("fast@example.org", wait=1)  # faster than NEWSLETTER_SIGNUP_MIN_SECONDS (3)
    assert r.status_code == 200 and "Check your inbox" in r.get_data(as_text=True)
    assert world.mails() == []
    assert world.store.get_by_email("bot@example.org") is None and world.store.get_by_email("fast@example.org") is None


def test_a_post_without_our_stamp_gets_the_form_back(world):
    r = world.client.post("/subscribe", data={"email": "embed@example.org", "name": "E"})
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and "One more step" in page and 'value="embed@example.org"' in page
    assert world.store.get_by_email("embed@example.org") is None and world.mails() == []
    forged = world.client.post("/subscribe", data={"email": "x@example.org", "form": "1700000000." + "0" * 32})
    assert "One more step" in forged.get_data(as_text=True)


def test_one_email_per_address_per_day(world):
    for i in range(20):
        assert world.signup("Same@Example.org", ip=f"198.51.100.{i}").status_code == 200
    assert len(world.mails()) == 1
    world.clock.advance(24 * 3600)
    world.signup("same@example.org")
    assert len(world.mails()) == 2


def test_per_ip_limit_and_global_cap(world):
    for i in range(30):
        world.signup(f"reader{i}@example.org", ip="192.0.2.1")
    assert len(world.mails()) == 10  # NEWSLETTER_SIGNUP_PER_IP_HOURLY
    for i in range(60):
        world.signup(f"spread{i}@example.org", ip=f"192.0.2.{100 + i}")
    assert len(world.mails()) == 50  # NEWSLETTER_SIGNUP_HOURLY_CAP, all together
    world.clock.advance(3601)
    world.signup("after@example.org", ip="192.0.2.1")
    assert len(world.mails()) == 51


def test_limits_survive_a_restart(world, tmp_path, env):
    world.signup("persist@example.org")
    assert len(world.mails()) == 1
    again = World(tmp_path, env, world.clock, world.db)  # a new app on the same database
    again.signup("persist@example.org")
    assert again.mails() == []
    again.store.close()


@pytest.mark.parametrize("status", ["active", "bounced", "complained"])
def test_existing_addresses_get_the_same_page_and_no_email(world, status):
    sub = world.store.add("known@example.org")
    if status != "active":
        world.store.set_status(sub.id, status)
    r = world.signup("known@example.org")
    assert r.status_code == 200 and "Check your inbox" in r.get_data(as_text=True)
    assert world.mails() == []
    assert world.store.get(sub.id).status == status


def test_confirmed_double_opt_in_reactivates_an_unsubscribed_reader(world):
    sub = world.store.add("back@example.org")
    world.store.unsubscribe(sub.id)
    world.signup("back@example.org")
    assert len(world.mails()) == 1
    assert world.store.get(sub.id).status == "unsubscribed"  # until confirmed
    assert world.client.post(world.link_for("back@example.org")).status_code == 200
    assert world.store.get(sub.id).status == "active"


def test_confirm_link_never_reactivates_a_complaint(world):
    world.signup("angry@example.org")
    link = world.link_for("angry@example.org")
    world.store.set_status("angry@example.org", "complained")
    assert world.client.post(link).status_code == 404
    assert world.store.get_by_email("angry@example.org").status == "complained"


@pytest.mark.parametrize("data, code", [
    ({"email": "not an address"}, 400),
    ({"email": "a@example.org", "name": "Eve\r\nBcc: victim@example.org"}, 400),
    ({"email": "a@example.org\r\nBcc: victim@example.org"}, 400),
    ({"email": "x" * 5000 + "@example.org"}, 400),
])
def test_bad_input_is_a_400_and_changes_nothing(world, data, code):
    stamp = world.stamp()
    world.clock.advance(5)
    r = world.client.post("/subscribe", data={**data, "form": stamp})
    assert r.status_code == code and "Traceback" not in r.get_data(as_text=True)
    assert world.store.count() == 0 and world.mails() == []


def test_wrong_methods_bad_bodies_and_encodings(world):
    assert world.client.put("/subscribe").status_code == 405
    assert world.client.delete("/confirm/" + "A" * 32).status_code == 405
    r = world.client.post("/subscribe", data=b"email=%ff%fe&form=1", content_type="application/x-www-form-urlencoded")
    assert r.status_code == 200 and "One more step" in r.get_data(as_text=True)  # not our stamp: the form back
    r = world.client.post("/subscribe", data=b"x" * 100_000, content_type="application/x-www-form-urlencoded")
    assert r.status_code == 413
    r = world.client.post("/subscribe", data=b"--zz\r\nbroken", content_type="multipart/form-data; boundary=zz")
    assert r.status_code == 200 and "One more step" in r.get_data(as_text=True)  # no fields: the form back
    assert world.store.count() == 0


def test_cross_origin_posts_only_from_allowed_origins(tmp_path, env, clock):
    w = World(tmp_path, {**env, "NEWSLETTER_FORM_ORIGINS": "https://www.example.org"}, clock)
    data = {"email": "x@example.org", "form": w.stamp()}
    clock.advance(5)
    assert w.client.post("/subscribe", data=data, headers={"Origin": "https://evil.example"}).status_code == 403
    assert w.client.post("/subscribe", data=data, headers={"Origin": "https://www.example.org"}).status_code == 200
    assert w.client.post("/subscribe", data=data, headers={"Origin": BASE}).status_code == 200
    w.store.close()


def test_signup_is_off_without_a_base_url(tmp_path, clock):
    (tmp_path / "newsletter.toml").write_text('name = "L"\n')
    settings = load_settings(tmp_path, environ={"NEWSLETTER_SECRET_KEY": SECRET})
    client = Client(make_app(settings, store_path=tmp_path / "s.db", clock=clock))
    assert client.get("/subscribe").status_code == 404


# ---- trusted proxies ------------------------------------------------------------------------
@pytest.mark.parametrize("trusted, xff, peer, expected", [
    (0, "1.2.3.4", "127.0.0.1", "127.0.0.1"),                  # never trusted by default
    (1, "1.2.3.4", "127.0.0.1", "1.2.3.4"),
    (1, "6.6.6.6, 1.2.3.4", "127.0.0.1", "1.2.3.4"),           # the client's own prefix is ignored
    (2, "6.6.6.6, 1.2.3.4, 10.0.0.2", "10.0.0.1", "1.2.3.4"),
    (2, "1.2.3.4", "127.0.0.1", "127.0.0.1"),                  # fewer hops than proxies: the peer
    (1, "garbage", "127.0.0.1", "127.0.0.1"),
    ("10.0.0.0/8", "6.6.6.6, 1.2.3.4, 10.0.0.2", "10.0.0.1", "1.2.3.4"),
    ("10.0.0.0/8", "1.2.3.4", "198.51.100.1", "198.51.100.1"),  # the peer is not our proxy
])
def test_client_ip(trusted, xff, peer, expected):
    import ipaddress

    t = trusted if isinstance(trusted, int) else (ipaddress.ip_network(trusted),)
    assert client_ip({"REMOTE_ADDR": peer, "HTTP_X_FORWARDED_FOR": xff}, t) == expected


def test_trusted_proxies_setting(tmp_path):
    get = lambda v: load_settings(tmp_path, environ={"NEWSLETTER_TRUSTED_PROXIES": v}).trusted_proxies
    assert get("") == () and get("2") == 2
    assert [str(n) for n in get("10.0.0.1, 192.168.0.0/16")] == ["10.0.0.1/32", "192.168.0.0/16"]
    with pytest.raises(ConfigError, match="NEWSLETTER_TRUSTED_PROXIES"):
        get("proxy.example")


# ---- the durable outbox -----------------------------------------------------------------------
def test_a_confirmation_recorded_before_a_crash_is_sent_after_the_restart(tmp_path, env, clock):
    w = World(tmp_path, env, clock)
    stamp = w.stamp()
    clock.advance(5)
    # The request is recorded, but this process "dies" before its sender runs: record directly.
    Signups(w.store, w.app.extensions["signup"]["limits"], clock).request(
        "crash@example.org", ip="192.0.2.9", source="web signup", consent="c")
    assert stamp and w.store.conn.execute("SELECT COUNT(*) FROM signup_outbox").fetchone()[0] == 1
    again = World(tmp_path, env, clock)  # the restarted app drains what was left
    again.mails()
    assert [m.to_email for m in w.sent + again.sent] == ["crash@example.org"]  # exactly once (leased)
    assert again.store.conn.execute("SELECT COUNT(*) FROM signup_outbox").fetchone()[0] == 0
    w.store.close()
    again.store.close()


def test_a_failed_send_is_retried_with_backoff_then_given_up(tmp_path, env, clock):
    w = World(tmp_path, env, clock)
    attempts = []

    def flaky(message):
        attempts.append(message.to_email)
        if len(attempts) < 3:
            raise ConnectionError("smtp down")
        w.sent.append(message)

    w.app.extensions["signup"]["mail"]._send = flaky
    w.signup("retry@example.org")
    assert w.mails() == [] and attempts == ["retry@example.org"]  # failed once; next try in 1 minute
    clock.advance(61)
    assert w.mails() == [] and len(attempts) == 2  # then 2 minutes
    clock.advance(121)
    assert [m.to_email for m in w.mails()] == ["retry@example.org"] and len(attempts) == 3
    w.store.close()


def test_welcome_email_after_confirmation_when_enabled(tmp_path, env, clock):
    w = World(tmp_path, {**env, "NEWSLETTER_SIGNUP_WELCOME": "1"}, clock)
    w.signup("welcome@example.org", "Wel Come")
    assert len(w.mails()) == 1  # the reader confirms from the email, so it has gone out first
    assert w.client.post(w.link_for("welcome@example.org")).status_code == 200
    kinds = [m.subject for m in w.mails()]
    assert kinds == ["Confirm your subscription to The Letter", "Welcome to The Letter"]
    w.store.close()


def test_a_misspelt_welcome_setting_is_refused_not_taken_as_off(tmp_path, env, clock):
    with pytest.raises(ConfigError, match="NEWSLETTER_SIGNUP_WELCOME"):
        World(tmp_path, {**env, "NEWSLETTER_SIGNUP_WELCOME": "ture"}, clock)


def test_an_outboxed_confirmation_is_not_sent_once_it_no_longer_applies(world):
    """Confirmed (or unsubscribed) before the sender got to it: nothing goes out."""
    world.app.extensions["signup"]["mail"]._send = lambda m: (_ for _ in ()).throw(AssertionError("sent"))
    with world.store.transaction():  # one step: the app's sender thread (started at mount) cannot slip in between
        Signups(world.store, world.app.extensions["signup"]["limits"], world.clock).request(
            "quick@example.org", ip="192.0.2.5", source="s", consent="c")
        world.store.unsubscribe("quick@example.org")
    world.mails()
    assert world.store.conn.execute("SELECT COUNT(*) FROM signup_outbox").fetchone()[0] == 0


def test_pages_and_mails_share_one_template_environment(world, monkeypatch):
    import newsletter.render

    made = []
    real = newsletter.render.template_environment
    monkeypatch.setattr(newsletter.render, "template_environment", lambda *a, **k: made.append(1) or real(*a, **k))
    monkeypatch.setattr("newsletter.signup_mail.template_environment", newsletter.render.template_environment)
    world.app.extensions.pop("templates", None)
    for n in range(3):
        assert world.signup(f"reader{n}@example.org").status_code == 200
    assert len(world.mails()) == 3
    assert len(made) == 1  # not one per page or per confirmation email
