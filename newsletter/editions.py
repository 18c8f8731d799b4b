"""Editions: one issue in several languages, ``NNN-slug.md`` and ``NNN-slug.TAG.md`` side by side.

The main edition is the issue file every command already knew. An edition is a file beside it
whose name adds a BCP 47 tag (``006-global-governance-of-ai.zh-Hans.md``); its ``lang`` is that
tag, its number and slug are the main edition's, and it may leave out the fields that do not
change with the language (:data:`INHERITED`), which it then takes from the main edition. An
edition's file name does not match ``issue.FILENAME_RE``, so it is never listed as an issue of
its own (nor taken for a second issue with the same slug).

Which edition a reader gets is :func:`Editions.tag_for`: their language matched against the
editions' by CLDR likely subtags (:mod:`newsletter.lang`); no language or no match gets the main one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from newsletter.errors import InputError
from newsletter.issue import FILENAME_RE, Issue, parse_issue
from newsletter.lang import TAG, match, normalise_tag

if TYPE_CHECKING:
    from newsletter.config import Settings
    from newsletter.render import Renderer, RenderedEmail

#: Front-matter fields an edition may leave out: they are the main edition's.
INHERITED = ("number", "slug", "date", "send_at", "reply_to", "status")
EDITION_RE = re.compile(rf"^(?P<stem>\d{{3,}}-[a-z0-9]+(?:-[a-z0-9]+)*)\.(?P<tag>{TAG})\.md$")
#: The key of the main edition wherever editions are keyed by tag (ledger rows, prepared issues).
MAIN = ""


def split_edition_path(path: Path) -> tuple[Path, str] | None:
    """(main edition's path, tag) when ``path`` names an edition file, else None."""
    m = EDITION_RE.match(path.name)
    if not m:
        return None
    return path.with_name(m.group("stem") + ".md"), normalise_tag(m.group("tag"), "edition tag")


def edition_languages(issues_dir: Path) -> set[str]:
    """The languages of every edition file in ``issues_dir`` (by file name: nothing is parsed)."""
    if not issues_dir.is_dir():
        return set()
    return {split[1] for path in issues_dir.glob("*.*.md") if (split := _split_quietly(path)) is not None}


def edition_path(main: Path, tag: str) -> Path:
    """Where the ``tag`` edition of the issue in ``main`` lives."""
    return main.with_name(f"{main.stem}.{normalise_tag(tag)}.md")


def edition_files(main: Path) -> dict[str, Path]:
    """Tag → file of every edition beside ``main`` (not the main one), in tag order."""
    if not FILENAME_RE.match(main.name) or not main.parent.is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in sorted(main.parent.glob(f"{glob_escape(main.stem)}.*.md")):
        split = _split_quietly(path)
        if split is not None and split[0].name == main.name:
            if split[1] in found:
                raise InputError(f"two files hold the {split[1]} edition ({found[split[1]].name} and {path.name}); "
                                 "keep one", path=path)
            found[split[1]] = path
    return found


def _split_quietly(path: Path) -> tuple[Path, str] | None:
    try:
        return split_edition_path(path)
    except InputError:
        return None


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def parse_edition(path: Path, main: Issue, tag: str) -> Issue:
    """Read an edition, filling what it leaves out from ``main``; its number and slug must agree."""
    inherit = {k: getattr(main, k) for k in INHERITED if getattr(main, k) not in (None, "")}
    if main.send_at is not None:
        inherit["send_at"] = main.send_at
    edition = parse_issue(path, inherit)
    for key in ("number", "slug"):
        if getattr(edition, key) != getattr(main, key):
            raise InputError(f"the {tag} edition's {key} is {getattr(edition, key)!r}, the main edition's "
                             f"{getattr(main, key)!r}: an edition is the same issue; remove the line",
                             path=path, line=edition.field_line(key))
    if edition.lang and edition.lang != tag:
        try:
            same = normalise_tag(edition.lang) == tag
        except InputError:
            same = False
        if not same:
            raise InputError(f"'lang' is {edition.lang!r} but the file name says {tag}; remove the line",
                             path=path, line=edition.field_line("lang"))
    from dataclasses import replace

    return replace(edition, lang=tag)


@dataclass(frozen=True)
class Editions:
    """An issue's main edition and its other editions (drafts included), keyed by tag."""

    main: Issue
    others: dict[str, Issue] = field(default_factory=dict)
    main_lang: str = "en"

    @property
    def ready(self) -> dict[str, Issue]:
        """The editions that may be sent: a draft edition's readers get the main edition."""
        return {tag: e for tag, e in self.others.items() if not e.is_draft}

    @property
    def drafts(self) -> list[str]:
        return [tag for tag, e in self.others.items() if e.is_draft]

    def get(self, tag: str) -> Issue:
        """The edition of ``tag`` (``MAIN`` or the main edition's own language: the main one)."""
        found = self.tag_of(tag)
        return self.main if found == MAIN else self.others[found]

    def tag_of(self, lang: str) -> str:
        """The key of the edition ``lang`` names (``zh`` names ``zh-Hans``), or an InputError."""
        if lang in (MAIN, self.main_lang):
            return MAIN
        if lang in self.others:
            return lang
        found = match(normalise_tag(lang, "--lang"), [self.main_lang, *self.others])
        if found is None:
            have = ", ".join([self.main_lang, *self.others])
            raise InputError(f"issue {self.main.number} has no {lang} edition (editions: {have}); "
                             f"`newsletter new --lang {lang} {self.main.number}` starts one")
        return MAIN if found == self.main_lang else found

    def __iter__(self) -> Iterator[tuple[str, Issue]]:
        """(tag, issue) of every edition, main first (its tag ``MAIN``)."""
        yield MAIN, self.main
        yield from self.others.items()

    def tag_for(self, reader_lang: str | None, *, include_drafts: bool = False) -> str:
        """The edition a reader of ``reader_lang`` gets: ``MAIN`` unless another one matches better."""
        pool = self.others if include_drafts else self.ready
        if not pool:
            return MAIN
        candidates = [self.main_lang, *pool]
        found = match(reader_lang, candidates)
        return MAIN if found in (None, self.main_lang) else found  # type: ignore[return-value]

    def lang_of(self, tag: str) -> str:
        return self.main_lang if tag == MAIN else tag


def load_editions(main_path: Path, main_lang: str = "en", *, main: Issue | None = None) -> Editions:
    """The issue in ``main_path`` (an edition file's path names its issue) with every edition beside it."""
    split = split_edition_path(Path(main_path))
    if split is not None:
        main_path = split[0]
    main = main or parse_issue(main_path)
    lang = normalise_tag(main.lang or main_lang or "en", "lang")
    others = {tag: parse_edition(path, main, tag) for tag, path in edition_files(main_path).items()}
    if lang in others:
        raise InputError(f"the main edition is already {lang} (its 'lang', or the publication's); "
                         f"rename the file or give the main edition its 'lang'", path=others[lang].path)
    return Editions(main, others, lang)


def resolve(path: Path) -> tuple[Path, str | None]:
    """(main edition path, tag or None) of a path a command was given."""
    split = split_edition_path(path)
    return (split[0], split[1]) if split else (path, None)


def new_edition(main_path: Path, tag: str, main_lang: str = "en") -> Path:
    """Start the ``tag`` edition of an issue: its text to translate, the fields it inherits left out,
    ``lang`` set and ``status: draft`` (a draft edition's readers get the main edition). Never overwrites."""
    tag = normalise_tag(tag, "--lang")
    editions = load_editions(main_path, main_lang)
    if tag == editions.main_lang:
        raise InputError(f"{tag} is the main edition's language", path=editions.main.path)
    target = edition_path(editions.main.path, tag)
    if target.exists():
        raise InputError("already exists", path=target)
    text = editions.main.source_text
    lines = text.split("\n")
    end = next(i for i, line in enumerate(lines[1:], start=1) if line.strip() in ("---", "..."))
    front: list[str] = []
    skipping = False
    for line in lines[1:end]:
        key = re.match(r"^([A-Za-z_]+)\s*:", line)
        if key:
            skipping = key.group(1) in (*INHERITED, "lang")
        elif line and not line[0].isspace():
            skipping = False
        if not skipping:
            front.append(line)
    front += [f"lang: {tag}", "status: draft  # set to ready when the translation is done"]
    target.write_text("\n".join(["---", *front, *lines[end:]]), encoding="utf-8")
    return target


def edition_url(base_url: str, slug: str, tag: str = MAIN) -> str:
    """The web archive page of one edition: ``/issues/<slug>/`` and ``/issues/<slug>/<tag>/``."""
    if not base_url:
        return ""
    return f"{base_url}/issues/{slug}/" + (f"{tag}/" if tag != MAIN else "")


@dataclass(frozen=True)
class EditionLink:
    """A line in one edition pointing to another: its page, and the button that switches to it."""

    tag: str            # MAIN or the edition's tag
    lang: str           # its language
    label: str          # "阅读中文版" / "Read in English": in *its* language
    switch_label: str   # "Send me this edition from now on", in its language
    url: str            # its archive page ("" without a base_url)


def links_for(editions: Editions, tag: str, base_url: str, root: Path | None = None) -> list[EditionLink]:
    """The other ready editions, as the ``tag`` edition links to them."""
    from newsletter.i18n import gettext

    out = []
    for other, _issue in editions:
        if other == tag or (other != MAIN and other not in editions.ready):
            continue
        lang = editions.lang_of(other)
        out.append(EditionLink(other, lang, gettext(lang, "Read in English", root),
                               gettext(lang, "Send me this edition from now on", root),
                               edition_url(base_url, editions.main.slug, other)))
    return out


def render_editions(editions: Editions, settings: "Settings", renderer: "Renderer | None" = None, *,
                    test: bool = False, only: str | None = None,
                    include_drafts: bool = True) -> dict[str, "RenderedEmail"]:
    """Each edition rendered once (or ``only`` that one), keyed by tag (main: ``MAIN``)."""
    from newsletter.render import Renderer

    renderer = renderer or Renderer(settings)
    wanted = [(t, i) for t, i in editions
              if (only is None or t == only) and (include_drafts or t == MAIN or not i.is_draft)]
    return {t: renderer.render(i, test=test, editions=editions, edition=t) for t, i in wanted}


def parse_any(path: Path, main_lang: str = "en") -> Issue:
    """The issue in ``path``, main edition or not (an edition is read with what it inherits)."""
    split = split_edition_path(Path(path))
    if split is None:
        return parse_issue(Path(path))
    main = parse_issue(split[0])
    return parse_edition(Path(path), main, split[1])
