"""Which database NEWSLETTER_DB names: a SQLite file (a path, the default) or a PostgreSQL URL.

Kept apart from both backends so that choosing one loads neither, and so that the one rule
"a password is never printed" has one home: :func:`redact`.
"""

from __future__ import annotations

import re

#: The URL schemes libpq accepts for a PostgreSQL connection.
SCHEMES = ("postgresql://", "postgres://")
_PASSWORD_IN_URL = r"(://[^:/?#@\s]*:)[^@/?#\s]*(@)"
_PASSWORD_PARAM = r"(?i)(password=)[^&\s]*"


def is_postgres(target: object) -> bool:
    """Whether ``target`` (a NEWSLETTER_DB value or a path) names a PostgreSQL database."""
    return isinstance(target, str) and target.strip().lower().startswith(SCHEMES)


def redact(text: str) -> str:
    """``text`` with any password in a URL (``user:secret@``, ``password=secret``) replaced by ``***``."""
    text = re.sub(_PASSWORD_IN_URL, r"\1***\2", text)
    return re.sub(_PASSWORD_PARAM, r"\1***", text)


def url_passwords(target: str) -> list[str]:
    """The password a ``postgresql://`` URL carries, as written and decoded (for
    :func:`newsletter.errors.register_secrets`, so a scrubbed text hides it even outside a URL)."""
    from urllib.parse import parse_qs, unquote, urlsplit

    if not is_postgres(target):
        return []
    parts = urlsplit(target.strip())
    found = [parts.password or ""] + parse_qs(parts.query).get("password", [])
    return [v for p in found if p for v in {p, unquote(p)}]
