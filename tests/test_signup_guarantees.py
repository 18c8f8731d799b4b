"""Signup guarantees from issue 16, on a FakeClock and real SQLite (and PostgreSQL as the web role): a confirmation mail is deferred,
never dropped; a link works once, for the request that made it; the stranger's form text never
reaches the unverified address; and the request does the same work whoever the address belongs to."""

from __future__ import annotations

import re

import pytest

from click.testing import CliRunner

from newsletter.cli import cli
from newsletter.signups import Signups
from newsletter.tokens import make_token

from test_signup import SECRET, World, clock, env, world  # noqa: F401 (fixtures)


@pytest.fixture(params=["sqlite", "postgresql-web-role"])
def web_db(request):
    """None (the World's own SQLite file), or PostgreSQL reached as the least-privilege web role."""
    if request.param == "sqlite":
        return None
    web = request.getfixturevalue("pg_web_url")
    OWNER[web] = request.getfixturevalue("pg_url")  # the editor's CLI runs as the owner, not as serve's role
    return web


OWNER: dict[str, str] = {}


def outbox(w: World) -> list[tuple]:
    return w.store.conn.execute("SELECT kind, attempts, gave_up_at FROM signup_outbox ORDER BY id").fetchall()


def failing_until(w: World, end: float, attempts: list):
    """An SMTP server that is down until ``end`` (the fake clock's seconds) and then takes the mail."""
    start = w.clock.now().timestamp()

    def send(message):
        attempts.append(w.clock.now().timestamp() - start)
        if w.clock.now().timestamp() - start < end:
            raise ConnectionRefusedError("smtp down")
        w.sent.append(message)

    w.app.extensions["signup"]["mail"]._send = send


def cli_run(w: World, *args: str):
    return CliRunner().invoke(cli, ["--root", str(w.settings.root), *args],
                              env={"NEWSLETTER_DB": OWNER.get(str(w.db), str(w.db)), "NEWSLETTER_SECRET_KEY": SECRET})


# ---- deferred, never dropped -------------------------------------------------------------------
def test_a_thirty_minute_smtp_outage_delays_the_confirmation_but_does_not_lose_it(tmp_path, env, clock, web_db):
    w = World(tmp_path, env, clock, web_db)
    attempts: list[float] = []
    failing_until(w, 30 * 60, attempts)
    w.signup("outage@example.org")
    for _ in range(60):  # an hour, minute by minute
        assert w.mails() == [] or len(w.sent) == 1
        if w.sent:
            break
        assert outbox(w) and outbox(w)[0][2] == 0  # still queued, never given up
        clock.advance(60)
    assert [m.to_email for m in w.sent] == ["outage@example.org"]
    assert len(attempts) >= 6 and attempts[-1] >= 30 * 60  # tried all through the outage, then sent
    assert outbox(w) == []
    link = re.search(r"/confirm/[A-Za-z0-9_-]{32}", w.sent[0].as_bytes().decode().replace("=\r\n", "")).group(0)
    assert w.client.post(link).status_code == 200
    assert w.store.get_by_email("outage@example.org").status == "active"
    w.store.close()


def test_a_mail_given_up_is_kept_shown_and_queued_again_by_a_new_signup(tmp_path, env, clock, web_db):
    w = World(tmp_path, {**env, "NEWSLETTER_RETRY_WINDOW": "0.5"}, clock, web_db)  # hours
    attempts: list[float] = []
    failing_until(w, 10**9, attempts)
    w.signup("lost@example.org", "Lost")
    for _ in range(50):
        w.mails()
        clock.advance(60)
    assert w.sent == [] and len(outbox(w)) == 1 and outbox(w)[0][2] > 0  # given up, not deleted
    tries = len(attempts)
    clock.advance(3600)
    w.mails()
    assert len(attempts) == tries  # a given-up mail is not retried on its own
    listed = cli_run(w, "subscribers", "list", "--status", "pending")
    assert listed.exit_code == 0
    assert re.search(r"lost@example.org\tLost\tpending\tconfirm mail not sent, gave up after the retry window: "
                     r"ConnectionRefusedError", listed.output), listed.output
    status = cli_run(w, "status")
    assert "signup mail: 1 not sent, given up after NEWSLETTER_RETRY_WINDOW" in status.output, status.output
    # SMTP works again; the visitor tries again within the day: the mail goes out now, once.
    failing_until(w, 0, attempts)
    w.signup("lost@example.org", "Lost")
    assert [m.to_email for m in w.mails()] == ["lost@example.org"] and outbox(w) == []
    assert "signup mail" not in cli_run(w, "status").output
    # Now one did go out: the per-address limit holds for the rest of the day.
    w.signup("lost@example.org")
    assert len(w.mails()) == 1
    w.store.close()


def test_requests_while_a_mail_waits_queue_it_once(world):
    attempts: list[float] = []
    failing_until(world, 10**9, attempts)
    for ip in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        world.signup("twice@example.org", ip=ip)
    world.mails()
    assert len(outbox(world)) == 1  # one row per reader, re-armed, never a pile of copies


# ---- a link works once, for the request that made it -------------------------------------------
def confirm_link(mail) -> str:
    return re.search(r"/confirm/[A-Za-z0-9_-]{32}", mail.as_bytes().decode().replace("=\r\n", "")).group(0)


def test_an_old_link_never_resubscribes_someone_who_left(world):
    world.signup("leaver@example.org")
    (first,) = world.mails()
    old = confirm_link(first)
    assert world.client.post(old).status_code == 200
    world.store.unsubscribe("leaver@example.org")
    assert world.client.post(old).status_code == 404  # unsubscribing retired it
    world.clock.advance(25 * 3600)
    world.signup("leaver@example.org", ip="198.51.100.66")  # a stranger, a day later
    second = world.mails()[-1]
    new = confirm_link(second)
    assert new != old
    assert world.client.post(old, environ_base={"REMOTE_ADDR": "198.51.100.66"}).status_code == 404
    assert world.client.get(old).status_code == 404
    assert world.store.get_by_email("leaver@example.org").status == "unsubscribed"
    # The new link is the reader's to use, once.
    assert world.client.post(new).status_code == 200
    assert world.store.get_by_email("leaver@example.org").status == "active"


def test_a_new_request_retires_the_links_of_earlier_ones(world):
    world.signup("two@example.org")
    first = confirm_link(world.mails()[0])
    world.clock.advance(25 * 3600)
    world.signup("two@example.org")
    second = confirm_link(world.mails()[1])
    assert first != second
    assert world.client.post(first).status_code == 404
    assert world.store.get_by_email("two@example.org").status == "pending"
    assert world.client.post(second).status_code == 200


def test_unsubscribing_a_pending_signup_retires_its_link(world):
    world.signup("notme@example.org")
    link = confirm_link(world.mails()[0])
    world.store.unsubscribe("notme@example.org")  # "this was not me"
    assert world.client.post(link).status_code == 404
    assert world.store.get_by_email("notme@example.org").status == "unsubscribed"


def test_a_link_mailed_before_nonces_works_for_its_request_only(world):
    """Mail sent before the upgrade carries the nonce-less form: it still confirms the request it
    was made for (stored without a nonce), and dies with it."""
    world.signup("before@example.org")
    world.mails()
    sub = world.store.get_by_email("before@example.org")
    world.store.conn.execute("UPDATE subscribers SET signup_nonce='' WHERE id=?", (sub.id,))  # an old request
    legacy = f"/confirm/{make_token(SECRET, sub.id, sub.email, 'confirm')}"
    assert world.client.post(legacy).status_code == 200
    world.store.unsubscribe(sub.id)
    assert world.client.post(legacy).status_code == 404
    world.clock.advance(25 * 3600)
    world.signup("before@example.org")
    assert world.client.post(legacy).status_code == 404
    assert world.store.get(sub.id).status == "unsubscribed"


# ---- the stranger's text stays out of the confirmation mail --------------------------------------
def test_the_form_name_never_reaches_the_unverified_address(world):
    name = "%%UNSUBSCRIBE_URL%% Buy pills at spam.example"
    world.signup("victim@example.org", name)
    (mail,) = world.mails()
    raw = mail.as_bytes().decode().replace("=\r\n", "")
    assert "pills" not in raw and "spam.example" not in raw
    assert mail.recipient.name == "" and "To: victim@example.org" in raw
    assert world.store.get_by_email("victim@example.org").name == name  # kept, for after confirmation


def test_the_welcome_mail_shows_a_name_holding_a_placeholder_literally(tmp_path, env, clock, web_db):
    w = World(tmp_path, {**env, "NEWSLETTER_SIGNUP_WELCOME": "1"}, clock, web_db)
    w.signup("pat@example.org", "Pat %%UNSUBSCRIBE_URL%% <b>")
    w.mails()
    assert w.client.post(w.link_for("pat@example.org")).status_code == 200
    welcome = w.mails()[-1]
    assert "Hello Pat %%UNSUBSCRIBE_URL%% <b>," in welcome.text
    assert "Hello Pat %%UNSUBSCRIBE_URL%% &lt;b&gt;," in welcome.html
    w.store.close()


# ---- the same work for every address ----------------------------------------------------------
def _normalised(sql: str) -> str:
    return re.sub(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b", "?", sql)


def test_a_signup_runs_the_same_statements_whoever_the_address_belongs_to(world):
    """Counted, not timed: every statement the request runs on the database, for a new, a pending,
    an active, an unsubscribed, a bounced and a complained address, and for two that were mailed a
    confirmation today (one still pending, one confirmed since): who signed up lately is not told either."""
    if not hasattr(world.store.conn, "set_trace_callback"):
        pytest.skip("the statement trace is SQLite's; the statements are the same on PostgreSQL")
    store = world.store
    store.add("active@example.org")
    store.add("gone@example.org")
    store.unsubscribe("gone@example.org")
    store.mark_bounced(store.add("bounced@example.org").id, "550")
    store.mark_complained(store.add("complained@example.org").id, "arf")
    Signups(store).request("waiting@example.org", ip="192.0.2.200", source="s", consent="c")
    world.signup("mailed@example.org", ip="192.0.2.201")  # its confirmation went out: the address limit holds
    world.signup("joined@example.org", ip="192.0.2.202")  # ...and this one confirmed since
    world.mails()
    assert world.client.post(world.link_for("joined@example.org")).status_code == 200
    conn = world.app.store().conn
    traces = {}
    for i, email in enumerate(["new@example.org", "waiting@example.org", "active@example.org",
                               "gone@example.org", "bounced@example.org", "complained@example.org",
                               "mailed@example.org", "joined@example.org"]):
        stamp = world.stamp()
        world.clock.advance(5)
        seen: list[str] = []
        conn.set_trace_callback(seen.append)
        try:
            r = world.client.post("/subscribe", data={"email": email, "name": "N", "website": "", "form": stamp},
                                  environ_base={"REMOTE_ADDR": f"192.0.2.{i + 1}"})
        finally:
            conn.set_trace_callback(None)
        assert r.status_code == 200 and "Check your inbox" in r.get_data(as_text=True)
        # A trigger's statements are traced as repeats of the statement that fired it (the counts kept
        # as rows change, newsletter.store v6): part of that row write's cost, like its index updates.
        traces[email] = [_normalised(s) for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]]
    reference = traces["new@example.org"]
    assert len(reference) > 5
    for email, statements in traces.items():
        assert statements == reference, email


def test_a_request_made_while_a_link_is_being_confirmed_wins(world, monkeypatch):
    """The link is checked again inside the confirming transaction: a new request that lands between
    the page's lookup and the write has retired it."""
    world.signup("race@example.org")
    link = confirm_link(world.mails()[0])
    world.clock.advance(25 * 3600)
    real_write = world.app.write

    def write_after_a_new_request(fn):
        monkeypatch.setattr(world.app, "write", real_write)
        Signups(world.app.store(), world.app.extensions["signup"]["limits"], world.clock).request(
            "race@example.org", ip="198.51.100.7", source="web signup", consent="c")
        return real_write(fn)

    monkeypatch.setattr(world.app, "write", write_after_a_new_request)
    assert world.client.post(link).status_code == 404
    assert world.store.get_by_email("race@example.org").status == "pending"


def test_a_given_up_mail_goes_with_its_expired_request(tmp_path, env, clock, web_db):
    w = World(tmp_path, {**env, "NEWSLETTER_RETRY_WINDOW": "0.1"}, clock, web_db)
    failing_until(w, 10**9, [])
    w.signup("never@example.org")
    for _ in range(20):
        w.mails()
        clock.advance(60)
    assert Signups(w.store).mail_counts() == (0, 1)
    clock.advance(48 * 3600)
    w.signup("someone.else@example.org", ip="192.0.2.99")  # a request purges what expired
    assert w.store.get_by_email("never@example.org") is None
    assert Signups(w.store).mail_counts()[1] == 0 and "given up" not in cli_run(w, "status").output
    w.store.close()
