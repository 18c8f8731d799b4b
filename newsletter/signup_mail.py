"""Confirmation and welcome emails for web signups, and the one background thread that sends them.

The emails come from editor-overridable templates (``signup-confirm.txt.j2`` /
``.html.j2``, ``signup-welcome.*``) and go through the same message builder and
configured transport as issues, so they get the same headers and checks.

Sending happens off the request thread, so a signup page answers in the same time
whether or not an email goes out: response timing does not tell who is on the list.
What to send is durable (the ``signup_outbox`` table); the thread only drains it.
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import nullcontext
from typing import Callable, ContextManager

import jinja2

from newsletter.clock import SYSTEM, Clock
from newsletter.config import Settings
from newsletter.message import OutgoingMessage, PreparedIssue
from newsletter.render import RenderedEmail, content_hash, template_environment
from newsletter.signups import Signups
from newsletter.store import Subscriber
from newsletter.mime import PLACEHOLDERS
from newsletter.tokens import make_confirm_token

log = logging.getLogger("newsletter.signup")


def _render(settings: Settings, kind: str, clock: Clock, env: jinja2.Environment | None,
            **context: object) -> RenderedEmail:
    env = env or template_environment(settings.templates_dir)
    pub = settings.publication
    text_module = env.get_template(f"signup-{kind}.txt.j2").make_module({"pub": pub, **context})
    html = env.get_template(f"signup-{kind}.html.j2").render(pub=pub, **context)
    text, subject = str(text_module), str(getattr(text_module, "subject", pub.name)).strip()
    # A fresh slug per mail: the Message-ID is derived from it, and a resent confirmation is a new message.
    slug = f"signup-{kind}-{int(clock.now().timestamp() * 1000)}"
    return RenderedEmail(slug=slug, number=0, title=subject, subject=subject, preheader="", html=html,
                         text=text, lang=pub.lang, reply_to=None, content_hash=content_hash(html, text))


def confirmation_message(settings: Settings, sub: Subscriber, *, ttl_hours: int, nonce: str = "",
                         clock: Clock = SYSTEM, env: jinja2.Environment | None = None) -> OutgoingMessage:
    """The confirmation email for ``sub``: a link to ``/confirm/<token>`` (GET shows a button),
    bound to the request's ``nonce``. ``env``: a template environment to reuse (the web app's).

    It goes to an address that has agreed to nothing yet, so it carries nothing the stranger
    who filled in the form chose: no name in the text, nor in the To header."""
    secret = str(settings.secret_key)
    url = f"{settings.publication.base_url}/confirm/{make_confirm_token(secret, sub.id, sub.email, nonce)}"
    rendered = _render(settings, "confirm", clock, env, name="", confirm_url=url, ttl_hours=ttl_hours)
    # The unsubscribe link in it works too: "this was not me" suppresses the address.
    return PreparedIssue(rendered, settings.publication, secret).for_subscriber(sub.id, sub.email)


def welcome_message(settings: Settings, sub: Subscriber, *, clock: Clock = SYSTEM,
                    env: jinja2.Environment | None = None) -> OutgoingMessage:
    """The welcome email, after the reader confirmed. The name reaches the body only through the
    ``%%NAME%%`` placeholder, filled in one pass: a name that holds a placeholder stays literal."""
    rendered = _render(settings, "welcome", clock, env, name=PLACEHOLDERS["name"] if sub.name else "")
    return PreparedIssue(rendered, settings.publication, str(settings.secret_key)).for_subscriber(
        sub.id, sub.email, sub.name)


class SignupMailer:
    """Sends the signup outbox (``signup_outbox``, written in the request's transaction) from one
    daemon thread per process, started lazily and woken by each request.

    A row is leased before sending and deleted after, so a crash resends (a duplicate
    confirmation is harmless) rather than drops; failures back off and are retried over the
    retry window, then kept as given up (shown by ``subscribers list`` and ``status``), never
    deleted. Rows left by a previous process are sent when the app starts.
    """

    def __init__(self, signups: Callable[[], Signups], build: Callable[[str, Subscriber, str], OutgoingMessage],
                 send: Callable[[OutgoingMessage], None], *, poll: float = 30.0, lease: float = 300.0,
                 settle: float = 0.5, scope: Callable[[], ContextManager[None]] = nullcontext):
        self._signups, self._build, self._send = signups, build, send
        self._scope = scope  # each pass's hold on the database (serve on PostgreSQL: a pooled connection)
        self.poll, self.lease, self.settle = poll, lease, settle
        self._wake = threading.Event()
        self._now = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._stopped = False

    def wake(self, *, now: bool = False) -> None:
        """Start the sender thread if this process has none, and have it look at the outbox: after
        :attr:`settle` seconds, so the answer to the request that woke it goes out first (building
        and sending a mail beside it would make a new address's answer slower than a known one's),
        or at once with ``now``."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                self._thread = threading.Thread(target=self._run, name="signup-mail", daemon=True)
                self._pid = os.getpid()
                self._thread.start()
        if now:
            self._now.set()
        self._wake.set()

    def stop(self) -> None:
        """End the sender thread after its current pass (the app is closing: its pool goes)."""
        self._stopped = True
        self._wake.set()
        self._now.set()

    def _run(self) -> None:
        while not self._stopped:
            self._wake.clear()
            try:
                with self._scope():  # a connection the server dropped is replaced by the next pass
                    handled = self.run_once()
            except Exception as exc:  # noqa: BLE001 - a locked database now is not a dead sender later
                if self._stopped:  # the app closed its pool under this pass: nothing to report
                    return
                log.warning("signup outbox: %s", type(exc).__name__)
                handled = 0
            if not handled:
                if self._wake.wait(self.poll):
                    self._now.wait(self.settle)
                self._now.clear()

    def run_once(self) -> int:
        """Send what is due; returns how many rows were handled."""
        signups = self._signups()
        batch = signups.claim_due(self.lease)
        for mail in batch:
            if mail.sub is None:  # confirmed, expired, unsubscribed or gone meanwhile: nothing to send
                signups.drop(mail.id)
                continue
            try:
                self._send(self._build(mail.kind, mail.sub, mail.nonce))
            except Exception as exc:  # noqa: BLE001 - one bad mail must not stop the others
                again = signups.failed(mail.id, f"{type(exc).__name__}: {exc}")
                log.error("signup %s mail not sent (%s)%s", mail.kind, type(exc).__name__,
                          "; will retry" if again else "; retry window over, kept as not sent")
            else:
                signups.sent(mail.id)
        return len(batch)

    def join(self, polls: int = 400) -> None:
        """Wait (bounded) until nothing due is left in the outbox: for tests and shutdown."""
        self.wake(now=True)
        for _ in range(polls):
            if self._signups().due_count() == 0:
                return
            threading.Event().wait(0.025)
        raise TimeoutError("signup outbox did not drain")


def transport_sender(settings: Settings) -> Callable[[OutgoingMessage], None]:
    """Send one message through the configured transport; raise on failure (logged by the queue)."""
    from newsletter.transports import get_transport

    def send(message: OutgoingMessage) -> None:
        with get_transport(settings) as transport:
            transport.open()
            result = transport.send([message])[0]
        if not result.status.delivered:
            raise RuntimeError(f"transport refused the message: {result.status.value}")

    return send
