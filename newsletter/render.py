"""Rendering: a parsed issue becomes email HTML and plain text, once per issue.

(Work in progress: the pipeline lands in the next commit.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: Named per-recipient placeholders left in the rendered output; the message
#: builder substitutes them cheaply (HTML-escaped in the HTML part).
PLACEHOLDERS = {
    "unsubscribe_url": "%%UNSUBSCRIBE_URL%%",
    "email": "%%EMAIL%%",
    "name": "%%NAME%%",
}


@dataclass(frozen=True)
class RenderedEmail:
    """One issue, rendered: everything the message builder needs, nothing per recipient."""

    slug: str
    number: int
    title: str
    subject: str
    preheader: str
    html: str
    text: str
    lang: str
    reply_to: str | None
    content_hash: str
    source: Path | None = None
