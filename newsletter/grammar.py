"""The written grammars of front-matter values: a BCP 47 language tag, a calendar date, a URL slug.

A length limit alone let ``lang: english`` or ``date: 20250401`` through to the HTML and the
feeds, where they are wrong without a word. Each grammar here is the standard's own, so a
value either is one or is refused where it was written.
"""

from __future__ import annotations

import datetime as dt

from newsletter.patterns import compiled

# RFC 5646 section 2.1 (``langtag``, ``privateuse``, ``grandfathered``), case-insensitive:
# well-formedness, which is what a browser and a feed reader need of ``lang``.
_LANGTAG = (
    # language, with up to three extlangs. RFC 5646 also reserves 4 letters and allows 5-8 for
    # registration, but the IANA registry has never held one: "english" is a word, not a tag.
    r"[a-z]{2,3}(?:-[a-z]{3}){0,3}"
    r"(?:-[a-z]{4})?"  # script
    r"(?:-(?:[a-z]{2}|[0-9]{3}))?"  # region
    r"(?:-(?:[a-z0-9]{5,8}|[0-9][a-z0-9]{3}))*"  # variants
    r"(?:-[0-9a-wy-z](?:-[a-z0-9]{2,8})+)*"  # extensions
    r"(?:-x(?:-[a-z0-9]{1,8})+)?"  # private use
)
_PRIVATE_USE = r"x(?:-[a-z0-9]{1,8})+"
_GRANDFATHERED = (
    r"en-gb-oed|i-ami|i-bnn|i-default|i-enochian|i-hak|i-klingon|i-lux|i-mingo|i-navajo|i-pwn|i-tao|i-tay|"
    r"i-tsu|sgn-be-fr|sgn-be-nl|sgn-ch-de|art-lojban|cel-gaulish|no-bok|no-nyn|zh-guoyu|zh-hakka|zh-min|"
    r"zh-min-nan|zh-xiang"
)
BCP47 = rf"(?i:{_GRANDFATHERED}|{_LANGTAG}|{_PRIVATE_USE})"
#: A URL path segment that needs no escaping, on any file system: lower-case words joined by hyphens.
SLUG = r"[a-z0-9]+(?:-[a-z0-9]+)*"
#: An ISO 8601 calendar date, as the README writes it (``2025-03-10``), not the other ISO forms.
ISO_DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"


def is_language_tag(text: str) -> bool:
    """Whether ``text`` is a well-formed BCP 47 tag (``en``, ``zh-Hans-CN``, ``de-CH-1996``), not
    ``en_US`` or ``english``."""
    return len(text) <= 35 and compiled(BCP47).fullmatch(text) is not None


def is_slug(text: str) -> bool:
    return compiled(SLUG).fullmatch(text) is not None


def calendar_date(text: str) -> dt.date | None:
    """``YYYY-MM-DD`` as a real date (no 2025-02-30), else None."""
    if not compiled(ISO_DATE).fullmatch(text):
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None
