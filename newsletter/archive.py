"""`newsletter archive`: the public web archive, a static site built from the issue files.

* ``index.html``: every issue, newest first;
* ``issues/<slug>/index.html``: one responsive page per issue (the email's
  "read in your browser" link points here), built from the same Markdown
  blocks as the email, with a permanent id and a ¶ link on every heading,
  and Highwire Press ``citation_*`` metadata so Google Scholar and Zotero
  can cite it;
* ``feed.xml`` (Atom, RFC 4287) and ``feed.json`` (JSON Feed 1.1), full content;
* an issue's other editions (:mod:`newsletter.editions`) at ``issues/<slug>/<tag>/``, each page
  linking its others (``hreflang`` alternates and a visible line), with an index
  ``<tag>/index.html`` and feeds ``feed.<tag>.xml`` / ``feed.<tag>.json`` per language;
* ``sitemap.xml`` when a base URL is set (the sitemap protocol allows only absolute URLs);
* ``style.css``.

An issue is published once it is ``status: ready`` and its date has come, or once it
has been sent (the ledger says a reader may have it), whichever is first: a draft
never appears by itself, and a "read in your browser" link is never a 404.
Absolute URLs use ``base_url``; without it, links between pages are relative.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lxml import etree
from markupsafe import Markup

from newsletter.config import Settings
from newsletter.content import Block, parse_body
from newsletter.errors import ConfigError, InputError
from newsletter.issue import Issue, list_issues, parse_issue
from newsletter.render import Renderer

ATOM_NS = "http://www.w3.org/2005/Atom"
SITEMAP_NS = "http://www.sitemaps.org/schemas/sitemap/0.9"
JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
_HEADING = re.compile(r'<(h[2-6]) id="([^"]+)">(.*?)</\1>', re.S)


@dataclass(frozen=True)
class Entry:
    """One published issue and what every output needs of it."""

    issue: Issue
    blocks: tuple[Block, ...]
    path: str  # "issues/<slug>/" (an edition: "issues/<slug>/<tag>/"), relative to the site root
    edition: str = ""  # "" for the main edition, else its tag
    lang: str = ""  # the page's language

    @property
    def body_html(self) -> str:
        return "".join(b.html for b in self.blocks)

    @property
    def date_long(self) -> str:
        from newsletter.render import long_date

        return long_date(self.issue.date, self.edition and self.lang, "")

    @property
    def published(self) -> str:
        """RFC 3339: the send time when the front matter has one, else midnight UTC of the date."""
        when = self.issue.send_at or dt.datetime.combine(self.issue.date, dt.time(), dt.timezone.utc)
        return when.isoformat().replace("+00:00", "Z")


def with_permalinks(html: str) -> str:
    """Give each heading a visible ¶ link to its own id, beside it (not inside, so the
    heading's accessible name stays its text)."""
    def add(m: re.Match[str]) -> str:
        tag, ident, inner = m.groups()
        label = re.sub(r"<[^>]+>", "", inner).replace('"', "&quot;")
        return (f'<div class="heading">{m.group(0)}<a class="anchor" href="#{ident}" '
                f'aria-label="Link to this section: {label}">¶</a></div>')

    return _HEADING.sub(add, html)


class Site:
    """URLs for one build: absolute under ``base_url`` when set, else relative."""

    def __init__(self, base_url: str):
        self.base = base_url.rstrip("/")

    def absolute(self, path: str) -> str:
        return f"{self.base}/{path}" if self.base else path

    def urls(self, page: str = "", edition: str = "") -> dict[str, str]:
        """Feed links as seen from ``page`` (a path relative to the root), plus canonical URLs;
        an edition's pages link its language's feeds."""
        up = "../" * page.count("/")
        atom, jsonf = (f"feed.{edition}.xml", f"feed.{edition}.json") if edition else ("feed.xml", "feed.json")
        return {
            "atom": self.absolute(atom) if self.base else up + atom,
            "json": self.absolute(jsonf) if self.base else up + jsonf,
            "home": self.absolute("") if self.base else "",
            "page": self.absolute(page) if self.base and page else "",
        }

    def entry_id(self, entry: Entry, domain: str) -> str:
        """A permanent id: the page URL, or a tag: URI (RFC 4151) when there is no base URL."""
        if self.base:
            return self.absolute(entry.path)
        return f"tag:{domain},{entry.issue.date.isoformat()}:{entry.path.rstrip('/')}"


@dataclass(frozen=True)
class Publishing:
    """What the archive does with one issue, and why, in words for the editor."""

    published: bool
    reason: str


def publishing(issue: Issue, today: dt.date, sent: bool) -> Publishing:
    """Published once ready and dated today or earlier, or once sent, whichever is first."""
    if sent:
        return Publishing(True, "the web archive publishes it: it has been sent")
    if issue.is_draft:
        return Publishing(False, "the web archive leaves it out: 'status' is draft "
                                 "(set status: ready when it is done; sending it publishes it too)")
    if issue.date > today:
        return Publishing(False, f"the web archive publishes it on {issue.date.isoformat()} (its date), "
                                 "or as soon as it is sent")
    return Publishing(True, "the web archive publishes it: it is ready and its date has come")


def sent_slugs(settings: Settings) -> set[str]:
    """Slugs with a real delivery under way or done; read-only, and nothing when there is no database."""
    from newsletter.ledger.lookups import sent_slugs

    target = settings.db_target
    if not isinstance(target, Path):
        return _sent_slugs_postgres(target)
    path = target
    if not path.is_file():
        return set()
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot read the database: {exc}", path=path) from None
    try:
        return sent_slugs(conn)
    except sqlite3.Error as exc:
        if isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc):
            return set()  # nothing was ever sent from this database
        raise ConfigError(f"cannot read the database: {exc}", path=path) from None
    finally:
        conn.close()


def _sent_slugs_postgres(url: str) -> set[str]:
    """:func:`sent_slugs` on PostgreSQL: nothing when the ledger's tables were never made there."""
    from newsletter.ledger.lookups import sent_slugs
    from newsletter.db import connect

    conn = connect(url)
    try:
        return sent_slugs(conn)
    except sqlite3.OperationalError as exc:  # the PostgreSQL connection raises sqlite3's DB-API classes
        if "does not exist" in str(exc):
            return set()
        raise ConfigError(f"cannot read the database: {exc}") from None
    finally:
        conn.close()


def load_entries(settings: Settings, today: dt.date | None = None, sent: set[str] | None = None) -> list[Entry]:
    """Published issues, newest first; two issues with one slug would overwrite each other's page."""
    today = today or dt.date.today()
    sent = sent_slugs(settings) if sent is None else sent
    entries: list[Entry] = []
    by_slug: dict[str, Path] = {}
    for path in list_issues(settings.issues_dir):
        issue = parse_issue(path)
        if not publishing(issue, today, issue.slug in sent).published:
            continue
        if issue.slug in by_slug:
            raise InputError(f"slug '{issue.slug}' is also used by {by_slug[issue.slug].name}", path=path)
        by_slug[issue.slug] = path
        for tag, edition in _published_editions(settings, issue):
            blocks = parse_body(edition.body, path=edition.path, first_line=edition.body_line, web=True).blocks
            entries.append(Entry(edition, tuple(blocks), f"issues/{issue.slug}/" + (f"{tag}/" if tag else ""),
                                 tag, edition.lang or settings.publication.lang))
    return sorted(entries, key=lambda e: (e.issue.date, e.issue.number, e.edition == ""), reverse=True)


def _published_editions(settings: Settings, issue: Issue) -> list[tuple[str, Issue]]:
    """A published issue's main edition and its ready editions (a draft edition waits)."""
    from newsletter.editions import load_editions

    editions = load_editions(issue.path, settings.publication.lang, main=issue)
    return [(tag, e) for tag, e in editions if not tag or not e.is_draft]


# ---- feeds --------------------------------------------------------------------------
def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    element = etree.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def atom_feed(settings: Settings, site: Site, entries: list[Entry], edition: str = "") -> bytes:
    """The Atom feed of one language: the main editions, or the ``edition`` ones."""
    pub = settings.publication
    a = lambda tag: f"{{{ATOM_NS}}}{tag}"  # noqa: E731 - ElementTree's namespaced tag names
    feed = etree.Element(a("feed"), {"{http://www.w3.org/XML/1998/namespace}lang": edition or pub.lang},
                         nsmap={None: ATOM_NS})
    home, name = (f"{edition}/", f"feed.{edition}.xml") if edition else ("", "feed.xml")
    _sub(feed, a("id"), site.absolute(home) if site.base else f"tag:{pub.sender_domain},2000:newsletter"
                                                              + (f":{edition}" if edition else ""))
    _sub(feed, a("title"), pub.name)
    if pub.tagline:
        _sub(feed, a("subtitle"), pub.tagline)
    _sub(feed, a("updated"), entries[0].published if entries else "1970-01-01T00:00:00Z")
    _sub(feed, a("link"), rel="alternate", type="text/html", href=site.absolute(home) or (home or "./"))
    if site.base:
        _sub(feed, a("link"), rel="self", type="application/atom+xml", href=site.absolute(name))
    _sub(_sub(feed, a("author")), a("name"), pub.name)
    for entry in entries:
        issue = entry.issue
        node = _sub(feed, a("entry"))
        _sub(node, a("id"), site.entry_id(entry, pub.sender_domain))
        _sub(node, a("title"), issue.display_title)
        _sub(node, a("link"), rel="alternate", type="text/html", href=site.absolute(entry.path))
        _sub(node, a("published"), entry.published)
        _sub(node, a("updated"), entry.published)
        for writer in issue.writers:
            _sub(_sub(node, a("author")), a("name"), writer.name)
        if issue.subtitle:
            _sub(node, a("summary"), issue.subtitle)
        _sub(node, a("content"), entry.body_html, type="html")
    return etree.tostring(feed, encoding="utf-8", xml_declaration=True) + b"\n"


def json_feed(settings: Settings, site: Site, entries: list[Entry], edition: str = "") -> str:
    """The JSON Feed of one language: the main editions, or the ``edition`` ones."""
    pub = settings.publication
    feed: dict[str, Any] = {"version": JSON_FEED_VERSION, "title": pub.name}
    if site.base:
        feed.update(home_page_url=site.absolute(f"{edition}/" if edition else ""),
                    feed_url=site.absolute(f"feed.{edition}.json" if edition else "feed.json"))
    if pub.description or pub.tagline:
        feed["description"] = pub.description or pub.tagline
    feed.update(language=edition or pub.lang, authors=[{"name": pub.name}], items=[])
    for entry in entries:
        issue = entry.issue
        item: dict[str, Any] = {"id": site.entry_id(entry, pub.sender_domain), "title": issue.display_title,
                                "content_html": entry.body_html, "date_published": entry.published}
        if site.base:
            item["url"] = site.absolute(entry.path)
        if issue.subtitle:
            item["summary"] = issue.subtitle
        if issue.writers:
            item["authors"] = [{"name": w.name} for w in issue.writers]
        if issue.lang:
            item["language"] = issue.lang
        feed["items"].append(item)
    return json.dumps(feed, indent=2, ensure_ascii=False) + "\n"


def sitemap(site: Site, entries: list[Entry]) -> bytes:
    s = lambda tag: f"{{{SITEMAP_NS}}}{tag}"  # noqa: E731
    urlset = etree.Element(s("urlset"), nsmap={None: SITEMAP_NS})
    home = _sub(urlset, s("url"))
    _sub(home, s("loc"), site.absolute(""))
    if entries:
        _sub(home, s("lastmod"), entries[0].issue.date.isoformat())
    for entry in entries:
        url = _sub(urlset, s("url"))
        _sub(url, s("loc"), site.absolute(entry.path))
        _sub(url, s("lastmod"), entry.issue.date.isoformat())
    return etree.tostring(urlset, encoding="utf-8", xml_declaration=True) + b"\n"


# ---- pages ---------------------------------------------------------------------------
def subscribe_box(settings: Settings) -> dict[str, Any] | None:
    """What the archive's pages offer for subscribing by email (``archive-subscribe.html.j2``):
    the signup form, posting to the public server's ``/subscribe``, when the archive's own origin
    may post it (see :attr:`Settings.signup_origins`); a plain link there when the archive is
    published elsewhere; nothing without a public server (``base_url``)."""
    pub = settings.publication
    if not pub.base_url:
        return None
    from newsletter.config import url_origin
    from newsletter.web.pages import consent_line

    url = f"{pub.base_url}/subscribe"
    return {"url": url, "form": url_origin(settings.archive_url) in settings.signup_origins,
            "form_context": {"action": url, "form_token": "", "values": {"email": "", "name": ""}, "error": "",
                             "consent": consent_line(pub)}}


def _page_blocks(entry: Entry) -> list[Block]:
    return [Block(b.kind, b.heading, b.anchor, Markup(with_permalinks(b.html))) for b in entry.blocks]


def build_archive(settings: Settings, out_dir: Path, *, today: dt.date | None = None,
                  sent: set[str] | None = None) -> list[Path]:
    """Write the site into ``out_dir``; returns the files written. Files of issues
    removed since an earlier build are left alone (the folder may hold other things)."""
    pub = settings.publication
    site = Site(pub.base_url)
    entries = load_entries(settings, today, sent)
    renderer = Renderer(settings)
    subscribe = subscribe_box(settings)
    written: list[Path] = []

    def write(relative: str, data: str | bytes) -> None:
        target = out_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        written.append(target)

    def render(name: str, **context: Any) -> str:
        # The email renderer's template lookup: publication templates first, then the shipped
        # ones, and a template mistake reported as one line naming the file; _() in the page's language.
        from newsletter.i18n import translations

        renderer.env.install_gettext_translations(  # type: ignore[attr-defined]
            translations(context.get("lang") or pub.lang, settings.root, renderer.cache_dir / "i18n"), newstyle=True)
        return renderer.render_template(name, {"pub": pub, "alternates": [], "subscribe": subscribe, **context})

    write("style.css", render("web.css.j2"))
    languages = sorted({e.edition for e in entries} | {""})
    for edition in languages:
        group = [e for e in entries if e.edition == edition]
        home = f"{edition}/" if edition else ""
        index_entries = [{"issue": e.issue, "href": ("../" if edition else "") + e.path, "date_long": e.date_long}
                         for e in group]
        write(home + "index.html", render(
            "archive-index.html.j2", lang=edition or pub.lang, root="../" if edition else "",
            urls=site.urls(home, edition), entries=index_entries,
            alternates=_alternates(site, [(t, f"{t}/" if t else "") for t in languages], home, pub.lang)))
        write(f"feed.{edition}.xml" if edition else "feed.xml", atom_feed(settings, site, group, edition))
        write(f"feed.{edition}.json" if edition else "feed.json", json_feed(settings, site, group, edition))
    for entry in entries:
        issue = entry.issue
        siblings = [(e.edition, e.path) for e in entries if e.issue.slug == issue.slug]
        write(entry.path + "index.html", render(
            "web.html.j2", lang=entry.lang or pub.lang, root="../" * entry.path.count("/"),
            urls=site.urls(entry.path, entry.edition), issue=issue,
            blocks=_page_blocks(entry), credits=issue.credits, date_long=entry.date_long,
            reply_to=issue.reply_to or pub.reply_to_address,
            alternates=_alternates(site, siblings, entry.path, pub.lang)))
    if site.base:
        write("sitemap.xml", sitemap(site, entries))
    return written


def _alternates(site: Site, pages: list[tuple[str, str]], here: str, main_lang: str) -> list[dict[str, Any]]:
    """The language versions of a page ((edition, path) each, this one included), for ``hreflang``
    links and the visible "read in" line: absolute URLs under a base URL, else relative to ``here``."""
    from newsletter.lang import display_name

    if len(pages) < 2:
        return []
    up = "../" * here.count("/")
    out = []
    for edition, path in pages:
        lang = edition or main_lang
        out.append({"lang": lang, "name": display_name(lang), "current": path == here,
                    "href": site.absolute(path) if site.base else (up + path or "./")})
    return out
