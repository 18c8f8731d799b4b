"""`newsletter preview`: a live preview server on 127.0.0.1.

It watches the issue file and the templates, re-renders in the warm process
(about 60 ms for issue #6), and the page reloads itself when the build
version changes. A render error is shown on the page and in the terminal, and
the server keeps running.
"""

from __future__ import annotations

import html
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from newsletter.config import Settings
from newsletter.errors import NewsletterError
from newsletter.placeholders import fill
from newsletter.render import Renderer, RenderedEmail

SAMPLE_VALUES = {"unsubscribe_url": "#unsubscribe-preview", "email": "reader@example.org", "name": "Reader",
                 "language_url": "#language-preview"}


def fill_sample(text: str) -> str:
    """Replace per-recipient placeholders with sample values, for looking at (in one pass)."""
    return fill(text, SAMPLE_VALUES.__getitem__)


def preview_page(rendered: RenderedEmail, from_name: str, *, live: bool = False, error: str = "") -> str:
    """The preview: inbox line, desktop (800 px) and phone (375 px) frames, plain text."""
    esc = html.escape
    email_html = esc(fill_sample(rendered.html), quote=True)
    reload_js = """
<script>
let v = null;
async function poll() {
  try {
    const r = await fetch('/version', {cache: 'no-store'});
    const d = await r.json();
    if (v !== null && d.version !== v) location.reload();
    v = d.version;
  } catch (e) {}
  setTimeout(poll, 300);
}
poll();
</script>""" if live else ""
    banner = f'<div class="error" role="alert"><strong>Render error:</strong> {esc(error)}</div>' if error else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Preview · {esc(rendered.subject)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 0; background: #e9e6df; color: #1f2328; }}
header {{ padding: 12px 20px; background: #1f2328; color: #fff; }}
.inbox {{ background: #fff; color: #1f2328; border-radius: 6px; padding: 10px 14px; max-width: 900px; }}
.inbox .from {{ font-weight: 700; }} .inbox .pre {{ color: #57606a; }}
.frames {{ display: flex; gap: 24px; padding: 20px; align-items: flex-start; flex-wrap: wrap; }}
figure {{ margin: 0; }} figcaption {{ font-size: 13px; color: #57606a; margin-bottom: 6px; }}
iframe {{ border: 1px solid #c8c2b4; background: #fff; height: 1400px; }}
#desktop {{ width: 800px; }} #phone {{ width: 375px; }}
pre {{ width: 600px; max-width: 100%; height: 1400px; overflow: auto; background: #fff; border: 1px solid #c8c2b4; padding: 12px; margin: 0; white-space: pre-wrap; font-size: 13px; }}
.error {{ background: #ffebe9; color: #82071e; border: 1px solid #ff8182; padding: 12px 20px; font-family: monospace; }}
</style></head><body>
<header><div class="inbox" aria-label="How the inbox shows it"><span class="from">{esc(from_name)}</span> —
<span class="subject">{esc(rendered.subject)}</span> <span class="pre">{esc(rendered.preheader)}</span></div></header>
{banner}
<div class="frames">
<figure><figcaption>Desktop · 800 px</figcaption><iframe id="desktop" title="Email at desktop width" srcdoc="{email_html}"></iframe></figure>
<figure><figcaption>Phone · 375 px</figcaption><iframe id="phone" title="Email at phone width" srcdoc="{email_html}"></iframe></figure>
<figure><figcaption>Plain text</figcaption><pre id="text">{esc(fill_sample(rendered.text))}</pre></figure>
</div>{reload_js}
</body></html>"""


_LOOPBACK_HOST = re.compile(r"(localhost|127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?", re.I)


def loopback_host(host: str) -> bool:
    """Whether a Host header names this machine by a loopback name (the only ones the preview serves)."""
    return bool(_LOOPBACK_HOST.fullmatch(host.strip()))


@dataclass
class _State:
    version: int = 0
    page: str = ""
    error: str = ""
    last_good: RenderedEmail | None = None


def _mtimes(paths: Iterable[Path]) -> tuple[float, ...]:
    out = []
    for p in paths:
        try:
            out.append(p.stat().st_mtime_ns)
        except OSError:
            out.append(0)
    return tuple(out)


def _request_handler(log: Callable[[str], None], verbose: bool) -> Any:
    """Werkzeug's handler with its per-request line sent to ``log`` only when ``verbose``: the
    live page polls every 300 ms, and those lines would bury the rebuilds and errors."""
    from werkzeug.serving import WSGIRequestHandler

    class Handler(WSGIRequestHandler):
        def log_request(self, code: Any = "-", size: Any = "-") -> None:
            if verbose:
                log(f"{self.command} {self.path} {getattr(code, 'value', code)}")

    return Handler


class PreviewServer:
    """Rebuilds on change (polling mtimes every 0.2 s: no platform-specific watcher needed)."""

    def __init__(self, settings: Settings, issue_path: Path, log: Callable[[str], None] = print, *,
                 verbose: bool = False):
        self.settings = settings
        self.issue_path = issue_path
        self.log = log
        self.verbose = verbose  # log every request too (the page polls /version every 300 ms)
        self.renderer = Renderer(settings)
        self.state = _State()
        self._stop = threading.Event()
        self.rebuild()

    def watched(self) -> list[Path]:
        templates = sorted(self.settings.templates_dir.glob("*")) if self.settings.templates_dir.is_dir() else []
        from newsletter.editions import resolve

        main = resolve(self.issue_path)[0]  # an edition inherits from its main edition
        return list(dict.fromkeys([self.issue_path, main, self.settings.root / "newsletter.toml", *templates]))

    def rebuild(self) -> None:
        try:
            rendered = self._render()
            self.state.last_good, self.state.error = rendered, ""
            self.log(f"rebuilt {self.issue_path.name} ({len(rendered.html.encode()) // 1024} KB)")
        except NewsletterError as exc:
            self.state.error = exc.format_message()
            self.log(f"error: {self.state.error}")
        except Exception as exc:  # noqa: BLE001 - a bug must not stop the watcher: the next save rebuilds
            self.state.error = f"{type(exc).__name__}: {exc}"[:500]
            self.log(f"error: {self.state.error}")
        if self.state.last_good is not None:
            pub = self.settings.publication
            self.state.page = preview_page(self.state.last_good, pub.from_name or pub.name, live=True,
                                           error=self.state.error)
        else:
            self.state.page = f"<!doctype html><title>Render error</title><pre>{html.escape(self.state.error)}</pre>" \
                              "<script>setTimeout(()=>location.reload(),500)</script>"
        self.state.version += 1

    def _render(self) -> RenderedEmail:
        """The previewed issue, or edition (its file's path names it), as it is sent: with its editions' links."""
        from newsletter.editions import load_editions, render_editions, resolve

        main, tag = resolve(self.issue_path)
        editions = load_editions(main, self.settings.publication.lang)
        key = editions.tag_of(tag or "")
        return render_editions(editions, self.settings, self.renderer, only=key)[key]

    def watch(self, interval: float = 0.2) -> None:
        seen = _mtimes(self.watched())
        while not self._stop.wait(interval):
            now = _mtimes(self.watched())
            if now != seen:
                seen = now
                self.renderer = Renderer(self.settings)  # templates may have changed
                self.rebuild()

    def wsgi(self, environ: dict, start_response: Callable) -> list[bytes]:
        path = environ.get("PATH_INFO", "/")
        if not loopback_host(environ.get("HTTP_HOST", "")):
            # DNS rebinding: a web page whose name now points at 127.0.0.1 must not read drafts.
            start_response("421 Misdirected Request", [("Content-Type", "text/plain")])
            return [b"preview answers only to localhost, 127.0.0.1 and [::1]\n"]
        if path == "/version":
            body = json.dumps({"version": self.state.version, "error": self.state.error}).encode()
            ctype = "application/json"
        elif path == "/":
            body, ctype = self.state.page.encode("utf-8"), "text/html; charset=utf-8"
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found"]
        start_response("200 OK", [("Content-Type", ctype), ("Cache-Control", "no-store")])
        return [body]

    def make_server(self, port: int = 0) -> Any:
        """A threaded WSGI server on 127.0.0.1 only (port 0 picks a free one), watcher started."""
        from werkzeug.serving import make_server

        server = make_server("127.0.0.1", port, self.wsgi, threaded=True,
                             request_handler=_request_handler(self.log, self.verbose))
        threading.Thread(target=self.watch, daemon=True).start()
        return server

    def stop(self) -> None:
        self._stop.set()

    def serve(self, port: int = 8025, open_browser: bool = True, ready: Callable[[str], None] | None = None) -> None:
        server = self.make_server(port)
        url = f"http://127.0.0.1:{server.server_port}/"
        (ready or self.log)(f"Previewing {self.issue_path.name} at {url} (Ctrl-C to stop)")
        if open_browser:
            import webbrowser

            webbrowser.open(url)
        try:
            server.serve_forever()
        finally:
            self._stop.set()
            server.server_close()

