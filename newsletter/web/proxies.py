"""The client's IP address, believing ``X-Forwarded-For`` only from trusted proxies.

``NEWSLETTER_TRUSTED_PROXIES`` is a count (that many proxies in front of us, each
appending the address it saw) or a list of proxy addresses/networks. By default it
is 0: the header is ignored and the peer address is the client, so nobody can
choose the IP that rate limits and consent records see.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Mapping


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def client_ip(environ: Mapping[str, Any], trusted: int | tuple[Any, ...]) -> str:
    """The address to record and rate-limit; always a valid IP string ("" only without a peer)."""
    peer = str(environ.get("REMOTE_ADDR") or "")
    hops = [h for h in str(environ.get("HTTP_X_FORWARDED_FOR") or "").split(",") if h.strip()][-64:]
    if isinstance(trusted, int):
        # The last ``trusted`` entries were written by our proxies; the one before them is the client.
        if trusted <= 0 or len(hops) < trusted:
            return peer
        found = _ip(hops[-trusted])
        return str(found) if found else peer
    # A list: walk back from the peer while each hop is one of our proxies.
    chain = [peer] + list(reversed(hops))
    for i, hop in enumerate(chain):
        addr = _ip(hop)
        if addr is None:
            return str(_ip(chain[i - 1]) or peer) if i else peer
        if not any(addr in net for net in trusted):
            return str(addr)
    return str(_ip(chain[-1]) or peer)
