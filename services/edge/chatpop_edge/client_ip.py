"""Who is calling: the client IP (X-Forwarded-For only from trusted proxies) and its keyed hash.

Raw client IPs never leave the edge; services receive HMAC-SHA256(IP_HASH_KEY, ip) for limits and bans.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_ip(text: str) -> IPAddress | None:
    """An address from a header or socket value; tolerates `1.2.3.4:port` and `[v6]:port`."""
    value = text.strip().strip('"')
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ClientAddressResolver:
    """Finds the client address behind a chain of trusted proxies."""

    def __init__(self, trusted: Sequence[IPNetwork]) -> None:
        self._trusted = tuple(trusted)

    def is_trusted(self, address: IPAddress | None) -> bool:
        return address is not None and any(address in network for network in self._trusted)

    def client_ip(self, peer: str | None, forwarded_for: Iterable[str] = ()) -> str:
        """The socket peer, unless it is a trusted proxy: then the nearest untrusted X-Forwarded-For hop.

        Hops are read right to left, since each proxy appends the address it saw; anything left of
        the first untrusted hop could have been written by the client and is ignored.
        """
        current = parse_ip(peer or "")
        if current is None:
            return peer or ""
        if not self.is_trusted(current):
            return str(current)
        hops = [hop for header in forwarded_for for hop in header.split(",") if hop.strip()]
        for hop in reversed(hops):
            address = parse_ip(hop)
            if address is None:
                # A trusted proxy passed on something unreadable: stop at the last hop we could read.
                break
            current = address
            if not self.is_trusted(address):
                break
        return str(current)

    def forwarded_https(self, peer: str | None, forwarded_proto: str | None) -> bool:
        """True when a trusted proxy says the client spoke TLS to it."""
        if not forwarded_proto or not self.is_trusted(parse_ip(peer or "")):
            return False
        return forwarded_proto.split(",")[0].strip().lower() == "https"


def hash_ip(key: bytes, ip: str) -> str:
    """HMAC-SHA256 of the client IP as hex; empty when the IP is unknown."""
    if not ip:
        return ""
    return hmac.new(key, ip.encode(), hashlib.sha256).hexdigest()
