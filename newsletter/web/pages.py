"""HTML pages of the public app: the built-in unsubscribe pages and the templated signup pages.

Each page carries its own Content-Security-Policy: no scripts, inline styles only by the
hash of their exact text, forms posting to this origin only.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from functools import lru_cache
from typing import Callable

import jinja2

from newsletter.config import Publication

STYLE = """
body{margin:0;padding:2rem 1rem;background:#f4f1ea;color:#1f2328;
font:1.0625rem/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:32rem;margin:0 auto;background:#fff;padding:2rem;border-radius:.5rem}
h1{font-size:1.5rem;margin:0 0 1rem}
button{font:inherit;padding:.6rem 1.4rem;border:0;border-radius:.35rem;background:#9b1c1c;color:#fff;cursor:pointer}
button:focus-visible{outline:3px solid #1f2328;outline-offset:3px}
.muted{color:#57606a;font-size:.9375rem}
"""

_STYLE_BLOCK = re.compile(r"<style>(.*?)</style>", re.S)


def signup_style(pub: Publication) -> str:
    """The signup pages' stylesheet in the publication's colours (values are checked CSS colours)."""
    c = {k: _css_color(getattr(pub, k), default) for k, default in (
        ("background_color", "#f4f1ea"), ("text_color", "#1f2328"), ("paper_color", "#ffffff"),
        ("accent_color", "#9b1c1c"), ("muted_color", "#57606a"))}
    return (STYLE.replace("#f4f1ea", c["background_color"]).replace("#1f2328", c["text_color"])
            .replace("#fff;", c["paper_color"] + ";", 1).replace("#9b1c1c", c["accent_color"])
            .replace("#57606a", c["muted_color"])
            + "label{display:block;font-weight:600;margin-bottom:.25rem}\n"
            "input,select{font:inherit;width:100%;box-sizing:border-box;padding:.55rem .6rem;"
            f"border:1px solid {c['muted_color']};border-radius:.35rem;background:#fff;color:#1f2328}}\n"
            f"input:focus-visible,select:focus-visible{{outline:3px solid {c['accent_color']};outline-offset:2px}}\n"
            ".nl-optional{font-weight:400}\n.nl-hp{display:none}\n"
            ".nl-error{border-left:4px solid #9b1c1c;padding-left:.75rem}\n"
            f".nl-consent{{font-size:.9375rem;color:{c['muted_color']}}}\n")


@lru_cache(maxsize=64)  # a handful of style blocks, the same on every page
def _style_hash(style: str) -> str:
    return f"'sha256-{base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()}'"


def _css_color(value: str, default: str) -> str:
    return value if re.fullmatch(r"#[0-9A-Fa-f]{3,8}|[a-z]{3,20}", value or "") else default


def csp_for(page: str) -> str:
    """A CSP allowing exactly the inline ``<style>`` blocks in ``page`` and nothing else."""
    hashes = " ".join(_style_hash(s) for s in _STYLE_BLOCK.findall(page)) or "'none'"
    return (f"default-src 'none'; style-src {hashes}; img-src 'self' https: data:; form-action 'self'; "
            "base-uri 'none'; frame-ancestors 'none'")


def simple_page(lang: str, title: str, body_html: str) -> str:
    """The built-in unsubscribe pages (not templated: they must work whatever the templates do)."""
    return (
        "<!doctype html>\n"
        f'<html lang="{html.escape(lang or "en")}">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="robots" content="noindex, nofollow">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n"
        f"<body>\n<main>\n{body_html}\n</main>\n</body>\n</html>\n"
    )


def in_html(_: Callable[..., str], message: str, values: dict[str, str]) -> str:
    """The catalog's text for ``message`` (``_`` is :func:`newsletter.i18n.translator`'s), escaped,
    with ``values`` (already HTML) put in its ``%(name)s`` places."""
    return html.escape(_(message)) % values


def signup_page(env: jinja2.Environment, pub: Publication, page: str, **context: object) -> str:
    """Render ``signup-page.html.j2`` (editor-overridable) for one of its pages."""
    values = {"email": "", "name": ""}
    values.update(context.pop("values", None) or {})  # type: ignore[arg-type]
    base = {"pub": pub, "lang": pub.lang or "en", "page": page, "style": signup_style(pub), "values": values,
            "action": "/subscribe", "form_token": "", "error": "", "notice": "", "masked": "",
            "consent": consent_line(pub), "subscribe_url": "/subscribe"}
    return env.get_template("signup-page.html.j2").render(**{**base, **context})


def consent_line(pub: Publication) -> str:
    """What the visitor agrees to; recorded with the subscription as the consent text."""
    return (f"By subscribing you agree to receive {pub.name} by email. We send you a link to confirm first, "
            "and every issue has a link to unsubscribe.")
