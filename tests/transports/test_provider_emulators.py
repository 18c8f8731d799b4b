"""Each HTTP provider against its local emulator (tests/provider_emulator.py): rate limits,
an outage, lost replies, through the real delivery engine, on one fake clock.

The emulator and the client read the same :class:`~newsletter.clock.FakeClock`, so the
token bucket, the 503 window and every pause land at the same place on every run and
a minute of simulated sending takes no wall time. Nothing here asserts on wall time.
"""

from __future__ import annotations

import collections
import socket
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

from newsletter.clock import FakeClock
from newsletter.config import Publication
from newsletter.delivery import DeliveryOptions, run_delivery
from newsletter.errors import ConfigError
from newsletter.ledger import open_ledger, start_or_resume
from newsletter.message import PreparedIssue
from newsletter.render import RenderedEmail, content_hash
from newsletter.transports import get_transport
from newsletter.transports.base import Status
from newsletter.transports.ratelimit import RateLimiter
from tests.provider_emulator import KEY, PROVIDERS, ProviderEmulator, env
from tests.transports import spec_check

SECRET = "test-secret-key-0123456789"
START = datetime(2031, 3, 4, 9, 0, tzinfo=timezone.utc)
READERS = 40
#: The emulator's limit (requests/s) and its 503 window, in seconds of (fake) time from the start.
RATE = 3.0
OUTAGE = (2.0, 7.0)
#: Providers whose idempotency keys let the provider drop a resent duplicate.
KEYED = ("resend", "brevo")


def prepared_issue() -> PreparedIssue:
    html = ('<p>Hello %%NAME%% &amp; welcome</p><a href="%%UNSUBSCRIBE_URL%%">unsubscribe %%EMAIL%%</a>')
    text = "Hello %%NAME%%\n\nUnsubscribe: %%UNSUBSCRIBE_URL%%\n"
    rendered = RenderedEmail(slug="001-hello", number=1, title="Hello", subject="Hello", preheader="", html=html,
                             text=text, lang="en", reply_to=None, content_hash=content_hash("Hello", html, text))
    pub = Publication(name="Test Letter", from_email="news@example.org", base_url="https://news.example.org")
    return PreparedIssue(rendered, pub, SECRET)


def add_readers(db: Path, n: int) -> dict[str, tuple[int, str]]:
    """n active subscribers; email -> (id, name). Some names need HTML escaping."""
    conn = open_ledger(db)
    with conn:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO subscribers(email, name, status, created_at, changed_at) VALUES(?, ?, "
                         "'active', '2030-01-01T00:00:00.000000Z', '2030-01-01T00:00:00.000000Z')",
                         [(f"user{i:03d}@example.org", f"User {i}" + (" & Co" if i % 3 == 0 else ""))
                          for i in range(n)])
        conn.execute("COMMIT")
    rows = conn.execute("SELECT email, id, name FROM subscribers").fetchall()
    conn.close()
    return {email: (sid, name) for email, sid, name in rows}


def deliver(db: Path, provider: str, api: ProviderEmulator, clock: FakeClock, make_settings, **opts):
    """One engine run of the delivery for the test issue, every part on the fake clock."""
    prepared = prepared_issue()
    settings = make_settings(env(provider, api.url))
    conn = open_ledger(db)
    try:
        did = start_or_resume(conn, prepared, now=clock.now)
        return run_delivery(conn, did, prepared, lambda: get_transport(settings, provider, clock=clock),
                            options=DeliveryOptions(**opts), clock=clock.monotonic, sleep=clock.sleep,
                            now=clock.now)
    finally:
        conn.close()


def assert_each_reader_got_their_own_message(api: ProviderEmulator, readers: dict[str, tuple[int, str]]) -> None:
    prepared = prepared_issue()
    for d in api.delivered:
        sid, name = readers[d.recipient]
        own = prepared.for_subscriber(sid, d.recipient, name)
        assert d.text.replace("\r\n", "\n").rstrip("\n") == own.text.rstrip("\n"), d.recipient
        assert d.html.replace("\r\n", "\n").rstrip("\n") == own.html.rstrip("\n"), d.recipient
        unsubscribe = {k.lower(): v for k, v in d.headers.items()}["list-unsubscribe"]
        assert "".join(unsubscribe.split()) == "".join(own.extra_headers["List-Unsubscribe"].split())


@pytest.mark.parametrize("provider", PROVIDERS)
def test_rate_limit_and_outage_lose_and_double_nobody(provider, tmp_path, make_settings):
    # The issue's scenario: a provider that allows a few requests a second and is down for five
    # seconds in the middle. Every reader gets exactly one copy, their own, and the run ends done.
    clock = FakeClock(START)
    readers = add_readers(tmp_path / "news.db", READERS)
    with ProviderEmulator(provider, clock, rate=RATE, outage=OUTAGE) as api:
        report = deliver(tmp_path / "news.db", provider, api, clock, make_settings, batch_size=4)
    assert api.counters.bad == 0, api.counters.errors
    assert api.counters.rate_limited > 0 and api.counters.outage > 0  # both faults really happened
    assert spec_check.check_received(provider, api.received) == api.counters.requests  # retries too
    assert collections.Counter(d.recipient for d in api.delivered) == {e: 1 for e in readers}
    assert report.state == "done" and report.sent == READERS and report.pending == 0
    assert_each_reader_got_their_own_message(api, readers)


@pytest.mark.parametrize("provider", KEYED)
def test_lost_replies_are_resent_under_the_same_key_and_deduplicated(provider, tmp_path, make_settings):
    # Resend "Idempotency Keys" / Brevo idempotencyKey: a request that was carried out but whose
    # reply was lost is uncertain; sent again under the same key, the provider drops the copy.
    # Brevo keys each reader (one request per message), so a reader retried in a new batch (the
    # engine regroups a partial retry under a new batch number) is still recognised.
    clock = FakeClock(START)
    readers = add_readers(tmp_path / "news.db", READERS)
    with ProviderEmulator(provider, clock, rate=RATE, lose_replies=frozenset({2, 5, 9})) as api:
        report = deliver(tmp_path / "news.db", provider, api, clock, make_settings,
                         batch_size=4)
    assert api.counters.deduplicated >= 1
    assert collections.Counter(d.recipient for d in api.delivered) == {e: 1 for e in readers}
    assert report.state == "done" and report.sent == READERS


def test_the_rate_settles_near_the_providers_limit(make_settings, make_messages):
    # AIMD: against 10 requests/s, 600 one-message requests take close to the ideal 60 s of
    # (simulated) time, with few 429s once the rate has settled. One request at a time, so the
    # run is the same every time (concurrent threads on a fake clock interleave by chance).
    clock = FakeClock(START)
    with ProviderEmulator("brevo", clock, rate=10.0) as api:
        transport = get_transport(make_settings({**env("brevo", api.url), "BREVO_CONCURRENCY": "1"}), "brevo",
                                  clock=clock)
        with transport:
            results = [r for _ in range(12) for r in transport.send(make_messages(50))]
    assert all(r.status is Status.SENT for r in results)
    ideal = 600 / 10.0
    assert clock.monotonic() <= 1.3 * ideal
    assert api.counters.rate_limited <= 0.05 * api.counters.requests
    assert 8.0 <= transport.limiter.rate <= 13.0


def test_limiter_honours_retry_after_and_never_exceeds_max_rate():
    clock = FakeClock(START)
    limiter = RateLimiter(clock, max_rate=5.0)
    granted = [limiter.acquire() for _ in range(6)]
    assert granted == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    limiter.limited(3.0, granted[-1])
    assert limiter.acquire() == pytest.approx(4.0)  # paused for Retry-After
    assert limiter.rate == pytest.approx(2.5)  # halved
    limiter.limited(3.0, granted[0])  # an answer to a request sent before the cut: no second cut
    assert limiter.rate == pytest.approx(2.5)
    for _ in range(200):
        limiter.accepted(limiter.acquire())
    assert limiter.rate <= 5.0  # NEWSLETTER_RATE-style upper bound holds however clean the answers
    limiter.limited(10_000.0, clock.monotonic())
    before = clock.monotonic()
    limiter.acquire()
    assert clock.monotonic() - before == pytest.approx(limiter.max_pause)  # a hostile header is bounded


def test_brevo_sends_concurrently_within_the_adapted_rate(make_settings, make_messages):
    # One request per message (Brevo has no per-version headers), BREVO_CONCURRENCY at a time.
    clock = FakeClock(START)
    with ProviderEmulator("brevo", clock) as api:
        in_flight, peak, seen = [0], [0], threading.Condition()
        answer = api.handle

        def slow(*args):
            with seen:  # hold each request until a second one is in flight (bounded: 5 s)
                in_flight[0] += 1
                peak[0] = max(peak[0], in_flight[0])
                seen.notify_all()
                seen.wait_for(lambda: peak[0] >= 2, timeout=5)
                in_flight[0] -= 1
            return answer(*args)

        api.handle = slow  # type: ignore[method-assign]
        transport = get_transport(make_settings({**env("brevo", api.url), "BREVO_CONCURRENCY": "4"}), "brevo",
                                  clock=clock)
        with transport:
            messages = make_messages(12)
            results = transport.send(messages)
    assert [r.recipient for r in results] == [m.to_email for m in messages]  # input order kept
    assert all(r.status is Status.SENT for r in results)
    assert 2 <= peak[0] <= 4


# ---- a connection lost before or after the request went out ------------------------------
class _Closer:
    """A loopback server that reads a request, fully or only its head, then hangs up."""

    def __init__(self, read_body: bool):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.read_body = read_body
        self.received = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            while self.read_body and len(body) < length:
                body += conn.recv(65536)
            self.received = len(body)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    def close(self) -> None:
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.mark.parametrize("read_body, status", [(True, Status.UNCERTAIN), (False, Status.FAILED_TEMPORARY)],
                         ids=["after-the-body", "before-the-body"])
def test_connection_lost_after_the_body_is_uncertain_before_it_temporary(read_body, status, make_settings,
                                                                         make_messages):
    # The issue: an HTTP connection aborted after the body was sent was retried whatever
    # --no-resend-uncertain said. A server may act on a complete request; never on half of one.
    server = _Closer(read_body)
    try:
        transport = get_transport(make_settings(env("resend", server.url)), "resend", clock=FakeClock(START))
        big = make_messages(1)[0]
        # A body far larger than the socket buffers, so "before" really is before it all went out.
        pad = big.prepared.personalise(big.recipient)
        pad.__dict__["html"] = big.html + "x" * (8 << 20)
        with transport:
            (result,) = transport.send([pad], idempotency_key="nl-1-1")
    finally:
        server.close()
    assert result.status is status, result.error
    assert KEY not in (result.error or "")


# ---- credentials refused before anyone is claimed -----------------------------------------
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("bad", [" " + KEY, KEY + "\r", KEY + "\n", "kéy-\u20ac-0123"],
                         ids=["leading-space", "trailing-cr", "trailing-lf", "not-latin-1"])
def test_a_malformed_key_is_refused_at_open_naming_the_setting_not_the_value(provider, bad, make_settings,
                                                                              make_messages):
    settings_env = env(provider, "http://127.0.0.1:9")
    setting = next(k for k, v in settings_env.items() if v == KEY)
    transport = get_transport(make_settings({**settings_env, setting: bad}), provider, clock=FakeClock(START))
    with pytest.raises(ConfigError) as err:
        transport.open()
    message = err.value.format_message()
    assert setting in message and "\n" not in message.strip()
    assert bad.strip() not in message and KEY not in message
    with pytest.raises(ConfigError):  # send() checks too, before any request
        transport.send(make_messages(1))
