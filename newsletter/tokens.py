"""Reader tokens (unsubscribe, signup confirmation): unforgeable, opaque, one exact shape.

A token is 32 characters of URL-safe base64 (no padding) holding 24 bytes:

* 8 bytes: the subscriber id, *encrypted* with a keyed 64-bit permutation (a
  4-round Feistel network over keyed BLAKE2b) so tokens reveal neither the list's
  size nor when a reader joined;
* 16 bytes: a keyed BLAKE2b tag (a MAC) over the purpose, the id and the address.

Both keys are derived from ``NEWSLETTER_SECRET_KEY``. Verifying needs the stored
address, so a token dies when the address changes, and it never reveals it.

Parsing is strict: anything that is not exactly that shape is rejected before
any arithmetic, database access or lock.

**Legacy tokens.** Mail sent before this format carried ``<id in base 36>.<tag>``.
They are accepted (strictly parsed: 1–12 lower-case base-36 digits without a leading zero, a dot,
22 URL-safe base64 characters) until :data:`LEGACY_CUTOFF`, so readers can still
leave from an old issue; after that the reader can still reply or use the link in
any newer issue. They leak nothing new: the ids in them are already out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Callable

#: Old-format tokens (``<base36 id>.<tag>``) stop working after this instant (UTC).
LEGACY_CUTOFF = datetime(2027, 12, 31, 23, 59, 59, tzinfo=timezone.utc)

_SIG_BYTES = 16  # 128-bit tag: far beyond guessing, short enough for a URL
_ID_BYTES = 8
_MAX_ID = 2**63 - 1  # SQLite's INTEGER PRIMARY KEY range
TOKEN_LENGTH = 32  # base64 of 24 bytes: no padding, every bit significant
_TOKEN_SHAPE = r"[A-Za-z0-9_-]{32}"
_LEGACY_SHAPE = r"[1-9a-z][0-9a-z]{0,11}\.[A-Za-z0-9_-]{22}"
_TOKEN_RE = re.compile(_TOKEN_SHAPE + r"\Z")
_LEGACY_RE = re.compile(_LEGACY_SHAPE + r"\Z")
_ROUNDS = 4

UNSUBSCRIBE = "unsubscribe"
CONFIRM = "confirm"
LANGUAGE = "language"  # a reader's link to choose the edition of future issues


@lru_cache(maxsize=16)
def derive_key(secret: str, label: str) -> bytes:
    """A key for one use (``label``) derived from ``NEWSLETTER_SECRET_KEY``, so no two uses share a key."""
    return hmac.new(secret.encode(), f"newsletter token key:{label}".encode(), hashlib.sha256).digest()


@lru_cache(maxsize=16)
def _hashers(secret: str) -> tuple[Any, ...]:
    """Keyed BLAKE2b states, made once per secret and copied per use (re-keying costs more than
    the hash): one per Feistel round, then the tag's. Keyed BLAKE2b is a PRF and a MAC."""
    rounds = tuple(hashlib.blake2b(key=derive_key(secret, "id-permutation"), digest_size=4, person=bytes([i]) * 16)
                   for i in range(_ROUNDS))
    return rounds + (hashlib.blake2b(key=derive_key(secret, "tag"), digest_size=_SIG_BYTES),)


def _round(state: Any, half: int) -> int:
    h = state.copy()
    h.update(half.to_bytes(4, "big"))
    return int.from_bytes(h.digest(), "big")


def _permute(secret: str, value: int, *, inverse: bool = False) -> int:
    """A keyed permutation of 64-bit integers (balanced Feistel network)."""
    rounds = _hashers(secret)[:_ROUNDS]
    left, right = value >> 32, value & 0xFFFFFFFF
    if not inverse:
        for state in rounds:
            left, right = right, left ^ _round(state, right)
    else:
        for state in reversed(rounds):
            left, right = right ^ _round(state, left), left
    return (left << 32) | right


def _tag(secret: str, purpose: str, subscriber_id: int, email: str) -> bytes:
    h = _hashers(secret)[_ROUNDS].copy()
    h.update(f"{purpose}:{subscriber_id}:{email.lower()}".encode())
    return h.digest()


def make_token(secret: str, subscriber_id: int, email: str, purpose: str = UNSUBSCRIBE) -> str:
    """The token for ``subscriber_id`` at ``email``; ``purpose`` keeps confirm and unsubscribe links apart."""
    if not 0 < subscriber_id <= _MAX_ID:
        raise ValueError("subscriber id out of range")
    packed = _permute(secret, subscriber_id).to_bytes(_ID_BYTES, "big") + _tag(secret, purpose, subscriber_id, email)
    return base64.urlsafe_b64encode(packed).decode()


def token_subscriber_id(secret: str, token: str, *, now: datetime | None = None) -> int | None:
    """The id a token claims, or None when it is not exactly a token's shape.

    The claim must still be checked with :func:`verify_token` against the stored address.
    """
    if not isinstance(token, str):
        return None
    if len(token) == TOKEN_LENGTH and _TOKEN_RE.match(token):
        sid = _permute(secret, int.from_bytes(base64.urlsafe_b64decode(token)[:_ID_BYTES], "big"), inverse=True)
        return sid if 0 < sid <= _MAX_ID else None
    if len(token) <= 35 and _LEGACY_RE.match(token) and _legacy_allowed(now):
        sid = int(token.partition(".")[0], 36)
        return sid if 0 < sid <= _MAX_ID else None
    return None


def verify_token(secret: str, token: str, email: str, purpose: str = UNSUBSCRIBE, *,
                 now: datetime | None = None) -> bool:
    """Constant-time check that ``token`` was made for ``email`` (and ``purpose``)."""
    sid = token_subscriber_id(secret, token, now=now)
    return sid is not None and _tag_matches(secret, token, sid, email, purpose)


def _tag_matches(secret: str, token: str, sid: int, email: str, purpose: str) -> bool:
    """``token``, whose id part names ``sid``, carries the tag for ``email`` and ``purpose``."""
    if "." in token:
        if purpose != UNSUBSCRIBE:
            return False  # confirmation links never existed in the old format
        return hmac.compare_digest(_legacy_token(secret, sid, email).encode(), token.encode())
    # The id part decrypted to ``sid`` (a bijection), so only the tag is left to check.
    return hmac.compare_digest(base64.urlsafe_b64decode(token)[_ID_BYTES:], _tag(secret, purpose, sid, email))


def verified_subscriber_id(secret: str, token: str, email_of: Callable[[int], str | None], purpose: str = UNSUBSCRIBE, *,
                           now: datetime | None = None) -> int | None:
    """The subscriber id of a *valid* token, looking the address up with ``email_of(id)``.

    Always computes a tag, even for an unknown id, so timing does not tell the failures apart.
    """
    sid = token_subscriber_id(secret, token, now=now)
    if sid is None:
        return None
    email = email_of(sid)
    ok = _tag_matches(secret, token, sid, email or "nobody@invalid.invalid", purpose)  # id already decoded
    return sid if ok and email is not None else None


def confirm_purpose(nonce: str) -> str:
    """The purpose a confirmation link is signed for: bound to one signup request's nonce.
    ``""`` is the nonce-less form mailed before nonces existed (accepted only while the
    reader has no nonce stored, i.e. for a request made before the upgrade)."""
    return f"{CONFIRM}#{nonce}" if nonce else CONFIRM


def make_confirm_token(secret: str, subscriber_id: int, email: str, nonce: str) -> str:
    """The confirmation link's token for the signup request whose nonce is ``nonce``."""
    return make_token(secret, subscriber_id, email, confirm_purpose(nonce))


def verified_confirm_id(secret: str, token: str, key_of: Callable[[int], tuple[str, str] | None], *,
                        now: datetime | None = None) -> int | None:
    """The subscriber id of a valid confirmation token, looking up ``(address, nonce)`` with
    ``key_of(id)``: the link must carry the nonce of the reader's current request, so it works
    for that request alone. Always computes a tag, so timing does not tell failures apart."""
    sid = token_subscriber_id(secret, token, now=now)
    if sid is None:
        return None
    key = key_of(sid)
    email, nonce = key if key is not None else ("nobody@invalid.invalid", "")
    ok = _tag_matches(secret, token, sid, email, confirm_purpose(nonce))
    return sid if ok and key is not None else None


def _legacy_allowed(now: datetime | None) -> bool:
    return (now or datetime.now(timezone.utc)) <= LEGACY_CUTOFF


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def _legacy_token(secret: str, subscriber_id: int, email: str) -> str:
    """The pre-2026 format, kept only to verify links in mail already sent."""
    if subscriber_id < 0:
        raise ValueError("negative id")
    mac = hmac.new(secret.encode(), f"unsubscribe:{subscriber_id}:{email.lower()}".encode(), hashlib.sha256)
    tag = base64.urlsafe_b64encode(mac.digest()[:_SIG_BYTES]).rstrip(b"=").decode()
    return f"{_b36(subscriber_id)}.{tag}"


# The words around the token in any case; the token itself in exactly the shapes above.
_REQUEST_RE = re.compile(r"^\s*(?i:mailto:[^?\s]*\?subject=)?(?i:unsubscribe(?:\s+|%20|\+))?"
                         rf"({_TOKEN_SHAPE}|{_LEGACY_SHAPE})\s*$")


def token_from_request(text: str) -> str | None:
    """The token in what a reader mailed or an editor pasted: ``TOKEN``, the mailto
    subject ``unsubscribe TOKEN``, or the whole ``mailto:…?subject=unsubscribe%20TOKEN``.
    None when it holds no token-shaped word. The token must still be verified."""
    if len(text) > 600:  # a token is 32 characters; a mailto URL adds an address
        return None
    m = _REQUEST_RE.match(text)
    return m.group(1) if m else None
