"""IP addresses and ranges in one canonical form, so an allow-list entry and a client address that
name the same IPv4 host compare equal: an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) is that IPv4
address, and a range inside `::ffff:0:0/96` is the IPv4 range it maps (`::ffff:10.0.0.0/104` is
`10.0.0.0/8`). Client addresses arrive mapped when a dual-stack listener accepts IPv4."""

from __future__ import annotations

import ipaddress

__all__ = ["Address", "Network", "canonical_address", "canonical_network"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def canonical_address(text: str) -> Address:
    """Raises ValueError for anything that is not an IP address."""
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def canonical_network(text: str) -> Network:
    """A CIDR range (host bits allowed and cleared); raises ValueError for anything else."""
    network = ipaddress.ip_network(text, strict=False)
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96 \
            and network.network_address in _MAPPED:
        return ipaddress.IPv4Network((int(network.network_address) & 0xFFFFFFFF, network.prefixlen - 96))
    return network
