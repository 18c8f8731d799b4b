"""WSGI wrappers around the app: path hygiene, the static web archive, security headers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterable

from werkzeug.middleware.shared_data import SharedDataMiddleware
from werkzeug.wrappers import Response

from newsletter.web.app import not_found, text_response

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]

# The archive is static HTML built from email templates: inline styles and remote images, no scripts.
SITE_CSP = ("default-src 'self'; img-src 'self' https: data:; style-src 'self' 'unsafe-inline'; "
            "script-src 'none'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'self'")
_BAD_PATH = re.compile(r"[\x00-\x1f\x7f\\]")


def clean_paths(app: WSGIApp) -> WSGIApp:
    """One leading slash (``//issues/x`` would otherwise become a protocol-relative redirect,
    and ``//./x`` a host name under some servers), no dot segments, no control characters."""

    def middleware(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        segments = path.split("/")
        if _BAD_PATH.search(path) or "." in segments or ".." in segments or len(path) > 2048:
            return not_found()(environ, start_response)
        environ["PATH_INFO"] = "/" + path.lstrip("/")
        return app(environ, start_response)

    return middleware


def with_site(app: WSGIApp, owns: Callable[[str], bool], site_dir: Path, lang: str = "en") -> WSGIApp:
    """Serve the built web archive under ``/``; the app's own routes win over its files. ``/``
    sends a visitor whose Accept-Language another language's index matches to it (``/zh-Hans/``)."""
    static = _index_html(SharedDataMiddleware(lambda e, s: not_found()(e, s),
                                              {"/": str(site_dir)}, cache_timeout=300), site_dir)
    static = _language_index(static, site_dir, lang)

    def dispatch(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if owns(environ.get("PATH_INFO", "")):
            return app(environ, start_response)
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):  # files are read, never posted to
            response = text_response("Method not allowed\n", 405)
            response.headers["Allow"] = "GET, HEAD"
            return response(environ, start_response)
        try:
            return static(environ, start_response)
        except (OSError, ValueError):
            # A path the file system cannot take (a segment over NAME_MAX, a whole path over
            # PATH_MAX, bytes it cannot encode): no such file, whatever the errno says.
            return not_found()(environ, start_response)

    return dispatch


def _language_index(app: WSGIApp, site_dir: Path, main_lang: str) -> WSGIApp:
    """``/`` in the visitor's language: a 302 to ``/<tag>/`` when Accept-Language prefers a language
    the archive has an index for (``newsletter.archive`` writes one per edition language)."""
    from newsletter.lang import accepted, negotiate, normalise_tag

    def languages() -> list[str]:
        found = [main_lang]
        for index in site_dir.glob("*/index.html"):
            try:
                found.append(normalise_tag(index.parent.name))
            except Exception:  # a folder that is not a language: not an index of one
                continue
        return found

    def middleware(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") not in ("/", "/index.html"):
            return app(environ, start_response)
        chosen = negotiate(accepted(environ.get("HTTP_ACCEPT_LANGUAGE")), languages())
        if chosen and chosen != main_lang and (site_dir / chosen / "index.html").is_file():
            headers = {"Location": f"/{chosen}/", "Vary": "Accept-Language", "Cache-Control": "no-cache"}
            return Response("", status=302, headers=headers)(environ, start_response)

        def start(status: str, headers: list[tuple[str, str]], exc_info=None):  # noqa: ANN001
            headers = list(headers) + [("Vary", "Accept-Language")]
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        return app(environ, start)

    return middleware


def _index_html(app: WSGIApp, site_dir: Path) -> WSGIApp:
    """Map directory URLs to their ``index.html`` (``/2025/`` → ``/2025/index.html``)
    and redirect ``/2025`` to ``/2025/`` (a same-site path) so relative links resolve."""
    root = site_dir.resolve()

    def middleware(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        target = root.joinpath(*[p for p in path.split("/") if p])
        if target.is_dir() and (target / "index.html").is_file():
            if not path.endswith("/"):
                location = "/" + path.lstrip("/") + "/"
                if environ.get("QUERY_STRING"):
                    location += "?" + environ["QUERY_STRING"]
                return Response("", status=308, headers={"Location": location})(environ, start_response)
            environ = {**environ, "PATH_INFO": path + "index.html"}
        return app(environ, start_response)

    return middleware


def security_headers(app: WSGIApp, *, hsts: bool) -> WSGIApp:
    """Headers every response gets; routes may set a stricter CSP of their own."""
    extra = [("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"),
             ("Content-Security-Policy", SITE_CSP), ("X-Frame-Options", "SAMEORIGIN"),
             ("Cross-Origin-Opener-Policy", "same-origin"),
             ("Permissions-Policy", "camera=(), microphone=(), geolocation=(), interest-cohort=()")]
    if hsts:
        extra.append(("Strict-Transport-Security", "max-age=31536000"))

    def middleware(environ: dict, start_response: Callable) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info=None):  # noqa: ANN001
            present = {k.lower() for k, _ in headers}
            headers = list(headers) + [(k, v) for k, v in extra if k.lower() not in present]
            if environ.get("PATH_INFO", "").startswith(("/unsubscribe/", "/confirm/", "/subscribe", "/language/")):
                headers = [(k, v) for k, v in headers if k.lower() not in ("cache-control", "x-frame-options")]
                headers += [("Cache-Control", "no-store"), ("X-Frame-Options", "DENY")]
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        return app(environ, start)

    return middleware
