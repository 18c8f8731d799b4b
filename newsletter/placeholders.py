"""The per-recipient placeholders the renderer leaves in its output, and the one way to fill them.

Apart from newsletter.mime (which encodes messages and needs the ``email`` package), so that
rendering and the preview page do not load the MIME machinery they never use.
"""

from __future__ import annotations

import re
from typing import Callable

#: Named per-recipient placeholders left in the rendered output; the message
#: builder substitutes them cheaply (HTML-escaped in the HTML part).
PLACEHOLDERS = {
    "unsubscribe_url": "%%UNSUBSCRIBE_URL%%",
    "email": "%%EMAIL%%",
    "name": "%%NAME%%",
    "language_url": "%%LANGUAGE_URL%%",  # the reader's signed link to switch editions (+ "/<tag>")
}
PLACEHOLDER_RE = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS.values()))
KEY_BY_MARKER = {marker: key for key, marker in PLACEHOLDERS.items()}


def fill(body: str, value_of: Callable[[str], str]) -> str:
    """The body with each placeholder replaced by ``value_of(its key)``, in ONE pass: every
    substitution goes through here (or :func:`newsletter.mime.segments`), so a value that holds
    a placeholder (a reader named ``%%UNSUBSCRIBE_URL%%``) stays literal, never scanned again."""
    return PLACEHOLDER_RE.sub(lambda m: value_of(KEY_BY_MARKER[m.group()]), body)
