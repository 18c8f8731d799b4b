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


#: Last labels that name no public domain: a machine's own or a home network's.
_PRIVATE_SUFFIXES = frozenset({"localhost", "localdomain", "local", "lan", "home", "internal", "intranet", "corp"})


def is_fully_qualified(name: str) -> bool:
    """Whether ``name`` can be an EHLO argument that receiving servers accept: an address literal
    (``[192.0.2.1]``) or a domain name with a public-looking last label. Postfix's
    ``reject_non_fqdn_helo_hostname`` refuses ``localhost`` or a bare ``vm`` with 504 5.5.2."""
    name = name.strip().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        return True
    labels = name.lower().split(".")
    return len(labels) >= 2 and all(labels) and labels[-1].isalpha() and labels[-1] not in _PRIVATE_SUFFIXES
