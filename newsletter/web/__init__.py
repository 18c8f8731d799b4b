"""The public web app: one-click unsubscribe, signup with double opt-in, and the web archive.

Routes (see the modules for each):

* ``/unsubscribe/<token>`` — GET a button, POST unsubscribes (RFC 8058 one-click too);
  :mod:`newsletter.web.unsubscribe`.
* ``/subscribe``, ``/confirm/<token>`` — signup with double opt-in (when ``base_url`` is set);
  :mod:`newsletter.web.signup`.
* ``POST /webhooks/<provider>`` — provider bounce/complaint webhooks (:mod:`newsletter.webhooks`).
* ``/language/<token>/<tag>`` — GET a button, POST sets the reader's language (which edition
  of future issues they get); :mod:`newsletter.web.language`.
* ``/healthz`` — ``ok``.
* anything else — files from the built web archive, when one is served.

Run it with ``newsletter serve`` (waitress, see :mod:`newsletter.web.server`), or under
another WSGI server::

    NEWSLETTER_ROOT=/srv/newsletter gunicorn 'newsletter.web:create_app()'
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from werkzeug.wrappers import Request, Response

from newsletter.clock import SYSTEM, Clock
from newsletter.config import Settings, load_settings
from newsletter.errors import ConfigError
from newsletter.web.app import MAX_BODY_BYTES, NOT_FOUND_BODY, WebApp
from newsletter.web.language import choose_language
from newsletter.web.middleware import clean_paths, security_headers, with_site
from newsletter.web.server import serve
from newsletter.web.unsubscribe import drain_spool, mask_email, unsubscribe
from newsletter.webhooks import MAX_BODY_BYTES as WEBHOOK_MAX_BODY, WebhookContext
from newsletter.webhooks import handle as handle_webhook

if TYPE_CHECKING:
    from newsletter.signups import SignupLimits

__all__ = ["MAX_BODY_BYTES", "NOT_FOUND_BODY", "WebApp", "create_app", "make_app", "mask_email", "serve", "signup_limits"]

log = logging.getLogger("newsletter.web")


def healthz(app: WebApp, request: Request) -> Response:
    return Response("ok\n", mimetype="text/plain")


def webhook(app: WebApp, request: Request, provider: str) -> Response:
    """``POST /webhooks/<provider>``: :mod:`newsletter.webhooks` (``app.webhooks`` is its context)."""
    return handle_webhook(provider, request, app.webhooks)  # type: ignore[attr-defined]


def signup_limits(settings: Settings) -> "SignupLimits":
    """The signup limits from the environment (each a one-line ConfigError when malformed)."""
    from newsletter.signups import SignupLimits

    d = SignupLimits()
    return SignupLimits(
        confirm_ttl=settings.integer("NEWSLETTER_CONFIRM_TTL", int(d.confirm_ttl), minimum=60),
        hourly_cap=settings.integer("NEWSLETTER_SIGNUP_HOURLY_CAP", d.hourly_cap),
        per_ip_hourly=settings.integer("NEWSLETTER_SIGNUP_PER_IP_HOURLY", d.per_ip_hourly),
        min_fill_seconds=float(settings.number("NEWSLETTER_SIGNUP_MIN_SECONDS", d.min_fill_seconds) or 0),
        # The delivery rule's window (hours), as DeliveryOptions reads it: a signup mail is deferred like an issue.
        retry_window=(settings.number("NEWSLETTER_RETRY_WINDOW", d.retry_window / 3600) or 0.0) * 3600,
    )


def make_app(settings: Settings, *, store_path: Path | str | None = None, site_dir: Path | str | None = None,
             clock: Clock = SYSTEM, mail_sender: Callable | None = None) -> Callable:
    """The WSGI app. ``store_path`` (a SQLite file or a PostgreSQL URL) defaults to NEWSLETTER_DB; ``site_dir`` is a built web
    archive to serve under ``/``; ``mail_sender(message)`` replaces the configured transport (tests)."""
    from newsletter.signup_mail import transport_sender
    from newsletter.signups import Signups
    from newsletter.web import signup

    core = WebApp(settings, store_path if store_path is not None else settings.db_target, clock=clock)
    core.route("/unsubscribe/<token>", unsubscribe, ("GET", "POST"))
    core.route("/language/<token>/<tag>", choose_language, ("GET", "POST"))
    core.route("/healthz", healthz, reads_subscribers=False)
    core.webhooks = WebhookContext(settings, with_store=core.write, clock=clock)  # type: ignore[attr-defined]
    core.route("/webhooks/<provider>", webhook, ("POST",), max_body=WEBHOOK_MAX_BODY + 1)
    if settings.publication.base_url:
        settings.form_origins  # noqa: B018 - a bad NEWSLETTER_FORM_ORIGINS is refused at start, not at each POST
        welcome = settings.flag("NEWSLETTER_SIGNUP_WELCOME")
        limits = signup_limits(settings)
        signup.mount(core, limits, mail_sender or transport_sender(settings), welcome=welcome)
        Signups(core.store(), limits, clock).purge_expired()
    else:
        log.warning("base_url is not set: the signup form is off (confirmation links need it)")
    drain_spool(core, core.store())  # unsubscribes kept while the database was locked
    core.release()  # PostgreSQL: the start-up's connection goes back to the pool
    app: Callable = core
    if site_dir is not None:
        site = Path(site_dir)
        if not site.is_dir():
            raise ConfigError("site directory does not exist", path=site)
        app = with_site(core, core.owns, site, settings.publication.lang)
    wrapped = security_headers(clean_paths(app), hsts=settings.publication.base_url.startswith("https://"))
    wrapped.web_app = core  # type: ignore[attr-defined]  # for tests and the server
    return wrapped


def create_app() -> Callable:
    """App factory for WSGI servers (``gunicorn 'newsletter.web:create_app()'``).

    Settings come from the environment: ``NEWSLETTER_ROOT`` (publication root, default the
    working directory), ``NEWSLETTER_DB``, ``NEWSLETTER_SITE_DIR`` (optional archive to serve)
    and ``NEWSLETTER_SECRET_KEY``, which is required here: without the key the emails were
    signed with, no unsubscribe link would verify.
    """
    settings = load_settings()
    root = settings.get("NEWSLETTER_ROOT")
    if root:
        settings = load_settings(Path(root))
    if not settings.has_secret_key:
        raise ConfigError("NEWSLETTER_SECRET_KEY is not set; it is needed to verify unsubscribe links "
                          "(use the same key the newsletter was sent with)")
    site = settings.get("NEWSLETTER_SITE_DIR")
    return make_app(settings, site_dir=settings.path("NEWSLETTER_SITE_DIR", site) if site else None)
