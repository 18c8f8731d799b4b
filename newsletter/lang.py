"""Language tags: checked, written one way, and matched the way CLDR (and Babel) match them.

A reader's ``zh``, ``zh-CN`` and ``zh-Hans`` all mean Simplified Chinese, and ``zh-TW`` does
not. CLDR's *likely subtags* say so: each tag is filled out to language, script and region
(``zh`` → ``zh-Hans-CN``, ``zh-TW`` → ``zh-Hant-TW``), and two tags match when language and
script agree. The table is Babel's copy of CLDR, so no list of languages lives here.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable, Mapping

from newsletter.errors import InputError
from newsletter.grammar import is_language_tag
from newsletter.patterns import compiled

#: BCP 47 as people write it: a language, then script, region or variant subtags.
TAG = r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8}){0,4}"
MAX_TAG = 35
#: An Accept-Language header longer than this is cut: it is outside input, and real ones are short.
MAX_ACCEPT = 1000
MAX_ACCEPT_ITEMS = 20


def normalise_tag(text: str, what: str = "language") -> str:
    """``text`` as a canonical tag (``zh-hans-cn`` → ``zh-Hans-CN``; ``_`` is read as ``-``).

    Raises :class:`InputError` for anything that is not tag-shaped."""
    tag = (text or "").strip().replace("_", "-")
    if len(tag) > MAX_TAG or not compiled(TAG + r"\Z").match(tag) or not is_language_tag(tag):  # grammar's one BCP 47 rule
        raise InputError(f"{what} {text!r} is not a language tag like en, zh-Hans or pt-BR")
    parts = tag.split("-")
    out = [parts[0].lower()]
    for part in parts[1:]:
        if len(part) == 4 and part.isalpha():
            out.append(part.title())
        elif (len(part) == 2 and part.isalpha()) or (len(part) == 3 and part.isdigit()):
            out.append(part.upper())
        else:
            out.append(part.lower())
    return "-".join(out)


def optional_tag(text: str | None, what: str = "language") -> str:
    """A canonical tag, or "" for no language."""
    return normalise_tag(text, what) if text and text.strip() else ""


def primary_language(tag: str) -> str:
    """The language subtag of a canonical tag (``zh`` of ``zh-Hans-CN``): what :func:`maximize` keeps."""
    return tag.split("-", 1)[0]


@lru_cache(maxsize=256)
def maximize(tag: str) -> tuple[str, str, str]:
    """(language, script, region) of ``tag`` filled out by CLDR's likely subtags.

    A language Babel does not know keeps what the tag says, with empty parts."""
    from babel.core import get_global

    parts = normalise_tag(tag).split("-")
    lang = parts[0]
    script = next((p for p in parts[1:] if len(p) == 4 and p.isalpha()), "")
    region = next((p for p in parts[1:] if len(p) in (2, 3) and (p.isupper() or p.isdigit())), "")
    likely: Mapping[str, str] = get_global("likely_subtags")
    for key in (f"{lang}_{script}_{region}", f"{lang}_{region}", f"{lang}_{script}", lang):
        if "__" in key or key.endswith("_"):
            continue
        found = likely.get(key)
        if found:
            f_lang, f_script, f_region = (found.split("_") + ["", "", ""])[:3]
            if len(f_script) != 4:  # "en_US": no script given
                f_script, f_region = "", f_script
            return lang, script or f_script, region or f_region
    return lang, script, region


def match(reader: str | None, candidates: Iterable[str]) -> str | None:
    """The candidate tag a reader's language matches, or None.

    Language and script must agree once filled out; of several, one whose region agrees too
    wins, then the first given. Filling out keeps the language subtag, so a candidate in
    another language, or the reader's own tag, is decided without CLDR's table (and without
    loading Babel: a build in one language never needs it)."""
    if not reader:
        return None
    try:
        own = normalise_tag(reader)
    except InputError:
        return None
    best: tuple[int, str] | None = None
    for tag in candidates:
        try:
            score = _match_score(own, reader, normalise_tag(tag), tag)
        except InputError:
            continue
        if score is not None and (best is None or score > best[0]):
            best = (score, tag)
    return best[1] if best else None


def _match_score(own: str, reader: str, other: str, tag: str) -> int | None:
    """None when ``tag`` does not match ``reader`` (``own``, ``other``: their canonical forms);
    else 1 when the filled-out regions agree too, 0 when they do not."""
    if primary_language(other) != primary_language(own):
        return None  # maximize never changes the language subtag
    if other == own:
        return 1  # the same tag fills out the same way
    want, have = maximize(reader), maximize(tag)
    if have[:2] != want[:2]:
        return None
    return 1 if have[2] == want[2] else 0


def accepted(header: str | None) -> list[str]:
    """The tags of an ``Accept-Language`` header, most wanted first (q=0 and junk left out)."""
    if not header:
        return []
    items: list[tuple[float, int, str]] = []
    for i, part in enumerate(header[:MAX_ACCEPT].split(",")[:MAX_ACCEPT_ITEMS]):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                continue
        if not 0 < q <= 1:
            continue
        try:
            items.append((-q, i, normalise_tag(tag)))
        except InputError:
            continue
    return [tag for _, _, tag in sorted(items)]


def negotiate(preferences: Iterable[str | None], available: Iterable[str]) -> str | None:
    """The first available tag that one of ``preferences`` (in order) matches."""
    choices = list(available)
    for pref in preferences:
        found = match(pref, choices)
        if found:
            return found
    return None


def display_name(tag: str, in_tag: str | None = None) -> str:
    """The language's own name for itself (``中文 (简体)``), or in ``in_tag``'s language; the tag when unknown."""
    try:
        from babel import Locale, UnknownLocaleError

        locale = Locale.parse(normalise_tag(tag), sep="-")
        return locale.get_display_name(Locale.parse(normalise_tag(in_tag), sep="-") if in_tag else locale) or tag
    except (InputError, ValueError, UnknownLocaleError):
        return tag


def is_cjk(tag: str | None) -> bool:
    """Chinese, Japanese or Korean: text set without spaces and without italics."""
    if not tag:
        return False
    try:
        return primary_language(normalise_tag(tag)) in ("zh", "ja", "ko", "yue", "wuu", "hak", "nan")
    except InputError:
        return False
