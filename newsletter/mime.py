"""MIME encoding for personalised messages: quoted-printable body segments split at
the per-recipient placeholders, and header folding, both within RFC 5322/2045 limits.

The renderer leaves :data:`PLACEHOLDERS` in its output; :class:`~newsletter.message.PreparedIssue`
encodes the literal text between them once with :func:`segments` and joins each
recipient's values in with :func:`add_segments`.
"""

from __future__ import annotations

import html as htmllib
import json
from email import policy, quoprimime
from typing import Any, Callable

from newsletter.placeholders import KEY_BY_MARKER, PLACEHOLDER_RE, PLACEHOLDERS, fill  # noqa: F401 - re-exported

EOL = "\r\n"
_SMTP = policy.SMTP.clone(max_line_length=78)


def qp(text: str) -> str:
    """Quoted-printable for UTF-8 text, CRLF line ends, lines of at most 75 characters,
    so the soft break added at a placeholder join keeps every line within RFC 2045's 76."""
    return quoprimime.body_encode(text.encode("utf-8").decode("latin-1"), maxlinelen=75, eol=EOL)


def _split(body: str, encode: Callable[[str], Any]) -> list[Any]:
    """Alternating pieces of ``body``: each literal run through ``encode`` (even indexes),
    and the key of each placeholder between them (odd indexes)."""
    out: list[Any] = []
    pos = 0
    for m in PLACEHOLDER_RE.finditer(body):
        out.append(encode(body[pos:m.start()]))
        out.append(KEY_BY_MARKER[m.group()])
        pos = m.end()
    out.append(encode(body[pos:]))
    return out


def segments(body: str) -> list[str]:
    """Split a body into alternating literal/placeholder pieces, literals QP-encoded.

    Even indexes are encoded literals, odd ones placeholder keys. Each value is
    later encoded on its own between soft line breaks, so no line can grow past
    the limit and decoding gives back exactly the substituted text.
    """
    return _split(body, qp)


def add_segments(parts: list[str], segments: list[str], values: dict[str, str], *, stuffed: bool = False) -> None:
    """Append one recipient's encoded body to ``parts``: the prepared literals, and each
    value encoded between soft breaks. ``parts`` must end at a line start (a part head).

    Every literal and every value therefore starts a line, so with ``stuffed`` (literals
    already passed through :func:`stuff_lines`) only the short values need stuffing.
    """
    for i, seg in enumerate(segments):
        if i % 2 == 0:
            parts.append(seg)
        else:
            if parts and parts[-1] and not parts[-1].endswith(EOL):
                parts.append("=" + EOL)
            value = qp(values[seg])
            parts.append(stuff_lines(value) if stuffed else value)
            parts.append("=" + EOL)


def stuff_lines(text: str) -> str:
    """Double every ``.`` that starts a line (RFC 5321 4.5.2), for text that itself starts a line."""
    if text.startswith("."):
        text = "." + text
    return text.replace("\n.", "\n..") if "\n." in text else text


def dot_stuff(data: bytes) -> bytes:
    """Double a '.' at the start of any line (RFC 5321 4.5.2); same result as smtplib's.

    smtplib uses ``re.sub(rb"(?m)^\\.", b"..", data)``, which costs about 1 ms on a
    78 KB message; ``bytes.replace`` does the same job (a multiline ``^`` matches only
    at the start and after ``\\n``) some fifty times faster.
    """
    if b"\n." in data:
        data = data.replace(b"\n.", b"\n..")
    if data[:1] == b".":
        data = b"." + data
    return data


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


def json_segments(body: str) -> list[bytes | str]:
    """Like :func:`segments`, but each literal JSON-string-escaped (without the quotes), as bytes.

    JSON escapes one character at a time, so escaped literals joined with escaped
    values are exactly the escaped whole: a provider's payload can carry a 60 KB
    body escaped once per issue instead of once per recipient. ASCII-only (``\\uXXXX``),
    as ``json.dumps`` writes by default, and bytes, so the pieces go into a request body as they are.
    """
    return _split(body, _json_inner)


def _json_inner(text: str) -> bytes:
    """``text`` as the inside of a JSON string literal (no quotes), ASCII bytes."""
    return json.dumps(text)[1:-1].encode("ascii")


def json_parts(segments: list[bytes | str], values: dict[str, str], *, escape: bool) -> list[bytes]:
    """The pieces of a JSON string literal (quotes included) of the body with the values
    filled in (HTML-escaped when ``escape``), from :func:`json_segments`; written out piece by piece
    (:class:`newsletter.transports.http.RawJSON`), never joined per reader."""
    parts = [b'"']
    for i, seg in enumerate(segments):
        if i % 2 == 0:
            parts.append(seg)  # type: ignore[arg-type]
        else:
            value = htmllib.escape(values[seg]) if escape else values[seg]  # type: ignore[index]
            parts.append(_json_inner(value))
    parts.append(b'"')
    return parts


def substitute(body: str, values: dict[str, str], *, escape: bool) -> str:
    """The body with each placeholder replaced by its value (HTML-escaped when ``escape``)."""
    return fill(body, lambda key: htmllib.escape(values[key]) if escape else values[key])

