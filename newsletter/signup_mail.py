"""Confirmation and welcome emails for web signups, and the one background thread that sends them.

The emails come from editor-overridable templates (``signup-confirm.txt.j2`` /
``.html.j2``, ``signup-welcome.*``) and go through the same message builder and
configured transport as issues, so they get the same headers and checks.

Sending happens off the request thread, so a signup page answers in the same time
whether or not an email goes out: response timing does not tell who is on the list.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Callable

from newsletter.clock import SYSTEM, Clock
from newsletter.config import Settings
from newsletter.message import OutgoingMessage, PreparedIssue
from newsletter.render import RenderedEmail, content_hash, template_environment
from newsletter.store import Subscriber
from newsletter.tokens import CONFIRM, make_token

log = logging.getLogger("newsletter.signup")


def _render(settings: Settings, kind: str, clock: Clock, **context: object) -> RenderedEmail:
    env = template_environment(settings.templates_dir)
    pub = settings.publication
    text_module = env.get_template(f"signup-{kind}.txt.j2").make_module({"pub": pub, **context})
    html = env.get_template(f"signup-{kind}.html.j2").render(pub=pub, **context)
    text, subject = str(text_module), str(getattr(text_module, "subject", pub.name)).strip()
    # A fresh slug per mail: the Message-ID is derived from it, and a resent confirmation is a new message.
    slug = f"signup-{kind}-{int(clock.now().timestamp() * 1000)}"
    return RenderedEmail(slug=slug, number=0, title=subject, subject=subject, preheader="", html=html,
                         text=text, lang=pub.lang, reply_to=None, content_hash=content_hash(html, text))


def confirmation_message(settings: Settings, sub: Subscriber, *, ttl_hours: int,
                         clock: Clock = SYSTEM) -> OutgoingMessage:
    """The confirmation email for ``sub``: a link to ``/confirm/<token>`` (GET shows a button)."""
    secret = str(settings.secret_key)
    url = f"{settings.publication.base_url}/confirm/{make_token(secret, sub.id, sub.email, CONFIRM)}"
    rendered = _render(settings, "confirm", clock, name=sub.name, confirm_url=url, ttl_hours=ttl_hours)
    # The unsubscribe link in it works too: "this was not me" suppresses the address.
    return PreparedIssue(rendered, settings.publication, secret).for_subscriber(sub.id, sub.email, sub.name)


def welcome_message(settings: Settings, sub: Subscriber, *, clock: Clock = SYSTEM) -> OutgoingMessage:
    rendered = _render(settings, "welcome", clock, name=sub.name)
    return PreparedIssue(rendered, settings.publication, str(settings.secret_key)).for_subscriber(
        sub.id, sub.email, sub.name)


class MailQueue:
    """A bounded queue with one daemon sender thread (started lazily, once per process).

    A full queue drops the job: the visitor sees the same page either way, and can ask again.
    Jobs are lost if the process dies; the address's 24-hour limit then delays a retry.
    """

    def __init__(self, send: Callable[[OutgoingMessage], None], maxsize: int = 200):
        self._send = send
        self._queue: queue.Queue[Callable[[], OutgoingMessage]] = queue.Queue(maxsize)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def put(self, build: Callable[[], OutgoingMessage]) -> bool:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="signup-mail", daemon=True)
                self._thread.start()
        try:
            self._queue.put_nowait(build)
            return True
        except queue.Full:
            log.warning("signup mail queue full; a confirmation email was dropped")
            return False

    def _run(self) -> None:
        while True:
            build = self._queue.get()
            try:
                self._send(build())
            except Exception as exc:  # noqa: BLE001 - one bad mail must not stop the sender
                log.error("signup mail not sent: %s", type(exc).__name__)
            finally:
                self._queue.task_done()

    def join(self) -> None:
        """Wait until every queued mail was handed to the transport (for tests and shutdown)."""
        self._queue.join()


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
