"""``/subscribe`` and ``/confirm/<token>``: signup with double opt-in.

* ``GET /subscribe`` — the form (email, optional name, the consent line).
* ``POST /subscribe`` — answers the same "check your inbox" page whether the address is
  new, pending, active or suppressed, whether a limit was hit or the honeypot was filled,
  so nobody can probe the list. Only an invalid address gets a 400 (the visitor's typo).
  A post without this server's form stamp (the embeddable snippet) gets the form back,
  filled in, to press once more: the minimum-time check needs a stamp we issued.
* ``GET /confirm/<token>`` — a button; changes nothing (link scanners follow GETs).
* ``POST /confirm/<token>`` — confirms: the reader becomes active, consent is recorded.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import sqlite3
from typing import Callable

from werkzeug.wrappers import Request, Response

from newsletter.errors import InputError
from newsletter.message import OutgoingMessage
from newsletter.signup_mail import SignupMailer, confirmation_message, welcome_message
from newsletter.signups import SignupLimits, Signups
from newsletter.store import Subscriber, SubscriberStore
from newsletter.tokens import CONFIRM, derive_key
from newsletter.web.app import WebApp, not_found, text_response
from newsletter.web.pages import consent_line, signup_page
from newsletter.i18n import offered_languages, translator
from newsletter.lang import negotiate, optional_tag
from newsletter.web.unsubscribe import mask_email, page_response, reader_language, subscriber_for

log = logging.getLogger("newsletter.signup")
_STAMP_RE = re.compile(r"[0-9]{1,12}\.[0-9a-f]{32}\Z")
MAX_FIELD = 320
SOURCE = "web signup"


def mount(app: WebApp, limits: SignupLimits, send: Callable[[OutgoingMessage], None], *, welcome: bool) -> None:
    """Add the signup routes to ``app``, and start sending any outbox left from before."""
    def build(kind: str, sub: Subscriber, nonce: str) -> OutgoingMessage:
        if kind == "welcome":
            return welcome_message(app.settings, sub, clock=app.clock, env=_env(app))
        return confirmation_message(app.settings, sub, ttl_hours=round(limits.confirm_ttl / 3600), nonce=nonce,
                                    clock=app.clock, env=_env(app))

    mailer = SignupMailer(lambda: Signups(app.store(), limits, app.clock), build, send, scope=app.scope)
    app.extensions["signup"] = {"limits": limits, "mail": mailer, "welcome": welcome}
    app.route("/subscribe", subscribe, ("GET", "POST"))
    app.route("/confirm/<token>", confirm, ("GET", "POST"))
    mailer.wake()


def _ext(app: WebApp) -> dict:
    return app.extensions["signup"]


def _signups(app: WebApp, store: SubscriberStore | None = None) -> Signups:
    return Signups(store or app.store(), _ext(app)["limits"], app.clock)


# ---- the form stamp (minimum time to fill) ----------------------------------------------
def form_stamp(app: WebApp) -> str:
    t = str(int(app.clock.now().timestamp()))
    return f"{t}.{_stamp_mac(app, t)}"


def _stamp_mac(app: WebApp, t: str) -> str:
    key = derive_key(str(app.settings.secret_key), "signup form stamp")
    return hmac.new(key, t.encode(), hashlib.sha256).hexdigest()[:32]


def _stamp_age(app: WebApp, stamp: str) -> float | None:
    """Seconds since we issued ``stamp``, or None when it is not one of ours (or older than a day)."""
    if len(stamp) > 45 or not _STAMP_RE.match(stamp):
        return None
    t, _, mac = stamp.partition(".")
    if not hmac.compare_digest(mac, _stamp_mac(app, t)):
        return None
    age = app.clock.now().timestamp() - int(t)
    return age if 0 <= age <= 86400 else None


# ---- handlers ----------------------------------------------------------------------------
def _form_page(app: WebApp, status: int = 200, *, lang: str, **context: object) -> Response:
    """The form, with a choice of language (the page's, the visitor's Accept-Language, preselected)."""
    languages = offered_languages(app.settings.publication.lang, app.settings.issues_dir)
    return _page(app, "form", status, lang=lang, form_token=form_stamp(app), languages=languages,
                 selected_lang=negotiate([lang], [t for t, _ in languages]) or app.settings.publication.lang,
                 **context)


def _page(app: WebApp, name: str, status: int = 200, *, lang: str, **context: object) -> Response:
    """A signup page in ``lang`` (its strings through the catalogs: ``_`` in the template)."""
    _ = translator(lang, app.settings.root)
    return page_response(signup_page(_env(app), app.settings.publication, name, lang=lang, _=_, **context), status)


def _env(app: WebApp):  # noqa: ANN202
    """The app's template environment, made once (``auto_reload`` still picks up an editor's changes):
    the signup pages and the confirmation and welcome emails share it."""
    env = app.extensions.get("templates")
    if env is None:
        from newsletter.render import template_environment

        env = app.extensions["templates"] = template_environment(app.settings.templates_dir)
    return env


def _origin_allowed(app: WebApp, request: Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser cross-site post (or a very old browser)
    return origin.strip().rstrip("/").lower() in app.settings.signup_origins


def subscribe(app: WebApp, request: Request) -> Response:
    lang = reader_language(app, request)
    if request.method != "POST":
        return _form_page(app, lang=lang)
    if not _origin_allowed(app, request):
        return text_response("Forbidden: this site may not post the signup form\n", 403)
    form = request.form
    fields = {k: form.get(k, "") for k in ("email", "name", "website", "form", "lang")}
    if any(len(v) > MAX_FIELD for v in fields.values()) or len(form) > 10:
        return text_response("400 Bad Request: a field is too long\n", 400)
    values = {"email": fields["email"].strip(), "name": fields["name"].strip()}
    age = _stamp_age(app, fields["form"])
    if fields["website"]:
        log.info("signup ignored: honeypot filled")
        return _page(app, "check-inbox", lang=lang)
    try:  # the language they read (the form's choice); one that is not a tag is ignored
        chosen = optional_tag(fields["lang"])
    except InputError:
        chosen = ""
    if age is None:  # the embedded snippet, or a stale page: one more press on our own form
        _ = translator(lang, app.settings.root)
        return _form_page(app, lang=lang, values=values,
                          notice=_("One more step: check your address and press Subscribe."))
    if age < _ext(app)["limits"].min_fill_seconds:
        log.info("signup ignored: form filled too fast")
        return _page(app, "check-inbox", lang=lang)
    consent = consent_line(app.settings.publication)
    try:
        decision = app.write(lambda store: _signups(app, store).request(
            values["email"], values["name"], ip=app.client_ip(request), source=SOURCE, consent=consent,
            lang=chosen))
    except InputError as exc:
        _ = translator(lang, app.settings.root)
        message = _("That name cannot be used.") if "name" in str(exc).split(" ")[0] else \
            _("Please enter a valid email address.")
        return _form_page(app, 400, lang=lang, values=values, error=message)
    log.info("signup request: %s", decision.why)
    try:
        app.write(lambda store: _signups(app, store).purge_expired())
    except sqlite3.Error as exc:  # housekeeping only: the visitor's request is already recorded
        log.warning("could not purge expired signups: %s", exc)
    response = _page(app, "check-inbox", lang=lang)
    # The sender wakes once the answer has gone, whatever the decision: building and sending a mail
    # beside the request would make it slower for a new address than for one already on the list.
    response.call_on_close(_ext(app)["mail"].wake)
    return response


_STATE_PAGES = {"done": ("subscribed", 200), "expired": ("expired", 410)}


def _state_page(app: WebApp, state: str, masked: str, open_page: str, lang: str) -> Response:
    """The page for a link's state: ``open_page`` while it is live, else done, expired or 404."""
    page, status = (open_page, 200) if state == "open" else _STATE_PAGES.get(state, ("", 404))
    return _page(app, page, status, masked=masked, lang=lang) if page else not_found()


def confirm(app: WebApp, request: Request, token: str) -> Response:
    if request.method == "POST":
        request.form  # noqa: B018 - read the (bounded) body before the database
    sub = subscriber_for(app, app.store(), token, CONFIRM)
    if sub is None:
        return not_found()
    masked = mask_email(sub.email)
    lang = reader_language(app, request, sub.lang)
    if request.method != "POST":
        return _state_page(app, _signups(app).confirmable(sub.id), masked, "confirm", lang)

    def apply(store: SubscriberStore) -> str:
        with store.transaction():  # the link checked again inside: a request made meanwhile retired it
            if subscriber_for(app, store, token, CONFIRM) is None:
                return "none"
            return _signups(app, store).confirm(sub.id, ip=app.client_ip(request), welcome=_ext(app)["welcome"])

    state = app.write(apply)
    if state == "open":
        log.info("signup confirmed")
        if _ext(app)["welcome"]:
            _ext(app)["mail"].wake()
    return _state_page(app, state, masked, "confirmed", lang)
