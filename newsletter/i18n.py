"""Interface strings in the reader's language: gettext message catalogs, compiled with Babel.

Catalogs are ``.po`` files, ``data/locale/<locale>/LC_MESSAGES/newsletter.po`` shipped with the
tool (English and Simplified Chinese) and ``locale/<locale>/LC_MESSAGES/newsletter.po`` in the
publication, which win. They are compiled in memory when first used, so a third language is
one more ``.po`` file and no build step (a build keeps the compiled form in build/.cache/i18n/).
A string a catalog lacks stays English.
"""

from __future__ import annotations

import hashlib
import io
import time
from functools import lru_cache
from gettext import GNUTranslations, NullTranslations
from pathlib import Path
from typing import Callable, Iterable

from newsletter.disk_memo import package_version, read_blob, write_blob
from newsletter.lang import match, normalise_tag

DOMAIN = "newsletter"
SHIPPED = Path(__file__).resolve().parent / "data" / "locale"


@lru_cache(maxsize=64)  # asked twice by every public page, with the same root
def catalog_dirs(root: Path | None = None) -> tuple[Path, ...]:
    """Where catalogs are looked for, the publication's first."""
    return ((root / "locale",) if root is not None else ()) + (SHIPPED,)


#: Seconds a scan of the catalog folders is reused: every public page asks (twice), and a scan
#: is a dozen stats; a catalog added to a running server is found within this long.
RESCAN_SECONDS = 10.0
_scans: dict[tuple[Path, ...], tuple[float, list[str]]] = {}


def languages(dirs: Iterable[Path] = (SHIPPED,), *, clock: Callable[[], float] = time.monotonic) -> list[str]:
    """The tags there is a catalog for (``zh_Hans`` folders read as ``zh-Hans``), sorted."""
    key = tuple(dirs)
    now = clock()
    scan = _scans.get(key)
    if scan is None or not 0 <= now - scan[0] < RESCAN_SECONDS:
        if len(_scans) > 64:  # one entry per publication root a process serves: bounded anyway
            _scans.clear()
        scan = _scans[key] = (now, _scan(key))
    return list(scan[1])


def _scan(dirs: tuple[Path, ...]) -> list[str]:
    found: set[str] = set()
    for base in dirs:
        if base.is_dir():
            for po in base.glob(f"*/LC_MESSAGES/{DOMAIN}.po"):
                try:
                    found.add(normalise_tag(po.parent.parent.name))
                except Exception:  # a folder that is not a tag: not a catalog
                    continue
    return sorted(found)


@lru_cache(maxsize=32)
def _translations(tag: str, dirs: tuple[Path, ...], cache_dir: Path | None = None) -> NullTranslations:
    result = NullTranslations()
    for base in reversed(dirs):  # shipped first, then the publication's on top
        po = base / tag.replace("-", "_") / "LC_MESSAGES" / f"{DOMAIN}.po"
        if not po.is_file():
            continue
        layer = GNUTranslations(io.BytesIO(_compiled(po.read_bytes(), tag.replace("-", "_"), cache_dir)))
        layer.add_fallback(result)
        result = layer
    return result


def _compiled(po: bytes, locale: str, cache_dir: Path | None) -> bytes:
    """The .mo form of a .po catalog, compiled by Babel; with ``cache_dir``, kept there by content
    (and Babel's version), so a fresh `newsletter build` neither loads Babel nor parses the .po."""
    name = hashlib.sha256(b"\0".join([package_version("babel").encode(), locale.encode(), po])).hexdigest()
    blob = read_blob(cache_dir, f"catalog-{name[:32]}.mo")
    if blob is None:
        from babel.messages.mofile import write_mo
        from babel.messages.pofile import read_po

        buf = io.BytesIO()
        write_mo(buf, read_po(io.BytesIO(po), locale=locale, domain=DOMAIN))
        blob = buf.getvalue()
        write_blob(cache_dir, f"catalog-{name[:32]}.mo", blob)
    return blob


def translations(tag: str | None, root: Path | None = None, cache_dir: Path | None = None) -> NullTranslations:
    """gettext translations for the catalog ``tag`` matches (CLDR likely subtags), else English.
    ``cache_dir`` keeps compiled catalogs between processes (see :func:`_compiled`)."""
    dirs = catalog_dirs(root)
    found = match(tag, languages(dirs)) if tag else None
    return _translations(found or "en", dirs, cache_dir)


def gettext(tag: str | None, message: str, root: Path | None = None, **values: object) -> str:
    """``message`` in ``tag``'s language, with ``%(name)s`` values filled in."""
    text = translations(tag, root).gettext(message)
    return text % values if values else text


def page_language(stored: str | None, accept_language: str | None, default: str, root: Path | None = None,
                  *, first: str | None = None) -> str:
    """The language a public page is shown in: ``first`` (a choice the reader is making), the
    reader's stored language, else the request's ``Accept-Language``, else the publication's
    — each only when there is a catalog for it (English always is)."""
    from newsletter.lang import accepted, negotiate

    available = languages(catalog_dirs(root))
    found = negotiate([first, stored, *accepted(accept_language)], available)
    return found or default or "en"


def translator(tag: str | None, root: Path | None = None):  # noqa: ANN201 - Callable[..., str]
    """``_(message, **values)`` in ``tag``'s language, for templates and pages that escape what they
    are given (the result is plain text: autoescaping escapes the values and the words alike)."""
    trans = translations(tag, root)

    def _(message: str, **values: object) -> str:
        text = trans.gettext(message)
        return text % values if values else text

    return _


def offered_languages(main_lang: str, issues_dir: Path) -> list[tuple[str, str]]:
    """(tag, its own name) of the languages a reader may choose: the publication's and those its
    issues have editions in (none to choose from for a publication in one language)."""
    from newsletter.editions import edition_languages
    from newsletter.lang import display_name, match, optional_tag

    tags = [optional_tag(main_lang) or "en"]
    for tag in sorted(edition_languages(issues_dir)):
        if match(tag, tags) is None:
            tags.append(tag)
    return [(tag, display_name(tag)) for tag in tags] if len(tags) > 1 else []
