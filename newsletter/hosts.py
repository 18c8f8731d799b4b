"""Which hosts are this machine: the one place a password may travel unencrypted by default."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine by a loopback address (127.0.0.0/8, ::1) or ``localhost``:
    the only hosts a password may be sent to in clear without the editor's explicit say-so. Only the
    plain spellings count: ``localhost.`` is a DNS question (not /etc/hosts), and ``127.1``,
    ``0177.0.0.1``, ``::ffff:127.0.0.1``, ``[::1]`` or a stray space are refused, not guessed at."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    # Python 3.13 calls ::ffff:127.0.0.1 loopback, 3.11 does not: the same answer on both.
    return address.is_loopback and getattr(address, "ipv4_mapped", None) is None
