"""A publication's own templates: which defaults it overrides, and copying one to change it.

A publication's ``templates/`` holds only the files its editors changed; the rest come
from the templates shipped with the tool (the renderer looks in both, the publication
first). So fixes to the shipped templates reach every publication that did not copy
them, and ``diff`` shows what a new version changed in the ones it did.

Publications started before ``init`` stopped copying hold a copy of every template. A
copy that is byte for byte a version the tool once shipped (their digests are kept in
``data/template-history.txt``) was never edited, so it can go, as dpkg treats an
unmodified conffile.
"""

from __future__ import annotations

import hashlib
import shutil
from functools import cache
from pathlib import Path
from typing import Iterator

from newsletter.errors import InputError

#: The checkout's templates, used when running from a source tree rather than an installed wheel.
CHECKOUT_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
#: ``name sha256`` of every version of the shipped templates (scripts/record_template_history.py).
HISTORY_FILE = Path(__file__).resolve().parent / "data" / "template-history.txt"

DEFAULT = "default"  # not in the publication: the shipped template is used
SAME = "copy, same as the default"  # in the publication, byte for byte the shipped one
OLD = "copy of an older default"  # byte for byte what an earlier version shipped: never edited
CHANGED = "customised"  # in the publication and different from the shipped one
OWN = "own"  # only in the publication (an include of its own)


def default_templates_dir() -> Path:
    """The templates shipped with the tool: package data when installed, else the checkout's."""
    from importlib.util import find_spec

    spec = find_spec("newsletter.default_templates")
    if spec and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return CHECKOUT_TEMPLATES


def _defaults() -> dict[str, Path]:
    return {p.name: p for p in sorted(default_templates_dir().glob("*.j2"))}


@cache
def shipped_versions() -> frozenset[tuple[str, str]]:
    """(name, sha256) of every version of the shipped templates."""
    lines = HISTORY_FILE.read_text(encoding="utf-8").splitlines() if HISTORY_FILE.is_file() else []
    return frozenset(tuple(line.split()) for line in lines if line and not line.startswith("#"))  # type: ignore[misc]


def _state(name: str, mine: Path, shipped: Path | None) -> str:
    data = mine.read_bytes()
    if shipped is not None and data == shipped.read_bytes():
        return SAME
    if (name, hashlib.sha256(data).hexdigest()) in shipped_versions():
        return OLD
    return CHANGED if shipped is not None else OWN


def template_states(templates_dir: Path) -> Iterator[tuple[str, str]]:
    """Every template name with where it comes from for this publication. A folder that is
    the shipped one (running in the tool's own checkout) overrides nothing."""
    defaults = _defaults()
    same_folder = templates_dir.is_dir() and templates_dir.resolve() == default_templates_dir().resolve()
    own = {} if same_folder or not templates_dir.is_dir() else {p.name: p for p in templates_dir.glob("*.j2")}
    for name in sorted(defaults.keys() | own.keys()):
        yield name, _state(name, own[name], defaults.get(name)) if name in own else DEFAULT


def _shipped(name: str) -> Path:
    """The shipped template called ``name``; only those names are accepted (no paths)."""
    defaults = _defaults()
    if name not in defaults:
        raise InputError(f"no shipped template is called {name[:80]!r}; they are: {', '.join(defaults)}")
    return defaults[name]


def copy_template(templates_dir: Path, name: str, *, force: bool = False) -> Path:
    """Copy a shipped template into the publication, to change it there."""
    src, dst = _shipped(name), templates_dir / name
    if dst.exists() and not force:
        raise InputError("the publication already has this template; --force replaces it with the shipped one "
                         "(`newsletter templates diff` shows what would change)", path=dst)
    templates_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def template_diff(templates_dir: Path, name: str) -> str:
    """A unified diff from the shipped template to the publication's copy ('' when the same
    or not copied): what the editors changed, or what a new version of the tool changed."""
    import difflib

    src, dst = _shipped(name), templates_dir / name
    if not dst.is_file():
        return ""
    theirs = src.read_text(encoding="utf-8").splitlines(keepends=True)
    ours = dst.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
    return "".join(difflib.unified_diff(theirs, ours, f"shipped/{name}", f"templates/{name}"))
