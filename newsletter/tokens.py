"""Unsubscribe tokens: HMAC-signed, unforgeable, and carrying no readable address.

A token is ``<subscriber id in base 36>.<signature>``, where the signature is an
HMAC-SHA256 over the id and the address. Verifying needs the stored address, so
a token is useless once the address changes, and it never reveals the address.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

_SIG_BYTES = 16  # 128-bit tag: far beyond guessing, short enough for a URL


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def _signature(secret: str, subscriber_id: int, email: str) -> str:
    mac = hmac.new(secret.encode(), f"unsubscribe:{subscriber_id}:{email.lower()}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()[:_SIG_BYTES]).rstrip(b"=").decode()


def make_token(secret: str, subscriber_id: int, email: str) -> str:
    return f"{_b36(subscriber_id)}.{_signature(secret, subscriber_id, email)}"


def token_subscriber_id(token: str) -> int | None:
    """The id a token claims, or None when it is malformed. Claims must still be verified."""
    sid, dot, sig = token.partition(".")
    if not dot or not sig or len(sid) > 12:
        return None
    try:
        return int(sid, 36)
    except ValueError:
        return None


def verify_token(secret: str, token: str, email: str) -> bool:
    """Constant-time check that ``token`` was made for ``email``."""
    sid = token_subscriber_id(token)
    if sid is None:
        return False
    expected = make_token(secret, sid, email)
    return hmac.compare_digest(expected.encode(), token.encode())


_REQUEST_RE = re.compile(r"^\s*(?:mailto:[^?\s]*\?subject=)?(?:unsubscribe(?:\s+|%20|\+))?"
                         r"([0-9a-z]{1,12}\.[A-Za-z0-9_-]{1,128})\s*$", re.IGNORECASE)


def token_from_request(text: str) -> str | None:
    """The token in what a reader mailed or an editor pasted: ``TOKEN``, the mailto
    subject ``unsubscribe TOKEN``, or the whole ``mailto:…?subject=unsubscribe%20TOKEN``.
    None when it holds no token-shaped word. The token must still be verified."""
    if len(text) > 600:  # a token is ~40 characters; a mailto URL adds an address
        return None
    m = _REQUEST_RE.match(text)
    return m.group(1) if m else None

