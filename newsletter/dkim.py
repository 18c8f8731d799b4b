"""DKIM signing (dkimpy), and the key it signs with, loaded from the settings.

Kept apart from the message builder so that nothing imports dkimpy until a
message is actually signed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from newsletter.errors import ConfigError, InputError

if TYPE_CHECKING:
    from newsletter.config import Settings

#: Signed when present: RFC 6376 §5.4.1's recommended list, plus what list mail and its
#: MIME structure rely on (RFC 2369/2919 list fields, RFC 8058 one-click, MIME-Version,
#: Content-*): the fields a forwarder or list manager must not change unnoticed.
DKIM_HEADERS = (b"From", b"Reply-To", b"Subject", b"Date", b"To", b"Cc", b"Message-ID", b"In-Reply-To",
                b"References", b"List-Id", b"List-Help", b"List-Unsubscribe", b"List-Unsubscribe-Post",
                b"List-Subscribe", b"List-Post", b"List-Owner", b"List-Archive", b"Feedback-ID", b"MIME-Version",
                b"Content-Type", b"Content-Transfer-Encoding")
#: Signed once more than they occur ("oversigned", RFC 6376 §5.4.2 and §8.15): a copy added
#: in transit (a second From, Subject or unsubscribe link shown instead of ours) breaks the signature.
OVERSIGNED = (b"From", b"Subject", b"List-Unsubscribe", b"List-Unsubscribe-Post")
_FIELD_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.MULTILINE)

Signer = Callable[[bytes], bytes]
_DNS_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})")


def dkim_signer(selector: str, domain: str, private_key: bytes) -> Signer:
    """A signer for :attr:`PreparedIssue.signer` using dkimpy (relaxed/relaxed, rsa-sha256).

    The key is tried once here, on a tiny message, so a bad key, selector or domain is a
    one-line error before any reader is claimed, never an exception in the middle of a send.
    """
    import dkim

    for what, value in (("NEWSLETTER_DKIM_SELECTOR", selector), ("NEWSLETTER_DKIM_DOMAIN", domain)):
        if not _DNS_NAME.fullmatch(value or ""):
            raise ConfigError(f"{what} is not a plain DNS name (letters, digits, dots, hyphens, underscores)")
    try:
        dkim.sign(b"From: a@example.org\r\nSubject: key check\r\n\r\nx\r\n", selector.encode(), domain.encode(),
                  private_key, include_headers=[b"From"])
    except (dkim.DKIMException, ValueError, TypeError, IndexError) as exc:
        raise ConfigError(f"NEWSLETTER_DKIM_KEY_FILE is not a usable RSA private key in PEM form "
                          f"({type(exc).__name__})") from None

    def sign(data: bytes) -> bytes:
        sig = dkim.sign(data, selector.encode(), domain.encode(), private_key,
                        include_headers=signed_fields(data), canonicalize=(b"relaxed", b"relaxed"))
        return sig.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + data

    return sign


def signed_fields(data: bytes) -> list[bytes]:
    """The ``h=`` list for one message: each field of :data:`DKIM_HEADERS` as often as it occurs,
    and each of :data:`OVERSIGNED` once more (so it is listed even when absent)."""
    head = data.split(b"\r\n\r\n", 1)[0]
    present: dict[bytes, int] = {}
    for name in _FIELD_NAME.findall(head):
        present[name.lower()] = present.get(name.lower(), 0) + 1
    fields: list[bytes] = []
    for name in DKIM_HEADERS:
        fields += [name] * (present.get(name.lower(), 0) + (name in OVERSIGNED))
    return fields


def signer_from_settings(settings: "Settings") -> Signer | None:
    """The signer NEWSLETTER_DKIM_KEY_FILE/_SELECTOR/_DOMAIN configure, or None when unset."""
    key_file = settings.get("NEWSLETTER_DKIM_KEY_FILE")
    if not key_file:
        return None
    selector = settings.require("NEWSLETTER_DKIM_SELECTOR", "to sign with DKIM")
    try:
        key = Path(key_file).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read DKIM key: {exc.strerror}", path=key_file) from None
    domain = settings.get("NEWSLETTER_DKIM_DOMAIN", settings.publication.sender_domain)
    return dkim_signer(selector, domain, key)
