"""Our Message-IDs: ``<slug.hash@sender-domain>``, where the hash is an HMAC of the issue
and the recipient's address under the secret key.

Deterministic, so a retried message keeps its id; and checkable, so a bounce or
complaint that quotes one proves it concerns a message we really sent to that
reader (anyone can mail a forged report to the reply-to address; nobody can
forge the id without the key).
"""

from __future__ import annotations

import hmac

HASH_CHARS = 24


def make_message_id(secret_key: str, salt: str, slug: str, email: str, domain: str) -> str:
    """The id of one message; ``salt`` is the slug for real sends (test sends add to it)."""
    digest = hmac.digest(secret_key.encode(), f"{salt}:{email.lower()}".encode(), "sha256")  # one C call
    return f"<{slug}.{digest.hex()[:HASH_CHARS]}@{domain}>"


def real_send_salt(slug: str) -> str:
    return f"{slug}::"


def _split(message_id: str) -> tuple[str, str]:
    """(local part, host) of a Message-ID; ('', '') when it has no ``@``."""
    local, at, host = message_id.strip().strip("<>").rpartition("@")
    return (local, host) if at else ("", "")


def issue_slug(message_id: str) -> str:
    """The issue slug in a Message-ID of our shape, whatever its domain ('' when there is none)."""
    return _split(message_id)[0].rpartition(".")[0]


def slug_of(message_id: str, domain: str) -> str:
    """The issue slug in one of our Message-IDs, '' when the id is not on our domain."""
    return issue_slug(message_id) if _split(message_id)[1].lower() == domain.lower() else ""


def hash_of(message_id: str) -> str:
    """The hash in one of our Message-IDs (what follows the slug), '' when there is none."""
    local = _split(message_id)[0]
    return local.rpartition(".")[2] if "." in local else ""


def verify_message_id(secret_key: str, message_id: str, email: str, domain: str) -> bool:
    """Whether ``message_id`` is the one a real send of its issue gave ``email``."""
    slug = slug_of(message_id, domain)
    if not slug or not email:
        return False
    expected = make_message_id(secret_key, real_send_salt(slug), slug, email, domain)
    return hmac.compare_digest(expected.encode(), message_id.strip().encode())
