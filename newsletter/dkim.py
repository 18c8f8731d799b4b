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

#: Signed headers: the ones a forwarder or list manager must not change unnoticed.
DKIM_HEADERS = (b"From", b"Subject", b"Date", b"Message-ID", b"To", b"List-Unsubscribe", b"List-Unsubscribe-Post")

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
                        include_headers=list(DKIM_HEADERS), canonicalize=(b"relaxed", b"relaxed"))
        return sig.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + data

    return sign


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
