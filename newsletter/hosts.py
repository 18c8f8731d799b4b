"""Which hosts are this machine: the one place a password may travel unencrypted by default."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine by a loopback address (127.0.0.0/8, ::1) or ``localhost``:
    the only hosts a password may be sent to in clear without the editor's explicit say-so."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
