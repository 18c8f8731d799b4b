"""``/language/<token>/<tag>``: a reader chooses the edition of future issues.

Every email that has other editions carries, per edition, this link with a token signed for
this one purpose (``tokens.LANGUAGE``). As for unsubscribing, the GET shows a button and changes
nothing (link scanners follow GETs); the POST sets the reader's language, which the next
delivery's freeze uses. A bad token, an unknown reader or a tag that is not a language tag is
the same plain 404. The page is in the language being chosen when there is a catalog for it.
"""

from __future__ import annotations

import html

from werkzeug.wrappers import Request, Response

from newsletter.addresses import mask_email
from newsletter.errors import InputError
from newsletter.i18n import page_language, translator
from newsletter.lang import display_name, normalise_tag
from newsletter.store import ACTIVE, SubscriberStore
from newsletter.tokens import LANGUAGE
from newsletter.web.app import WebApp, not_found
from newsletter.web.pages import in_html, simple_page
from newsletter.web.unsubscribe import page_response, subscriber_for


def choose_language(app: WebApp, request: Request, token: str, tag: str) -> Response:
    if request.method == "POST":
        request.form  # noqa: B018 - read the (bounded) body before the database
    try:
        tag = normalise_tag(tag)
    except InputError:
        return not_found()
    sub = subscriber_for(app, app.store(), token, LANGUAGE)
    if sub is None or sub.status != ACTIVE:
        return not_found()
    pub = app.settings.publication
    lang = page_language(sub.lang, request.headers.get("Accept-Language"), pub.lang, app.settings.root, first=tag)
    _ = translator(lang, app.settings.root)
    e = html.escape
    values = {"name": e(pub.name), "email": f"<strong>{e(mask_email(sub.email))}</strong>",
              "language": e(display_name(tag, lang))}
    if request.method != "POST":
        body = (f"<h1>{e(_('Which edition of %(name)s?', name=pub.name))}</h1>\n"
                f"<p>{in_html(_, 'From the next issue on, %(email)s will receive %(name)s in %(language)s.', values)}</p>\n"
                '<form method="post">\n'
                f'<button type="submit" name="lang" value="{e(tag)}">{e(_("Send me this edition"))}</button>\n</form>\n'
                f'<p class="muted">{e(_("If you did not mean to come here, just close this page; nothing has changed."))}</p>')
        return page_response(simple_page(lang, f"{_('Language')} — {pub.name}", body))
    app.write(lambda store: store.set_lang(sub.id, tag))
    body = (f"<h1>{e(_('Language changed'))}</h1>\n"
            f"<p>{in_html(_, '%(email)s will receive %(name)s in %(language)s from the next issue on.', values)}</p>")
    return page_response(simple_page(lang, f"{_('Language changed')} — {pub.name}", body))
