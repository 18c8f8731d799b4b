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
from newsletter.web.pages import csp_for, simple_page


def subscriber_for(app: WebApp, store: SubscriberStore, token: str, purpose: str = "unsubscribe"):  # noqa: ANN201
    """The reader a valid token names, or None. The token's shape is checked before any lookup."""
    return store.get_by_token(str(app.settings.secret_key), token, purpose, now=app.clock.now())


def page_response(page: str, status: int = 200) -> Response:
    response = Response(page, status=status, mimetype="text/html")
    response.headers["Content-Security-Policy"] = csp_for(page)
    return response


def _unsubscribed_page(app: WebApp, email: str, *, just_now: bool) -> Response:
    pub = app.settings.publication
    name, masked = html.escape(pub.name), html.escape(mask_email(email) if email else "Your address")
    tail = " Sorry to see you go." if just_now else ""
    verb = "will no longer receive" if just_now else "no longer receives"
    body = f"<h1>You are unsubscribed</h1>\n<p><strong>{masked}</strong> {verb} {name}.{tail}</p>"
    return page_response(simple_page(pub.lang, f"Unsubscribed — {pub.name}", body))


def unsubscribe(app: WebApp, request: Request, token: str) -> Response:
    if request.method == "POST":
        form = request.form  # read the whole (bounded) body before touching the database
        reason = "one-click (RFC 8058)" if form.get("List-Unsubscribe") == "One-Click" else "unsubscribe page"
        return _post(app, token, reason)
    sub = subscriber_for(app, app.store(), token)
    if sub is None:
        return not_found()
    if sub.status not in (ACTIVE, PENDING):
        return _unsubscribed_page(app, sub.email, just_now=False)
    pub = app.settings.publication
    name, masked = html.escape(pub.name), html.escape(mask_email(sub.email))
    body = (
        f"<h1>Unsubscribe from {name}?</h1>\n"
        f"<p>You will no longer receive {name} at <strong>{masked}</strong>.</p>\n"
        '<form method="post">\n'
        '<button type="submit" name="confirm" value="yes">Unsubscribe</button>\n</form>\n'
        '<p class="muted">If you did not mean to come here, just close this page; nothing has changed.</p>'
    )
    return page_response(simple_page(pub.lang, f"Unsubscribe — {pub.name}", body))


def _post(app: WebApp, token: str, reason: str) -> Response:
    def apply(store: SubscriberStore) -> str | None:
        if app.spool_waiting():
            drain_spool(app, store)
        sub = subscriber_for(app, store, token)
        if sub is None:
            return None
        store.unsubscribe(sub.id, reason)
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
    return _unsubscribed_page(app, email, just_now=True)


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
