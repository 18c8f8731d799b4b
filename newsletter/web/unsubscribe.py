"""``/unsubscribe/<token>``: GET shows a button and changes nothing; POST unsubscribes.

POST accepts the RFC 8058 one-click body ``List-Unsubscribe=One-Click`` and the
page's button. Every failure (malformed, forged or altered token, unknown or
removed reader) is the same plain 404, so the app never tells who is subscribed.

An unsubscribe is never lost: the body is read before the database is touched,
a locked database is retried within the request, and if it stays locked the
request is appended to a durable spool file (fsynced) that is applied on the
next request, when the app starts, and before a delivery freezes or resumes its list
(:mod:`newsletter.unsubscribe_spool`).
"""

from __future__ import annotations

import html
import sqlite3

from werkzeug.wrappers import Request, Response

from newsletter import unsubscribe_spool
from newsletter.addresses import mask_email
from newsletter.db import is_locked
from newsletter.store import ACTIVE, PENDING, SubscriberStore
from newsletter.web.app import WebApp, not_found, text_response
from newsletter.i18n import page_language, translator
from newsletter.web.pages import csp_for, in_html, simple_page


def subscriber_for(app: WebApp, store: SubscriberStore, token: str, purpose: str = "unsubscribe"):  # noqa: ANN201
    """The reader a valid token names, or None. The token's shape is checked before any lookup."""
    return store.get_by_token(str(app.settings.secret_key), token, purpose, now=app.clock.now())


def page_response(page: str, status: int = 200) -> Response:
    response = Response(page, status=status, mimetype="text/html")
    response.headers["Content-Security-Policy"] = csp_for(page)
    return response


def _unsubscribed_page(app: WebApp, email: str, *, just_now: bool, lang: str) -> Response:
    pub = app.settings.publication
    _ = translator(lang, app.settings.root)
    values = {"name": html.escape(pub.name),
              "email": f"<strong>{html.escape(mask_email(email) if email else _('Your address'))}</strong>"}
    said = ("%(email)s will no longer receive %(name)s. Sorry to see you go." if just_now
            else "%(email)s no longer receives %(name)s.")
    body = f"<h1>{html.escape(_('You are unsubscribed'))}</h1>\n<p>{in_html(_, said, values)}</p>"
    return page_response(simple_page(lang, f"{_('Unsubscribed')} — {pub.name}", body))


def reader_language(app: WebApp, request: Request, stored: str | None = None) -> str:
    """A public page's language: the reader's stored one, else Accept-Language, else the publication's."""
    return page_language(stored, request.headers.get("Accept-Language"), app.settings.publication.lang,
                         app.settings.root)


def unsubscribe(app: WebApp, request: Request, token: str) -> Response:
    if request.method == "POST":
        form = request.form  # read the whole (bounded) body before touching the database
        reason = "one-click (RFC 8058)" if form.get("List-Unsubscribe") == "One-Click" else "unsubscribe page"
        return _post(app, token, reason, request)
    sub = subscriber_for(app, app.store(), token)
    if sub is None:
        return not_found()
    lang = reader_language(app, request, sub.lang)
    if sub.status not in (ACTIVE, PENDING):
        return _unsubscribed_page(app, sub.email, just_now=False, lang=lang)
    pub = app.settings.publication
    _ = translator(lang, app.settings.root)
    values = {"name": html.escape(pub.name), "email": f"<strong>{html.escape(mask_email(sub.email))}</strong>"}
    body = (
        f"<h1>{html.escape(_('Unsubscribe from %(name)s?', name=pub.name))}</h1>\n"
        f"<p>{in_html(_, 'You will no longer receive %(name)s at %(email)s.', values)}</p>\n"
        '<form method="post">\n'
        f'<button type="submit" name="confirm" value="yes">{html.escape(_("Unsubscribe"))}</button>\n</form>\n'
        f'<p class="muted">{html.escape(_("If you did not mean to come here, just close this page; nothing has changed."))}</p>'
    )
    return page_response(simple_page(lang, f"{_('Unsubscribe')} — {pub.name}", body))


def _post(app: WebApp, token: str, reason: str, request: Request) -> Response:
    stored: list[str] = []

    def apply(store: SubscriberStore) -> str | None:
        drain_spool(app, store)
        sub = subscriber_for(app, store, token)
        if sub is None:
            return None
        store.unsubscribe(sub.id, reason)
        stored[:] = [sub.lang]
        return sub.email

    try:
        email = app.write(apply)
    except sqlite3.OperationalError as exc:
        if not is_locked(exc):
            raise
        # A long lock and a flood of well-shaped tokens: say so, keep the disk.
        if unsubscribe_spool.spool_full(app.store_path):
            return text_response("Temporarily unavailable; please try again\n", 503)
        email = _spool(app, token, reason)
    if email is None:
        return not_found()
    return _unsubscribed_page(app, email, just_now=True, lang=reader_language(app, request, *stored[:1]))


# ---- the durable spool (newsletter.unsubscribe_spool) --------------------------------------
def _spool(app: WebApp, token: str, reason: str) -> str | None:
    """The database stayed locked: keep the request on disk. Only a token of the right shape is
    kept; it is verified when applied. Returns "" (no address to show), or None for a bad token."""
    from newsletter.tokens import token_subscriber_id

    if token_subscriber_id(str(app.settings.secret_key), token, now=app.clock.now()) is None:
        return None
    unsubscribe_spool.spool_unsubscribe(app.store_path, token, reason, app.clock.now())
    return ""


def drain_spool(app: WebApp, store: SubscriberStore) -> int:
    """Apply spooled unsubscribes (in one transaction); returns how many were valid."""
    return unsubscribe_spool.apply_spool(store, str(app.settings.secret_key), now=app.clock.now(),
                                         db_path=app.store_path)
