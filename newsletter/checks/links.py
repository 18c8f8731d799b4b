"""Links: every URL must be well formed; with ``--online``, external ones must answer.

Offline checks run on every send. The online check is opt-in because it makes
one request per unique link: HEAD first (cheap), GET when a server refuses HEAD,
redirects followed, at most :data:`WORKERS` at a time. ``requests``' timeout bounds each
read, not the whole answer, so a server trickling a byte at a time could hold a link for
minutes: each link also gets a total :data:`DEADLINE`.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

from newsletter.checks.context import CheckContext
from newsletter.markdown_rules import LINK_SCHEMES
from newsletter.render import PLACEHOLDERS

SCHEMES = LINK_SCHEMES
WORKERS = 8
TIMEOUT = 10.0  # seconds per connect or read
DEADLINE = 20.0  # seconds per link in all, however slowly the server answers
USER_AGENT = "newsletter-link-check/1.0 (+pre-flight check before sending)"
SOFT_STATUSES = {401, 403, 429}  # often bot protection: the link may work in a browser


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot work in an email, or None. Fragments and named placeholders pass."""
    if not url or url.startswith("#") or url.startswith(tuple(PLACEHOLDERS.values())):
        return None
    if any(c.isspace() for c in url):
        return "contains a space"
    try:
        parts = urlsplit(url)
        port = parts.port if parts.scheme.lower() in ("http", "https") else None
    except ValueError as exc:
        return f"is malformed ({exc})"
    scheme = parts.scheme.lower()
    if not scheme:
        return "is relative: an email has no page to resolve it against; write the full https:// address"
    if scheme not in SCHEMES:
        return f"uses the scheme '{scheme}:', which mail clients do not open"
    if scheme == "mailto":
        return _mailto_problem(parts.path)
    if scheme in ("http", "https"):
        return _host_problem(parts.hostname or "", port)
    return None


def _host_problem(host: str, port: int | None) -> str | None:
    if not host:
        return "has no host name"
    try:
        host.encode("idna")
    except UnicodeError:
        return f"has an invalid host name '{host}'"
    if "." not in host and ":" not in host:
        return f"host '{host}' has no domain (e.g. example.org)"
    if port == 0:
        return "has an invalid port"
    return None


def _mailto_problem(address: str) -> str | None:
    """The first address of a mailto: link that the one address policy refuses."""
    from urllib.parse import unquote

    from newsletter.addresses import validate_address
    from newsletter.errors import InputError

    for one in filter(None, unquote(address).split(",")):
        try:
            validate_address(one.strip(), "mailto address")
        except InputError as exc:
            return f"is not a valid address ({exc.message})"
    return None


def _urls(ctx: CheckContext) -> list[str]:
    """Link and image URLs of the whole email, in order, once each."""
    urls: dict[str, None] = {}
    for element in ctx.doc.body.iter("a", "img"):
        url = (element.get("href") if element.tag == "a" else element.get("src")) or ""
        if url.strip():
            urls.setdefault(url.strip(), None)
    return list(urls)


def check_link_syntax(ctx: CheckContext) -> None:
    for url in _urls(ctx):
        problem = url_problem(url)
        if problem:
            ctx.add("error", "links.malformed", f"link {url} {problem}", line=ctx.source.urls.get(url))


@dataclass(frozen=True)
class LinkResult:
    url: str
    level: str | None  # None when the link works
    message: str = ""


def probe(url: str, timeout: float = TIMEOUT) -> LinkResult:
    """HEAD ``url`` (GET if HEAD is refused), following redirects; classify the outcome."""
    import requests

    headers = {"User-Agent": USER_AGENT}
    try:
        response = requests.head(url, allow_redirects=True, timeout=timeout, headers=headers)
        if response.status_code in (405, 501):
            response = requests.get(url, allow_redirects=True, timeout=timeout, headers=headers, stream=True)
            response.close()
    except requests.Timeout:
        return LinkResult(url, "warning", f"did not answer within {timeout:g} s")
    except requests.TooManyRedirects:
        return LinkResult(url, "error", "redirects in a loop")
    except requests.RequestException as exc:
        return LinkResult(url, "warning", f"could not be reached ({type(exc).__name__})")
    status = response.status_code
    if status < 400:
        return LinkResult(url, None)
    reason = f"{status} {response.reason}".strip()
    if status >= 500 or status in SOFT_STATUSES:
        return LinkResult(url, "warning", f"answered {reason}; check it in a browser")
    return LinkResult(url, "error", f"is broken: {reason}")


def probe_within(url: str, deadline: float = DEADLINE, timeout: float = TIMEOUT) -> LinkResult:
    """:func:`probe` with a total deadline: past it the link is reported as timed out.

    The probe runs in a daemon thread that is abandoned at the deadline (a blocking read
    cannot be interrupted portably); it ends with its socket's read timeout or the process.
    """
    answer: list[LinkResult] = []
    worker = threading.Thread(target=lambda: answer.append(probe(url, min(timeout, deadline))),
                              name="link-probe", daemon=True)
    worker.start()
    worker.join(deadline)
    return answer[0] if answer else LinkResult(url, "warning", f"did not answer within {deadline:g} s")


def probe_all(urls: list[str], *, timeout: float = TIMEOUT, deadline: float = DEADLINE,
              workers: int = WORKERS) -> list[LinkResult]:
    """Probe each URL once, at most ``workers`` at a time; results in the order given."""
    if not urls:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(urls)))) as pool:
        return list(pool.map(lambda u: probe_within(u, deadline, timeout), urls))


def external_urls(ctx: CheckContext) -> list[str]:
    """http(s) links worth fetching: well formed, and not this issue's own web page,
    which the archive publishes only after sending."""
    base = ctx.settings.publication.base_url
    own_page = f"{base}/issues/{ctx.rendered.slug}/" if base else None
    return [u for u in _urls(ctx)
            if urlsplit(u).scheme.lower() in ("http", "https") and url_problem(u) is None and u != own_page]


def check_links_online(ctx: CheckContext, timeout: float = TIMEOUT, deadline: float = DEADLINE) -> None:
    if not ctx.online:
        return
    for result in probe_all(external_urls(ctx), timeout=timeout, deadline=deadline):
        if result.level:
            code = "links.broken" if result.level == "error" else "links.unreachable"
            ctx.add(result.level, code, f"link {result.url} {result.message}", line=ctx.source.urls.get(result.url))
