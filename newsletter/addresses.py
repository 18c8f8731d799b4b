"""Address and header-value checks: the gate every outside string passes before it
becomes part of a header or a subscriber row.

Light on purpose (email-validator is imported on first use): the subscriber store
and CSV import use it without loading the renderer or the message builder.
"""

from __future__ import annotations

from newsletter.errors import HeaderInjectionError, InputError
from newsletter.patterns import TEXT_CONTROL_CHARS, compiled

# An RFC 2047 encoded-word. Mail clients decode one found in a Subject or display name, so text
# typed as "=?utf-8?q?Hi=0D=0ABcc:…?=" would show (or act) as CR/LF once decoded.
ENCODED_WORD = r"=\?[^?\s]*\?[bBqQ]\?[^?\s]*\?="


def check_header(name: str, value: str) -> str:
    """Refuse header injection: any CR, LF or control character in a header value."""
    if "\n" in value or compiled(TEXT_CONTROL_CHARS).search(value):  # TAB is white space in a header
        raise HeaderInjectionError(f"{name} contains a line break or control character: {value[:60]!r}")
    return value


#: RFC 5321 section 4.5.3.1.1: a local part is at most 64 octets (email-validator 2 lets more through).
MAX_LOCAL_OCTETS = 64
# A plain dot-atom address on LDH labels with an alphabetic TLD, far from every length limit: its
# normalised form is itself with the domain lower-cased, so it needs no email-validator (40 ms to
# import: a third of `newsletter status`, and the live preview's every rebuild).
_PLAIN_ADDRESS = (
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,60}(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,60})*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,63}\Z")
# email-validator's special-use domains (RFC 6761 and friends): left to it to refuse.
_SPECIAL_USE = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})


def validate_address(address: str, what: str = "address") -> str:
    """Syntax-check an address offline; returns it normalised as it is sent.

    The one address policy: settings, front matter, subscribers and test sends all pass here.
    The domain comes back lower-cased and in its ASCII (IDNA, ``xn--``) form, so an
    internationalised domain is stored exactly as the SMTP envelope and the ``To``
    header carry it. A non-ASCII local part cannot be sent without SMTPUTF8, which
    we do not use, so it is refused here, at the door, rather than at send time.
    """
    check_header(what, address)
    local, _, domain = address.rpartition("@")
    if len(local.encode("utf-8", "surrogatepass")) > MAX_LOCAL_OCTETS:
        raise InputError(f"invalid {what} {address[:80]!r}: the part before the @-sign is longer than "
                         f"{MAX_LOCAL_OCTETS} characters (RFC 5321)")
    if (len(address) <= 200 and compiled(_PLAIN_ADDRESS).match(address) and "xn--" not in domain.lower()
            and domain.rpartition(".")[2].lower() not in _SPECIAL_USE):
        return f"{local}@{domain.lower()}"
    from email_validator import EmailNotValidError, validate_email

    try:
        info = validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise InputError(f"invalid {what} {address[:80]!r}: {exc}") from None
    return info.ascii_email or info.normalized


def clean_text(value: str | None, what: str) -> str:
    """A free-text field (name, source, consent): stripped, no line breaks or control characters.

    The name ends up in the ``To`` header, so this is header-injection defence, not cosmetics.
    """
    value = (value or "").strip()
    check_header(what, value)
    return value


def normalise_email(email: str) -> str:
    """Validate and normalise an address (raises :class:`InputError`, incl. header injection)."""
    if email is None or not str(email).strip():
        raise InputError("empty email address")
    return validate_address(str(email).strip(), "email")


def mask_email(email: str) -> str:
    """``sam@tsinghua.edu.cn`` → ``s***@tsinghua.edu.cn``: enough for the reader to recognise."""
    local, _, domain = email.rpartition("@")
    if not local:
        return "***"
    return f"{local[0]}***@{domain}"
