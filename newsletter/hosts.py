"""Which hosts are this machine: the one place a password may travel unencrypted by default."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine by a loopback address (127.0.0.0/8, ::1) or ``localhost``:
    the only hosts a password may be sent to in clear without the editor's explicit say-so. Only the
    plain spellings count (``localhost.`` and ``::ffff:127.0.0.1`` too); ``127.1``, ``0177.0.0.1``,
    ``[::1]`` or a stray space are refused rather than guessed at."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:a.b.c.d is IPv4 a.b.c.d
    return address.is_loopback or (mapped is not None and mapped.is_loopback)
