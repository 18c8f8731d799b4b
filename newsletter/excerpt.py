"""A reader's own words from a reply: quoted history, forwarded copies and signatures cut.

Mail clients quote in a handful of ways ("> " prefixes, "On … wrote:",
Outlook's "-----Original Message-----" or a "From: … Sent: …" block, Chinese
clients' "发件人:" headers, HTML ``<blockquote>``); everything from the first
of them on is history, not feedback. The digest shows only what comes before.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from newsletter.patterns import UNSHOWABLE_CHARS, compiled

MAX_LINES = 8
MAX_CHARS = 600

_HISTORY = re.compile(
    r"^\s*(?:"
    r"On\b.{0,300}\bwrote:\s*$"                      # Gmail, Apple Mail, Thunderbird
    r"|Am\b.{0,300}\bschrieb.{0,60}:\s*$"            # German clients
    r"|Le\b.{0,300}\ba écrit\s*:\s*$"                # French clients
    r"|在.{0,200}写道[:：]\s*$"                        # Chinese clients
    r"|-{2,}\s*(?:Original Message|Forwarded message|Ursprüngliche Nachricht|原始邮件)\s*-{2,}"
    r"|_{10,}\s*$"                                   # Outlook's rule above the quoted header block
    r"|(?:From|发件人|Von|De)\s*[:：].{0,300}$"      # a quoted header block
    r"|Begin forwarded message:"
    r")", re.IGNORECASE)
_SIGNATURE = re.compile(r"^(?:-- ?|—\s*|Sent from my .{0,40}|Get Outlook for .{0,40}|发自我的.{0,20})$",
                        re.IGNORECASE)
_BLANKS = re.compile(r"\n{3,}")


def printable(text: str) -> str:
    """Text without control, bidi-override or zero-width characters: a reader's words end
    up on an editor's terminal, where an escape sequence could rewrite what is shown."""
    return compiled(UNSHOWABLE_CHARS).sub(" ", text)


class _Text(HTMLParser):
    """HTML to text: block elements break lines; blockquotes (quoted history), scripts and
    styles are dropped."""

    _SKIP = {"blockquote", "script", "style", "head", "title"}
    _BREAK = {"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "hr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self._SKIP:
            self.skip += 1
        elif tag in self._BREAK:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in self._BREAK:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(data)


def html_to_text(html: str) -> str:
    parser = _Text()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # HTMLParser is lenient; anything else is garbage we show nothing of
        return ""
    lines = (" ".join(line.split()) for line in "".join(parser.out).splitlines())
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()


def own_text(text: str) -> str:
    """The part of a reply its writer typed: up to the first quote, history marker or signature.
    An attribution line wrapped in two ("On …, Name <" / "addr> wrote:", as Gmail sends
    it) counts as one."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        joined = stripped + " " + (lines[i + 1].strip() if i + 1 < len(lines) else "")
        if (stripped.startswith(">") or _HISTORY.match(stripped) or _SIGNATURE.match(stripped)
                or _HISTORY.match(joined)):
            break
        kept.append(line.rstrip())
    return _BLANKS.sub("\n\n", "\n".join(kept)).strip()


def excerpt(text: str, max_lines: int = MAX_LINES, max_chars: int = MAX_CHARS) -> str:
    """The first lines of the writer's own text, non-empty, cut to size."""
    lines = [" ".join(line.split()) for line in printable(own_text(text)).split("\n")]
    lines = [line for line in lines if line][:max_lines]
    out = "\n".join(lines)
    return out if len(out) <= max_chars else out[:max_chars - 1].rstrip() + "…"
