"""MIME encoding for personalised messages: quoted-printable body segments split at
the per-recipient placeholders, and header folding, both within RFC 5322/2045 limits.

The renderer leaves :data:`PLACEHOLDERS` in its output; :class:`~newsletter.message.PreparedIssue`
encodes the literal text between them once with :func:`segments` and joins each
recipient's values in with :func:`join_segments`.
"""

from __future__ import annotations

import html as htmllib
import re
from email import policy, quoprimime

#: Named per-recipient placeholders left in the rendered output; the message
#: builder substitutes them cheaply (HTML-escaped in the HTML part).
PLACEHOLDERS = {
    "unsubscribe_url": "%%UNSUBSCRIBE_URL%%",
    "email": "%%EMAIL%%",
    "name": "%%NAME%%",
}
_PLACEHOLDER_RE = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS.values()))
_KEY_BY_MARKER = {marker: key for key, marker in PLACEHOLDERS.items()}
EOL = "\r\n"
_SMTP = policy.SMTP.clone(max_line_length=78)


def qp(text: str) -> str:
    """Quoted-printable for UTF-8 text, CRLF line ends, lines of at most 75 characters,
    so the soft break added at a placeholder join keeps every line within RFC 2045's 76."""
    return quoprimime.body_encode(text.encode("utf-8").decode("latin-1"), maxlinelen=75, eol=EOL)


def segments(body: str) -> list[str]:
    """Split a body into alternating literal/placeholder pieces, literals QP-encoded.

    Even indexes are encoded literals, odd ones placeholder keys. Each value is
    later encoded on its own between soft line breaks, so no line can grow past
    the limit and decoding gives back exactly the substituted text.
    """
    out: list[str] = []
    pos = 0
    for m in _PLACEHOLDER_RE.finditer(body):
        out.append(qp(body[pos:m.start()]))
        out.append(_KEY_BY_MARKER[m.group()])
        pos = m.end()
    out.append(qp(body[pos:]))
    return out


def join_segments(segments: list[str], values: dict[str, str]) -> str:
    """One recipient's encoded body: the prepared literals with each value encoded between soft breaks."""
    parts: list[str] = []
    for i, seg in enumerate(segments):
        if i % 2 == 0:
            parts.append(seg)
        else:
            if parts and parts[-1] and not parts[-1].endswith(EOL):
                parts.append("=" + EOL)
            parts.append(qp(values[seg]))
            parts.append("=" + EOL)
    return "".join(parts)


def fold(name: str, value: str) -> str:
    """One header, RFC 2047-encoded where needed and folded to 78 columns, CRLF-terminated."""
    if not value.isascii():
        return _SMTP.header_factory(name, value).fold(policy=_SMTP)
    # ASCII: fold at spaces ourselves. The email package folds a long value right
    # after the colon, which its own parser then reads back with a leading space.
    lines, line = [], f"{name}:"
    for word in value.split(" "):
        if len(line) + 1 + len(word) > 78 and line != f"{name}:":
            lines.append(line)
            line = ""
        line += " " + word
    lines.append(line)
    if max(map(len, lines)) > 998:  # a word too long even for RFC 5322's hard limit: encode and split it
        return _SMTP.header_factory(name, value).fold(policy=_SMTP)
    return EOL.join(lines) + EOL


def fold_list_unsubscribe(value: str) -> str:
    # Fold after each comma: URLs must never be broken, and each stays far under 998.
    return "List-Unsubscribe: " + ("," + EOL + " ").join(v.strip() for v in value.split(",")) + EOL


def substitute(body: str, values: dict[str, str], *, escape: bool) -> str:
    """The body with each placeholder replaced by its value (HTML-escaped when ``escape``)."""
    def repl(m: re.Match[str]) -> str:
        v = values[_KEY_BY_MARKER[m.group()]]
        return htmllib.escape(v) if escape else v

    return _PLACEHOLDER_RE.sub(repl, body)
