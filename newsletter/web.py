"""The unsubscribe web app (WSGI, Werkzeug), optionally serving the static web archive.

Routes:

* ``GET /unsubscribe/<token>`` — a confirmation page with an "Unsubscribe" button.
  It changes nothing: mail scanners and link previewers follow GET links.
* ``POST /unsubscribe/<token>`` — unsubscribes (idempotent). Accepts the RFC 8058
  one-click body ``List-Unsubscribe=One-Click`` that mail clients send, and the form button.
* ``POST /webhooks/<provider>`` — provider bounce/complaint webhooks (:mod:`newsletter.webhooks`).
* ``GET /healthz`` — ``ok``.
* anything else — files from ``site_dir`` (the web archive) when given, ``index.html``
  for directories.

Every failure on the unsubscribe routes (malformed, forged or altered token, unknown
or removed subscriber) gets the same plain ``404 Not found``, so the app never tells
anyone who is subscribed.

Run it for development with :func:`serve`. In production run it behind a reverse proxy
that terminates TLS, under a WSGI server, e.g.::

    NEWSLETTER_ROOT=/srv/newsletter gunicorn 'newsletter.web:create_app()'
"""

from __future__ import annotations

import base64
import hashlib
import html
import os
import threading
from pathlib import Path
from typing import Callable, Iterable

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.middleware.shared_data import SharedDataMiddleware
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from newsletter.config import Settings, load_settings
from newsletter.errors import ConfigError
from newsletter.store import ACTIVE, Subscriber, SubscriberStore
from newsletter.webhooks import WebhookContext
from newsletter.webhooks import handle as handle_webhook

MAX_TOKEN_LENGTH = 128
MAX_BODY_BYTES = 16 * 1024
NOT_FOUND_BODY = "Not found\n"

_STYLE = """
body{margin:0;padding:2rem 1rem;background:#f4f1ea;color:#1f2328;
font:1.0625rem/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:32rem;margin:0 auto;background:#fff;padding:2rem;border-radius:.5rem}
h1{font-size:1.5rem;margin:0 0 1rem}
button{font:inherit;padding:.6rem 1.4rem;border:0;border-radius:.35rem;background:#9b1c1c;color:#fff;cursor:pointer}
button:focus-visible{outline:3px solid #1f2328;outline-offset:3px}
.muted{color:#57606a;font-size:.9375rem}
"""
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()

# The unsubscribe pages need nothing but their one inline <style> and a same-origin form post.
PAGE_CSP = (f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; "
            "base-uri 'none'; frame-ancestors 'none'")
# The archive is static HTML built from email templates: inline styles and remote images, no scripts.
SITE_CSP = ("default-src 'self'; img-src 'self' https: data:; style-src 'self' 'unsafe-inline'; "
            "script-src 'none'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'self'")


def mask_email(email: str) -> str:
    """``sam@tsinghua.edu.cn`` → ``s***@tsinghua.edu.cn``: enough for the reader to recognise."""
    local, _, domain = email.rpartition("@")
    if not local:
        return "***"
    return f"{local[0]}***@{domain}"


def _page(lang: str, title: str, body_html: str) -> str:
    return (
        "<!doctype html>\n"
        f'<html lang="{html.escape(lang or "en")}">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="robots" content="noindex, nofollow">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n<main>\n{body_html}\n</main>\n</body>\n</html>\n"
    )


class UnsubscribeApp:
    """The WSGI application behind :func:`make_app` (unsubscribe + health routes only)."""

    def __init__(self, settings: Settings, store_path: Path):
        self.settings = settings
        self.store_path = Path(store_path)
        self.url_map = Map([
            Rule("/unsubscribe/<token>", endpoint="unsubscribe", methods=["GET", "POST"]),
            Rule("/healthz", endpoint="healthz", methods=["GET"]),
            Rule("/webhooks/<provider>", endpoint="webhook", methods=["POST"]),
        ], strict_slashes=False)
        self._lock = threading.Lock()
        self._store: SubscriberStore | None = None
        self._store_pid: int | None = None
        self.webhooks = WebhookContext(settings, with_store=self._with_store)

    # One connection per process, opened lazily (never shared across a pre-fork), used under a lock:
    # unsubscribe traffic is tiny, and this keeps each request's reads and writes together.
    def _with_store(self, fn: Callable[[SubscriberStore], Response]) -> Response:
        with self._lock:
            if self._store is None or self._store_pid != os.getpid():
                self._store = SubscriberStore.open(self.store_path)
                self._store_pid = os.getpid()
            return fn(self._store)

    # ---- handlers -------------------------------------------------------------------
    def not_found(self) -> Response:
        return Response(NOT_FOUND_BODY, status=404, mimetype="text/plain")

    def not_found_app(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        """WSGI fallback for the static archive: the same plain 404."""
        return self.not_found()(environ, start_response)

    def _subscriber_for(self, store: SubscriberStore, token: str) -> Subscriber | None:
        secret = str(self.settings.secret_key)
        if len(token) > MAX_TOKEN_LENGTH:
            return None
        return store.get_by_token(secret, token)

    def webhook(self, request: Request, provider: str) -> Response:
        return handle_webhook(provider, request, self.webhooks)

    def healthz(self, request: Request) -> Response:
        return Response("ok\n", mimetype="text/plain")

    def unsubscribe(self, request: Request, token: str) -> Response:
        if request.method == "POST":
            return self._with_store(lambda store: self._post(store, request, token))
        return self._with_store(lambda store: self._get(store, token))

    def _get(self, store: SubscriberStore, token: str) -> Response:
        sub = self._subscriber_for(store, token)
        if sub is None:
            return self.not_found()
        pub = self.settings.publication
        name, masked = html.escape(pub.name), html.escape(mask_email(sub.email))
        if sub.status == ACTIVE:
            body = (
                f"<h1>Unsubscribe from {name}?</h1>\n"
                f"<p>You will no longer receive {name} at <strong>{masked}</strong>.</p>\n"
                '<form method="post">\n'
                '<button type="submit" name="confirm" value="yes">Unsubscribe</button>\n</form>\n'
                '<p class="muted">If you did not mean to come here, just close this page; nothing has changed.</p>'
            )
        else:
            body = (f"<h1>You are unsubscribed</h1>\n"
                    f"<p><strong>{masked}</strong> no longer receives {name}.</p>")
        return Response(_page(pub.lang, f"Unsubscribe — {pub.name}", body), mimetype="text/html")

    def _post(self, store: SubscriberStore, request: Request, token: str) -> Response:
        sub = self._subscriber_for(store, token)
        if sub is None:
            return self.not_found()
        one_click = request.form.get("List-Unsubscribe") == "One-Click"
        store.unsubscribe(sub.id, "one-click (RFC 8058)" if one_click else "unsubscribe page")
        pub = self.settings.publication
        name, masked = html.escape(pub.name), html.escape(mask_email(sub.email))
        body = (f"<h1>You are unsubscribed</h1>\n"
                f"<p><strong>{masked}</strong> will no longer receive {name}. Sorry to see you go.</p>")
        return Response(_page(pub.lang, f"Unsubscribed — {pub.name}", body), mimetype="text/html")

    # ---- WSGI -------------------------------------------------------------------------
    def dispatch(self, request: Request) -> Response:
        adapter = self.url_map.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
        except NotFound:
            return self.not_found()
        except HTTPException as exc:
            return exc.get_response(request.environ)  # type: ignore[return-value]
        return getattr(self, endpoint)(request, **args)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        request.max_content_length = MAX_BODY_BYTES
        request.max_form_memory_size = MAX_BODY_BYTES
        try:
            response = self.dispatch(request)
        except HTTPException as exc:  # e.g. 413 for an oversized body
            response = exc.get_response(environ)  # type: ignore[assignment]
        if request.path.startswith("/unsubscribe"):
            response.headers["Cache-Control"] = "no-store"
            response.headers["Content-Security-Policy"] = PAGE_CSP
            response.headers["X-Frame-Options"] = "DENY"
        return response(environ, start_response)


def _index_html(app: Callable, site_dir: Path) -> Callable:
    """Map directory URLs to their ``index.html`` (``/2025/`` → ``/2025/index.html``)
    and redirect ``/2025`` to ``/2025/`` so relative links inside the page resolve."""
    root = site_dir.resolve()

    def middleware(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        parts = [p for p in path.split("/") if p]
        if ".." not in parts:
            target = root.joinpath(*parts)
            if target.is_dir() and (target / "index.html").is_file():
                if not path.endswith("/"):
                    location = (environ.get("SCRIPT_NAME", "") + path + "/")
                    if environ.get("QUERY_STRING"):
                        location += "?" + environ["QUERY_STRING"]
                    return Response("", status=308, headers={"Location": location})(environ, start_response)
                environ = {**environ, "PATH_INFO": path + "index.html"}
        return app(environ, start_response)

    return middleware


def _security_headers(app: Callable) -> Callable:
    """Headers every response gets; routes may set a stricter CSP of their own."""

    def middleware(environ: dict, start_response: Callable) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info=None):  # noqa: ANN001
            present = {k.lower() for k, _ in headers}
            extra = [("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"),
                     ("Content-Security-Policy", SITE_CSP), ("X-Frame-Options", "SAMEORIGIN")]
            headers = list(headers) + [(k, v) for k, v in extra if k.lower() not in present]
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        return app(environ, start)

    return middleware


def make_app(settings: Settings, *, store_path: Path | str | None = None,
             site_dir: Path | str | None = None) -> Callable:
    """The WSGI app. ``store_path`` defaults to ``settings.db_path``; ``site_dir`` is the
    built web archive to serve under ``/`` (the unsubscribe and health routes take precedence)."""
    core = UnsubscribeApp(settings, Path(store_path) if store_path is not None else settings.db_path)
    app: Callable = core
    if site_dir is not None:
        site = Path(site_dir)
        if not site.is_dir():
            raise ConfigError("site directory does not exist", path=site)
        static = _index_html(SharedDataMiddleware(core.not_found_app, {"/": str(site)}, cache_timeout=300), site)

        def dispatch(environ: dict, start_response: Callable) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path.startswith(("/unsubscribe/", "/webhooks/")) or path.rstrip("/") == "/healthz":
                return core(environ, start_response)
            return static(environ, start_response)

        app = dispatch
    return _security_headers(app)


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


def serve(app: Callable, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run ``app`` with Werkzeug's development server (threaded).

    For local use and testing only. In production put the app behind a reverse proxy
    that terminates TLS (nginx, Caddy, ...) and run it under a WSGI server, e.g.
    ``gunicorn --bind 127.0.0.1:8080 'newsletter.web:create_app()'`` (see :func:`create_app`).
    The unsubscribe links in sent emails must be HTTPS for RFC 8058 one-click to be offered.
    """
    from werkzeug.serving import run_simple

    run_simple(host, port, app, threaded=True)
