"""SSRF guard for webhook URLs: checked when an endpoint is saved and again before every attempt.

A URL must be https (http only under the development setting `webhooks_allow_http`), carry no
credentials, and every address its host resolves to must be public. The delivery connects to the
very address that was vetted (the original name still goes in Host and TLS SNI), so a DNS answer
that changes between the check and the connection (rebinding) cannot redirect the request.
Redirects are never followed. `webhooks_allow_private` (development, tests) admits loopback and
private ranges but never the cloud metadata addresses.

A refused name gets one message whether it does not resolve or resolves to an address that is not
allowed, and never the address: the answer must not let a customer map the internal network's
names (which exist, and where they point). A literal address is refused with its reason.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import NamedTuple
from urllib.parse import SplitResult, urlsplit

from core.settings import Settings

__all__ = ["Target", "UnsafeUrl", "check_url", "resolve", "vet_address"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"),
            ipaddress.ip_address("100.100.100.200")}
# Ranges `is_global` does not catch or that embed an IPv4 address a router may translate.
_EXTRA_BLOCKED = [ipaddress.ip_network(n) for n in (
    "100.64.0.0/10",      # CGNAT (shared address space)
    "::ffff:0:0/96",      # IPv4-mapped
    "::/96",              # IPv4-compatible (deprecated)
    "64:ff9b::/96", "64:ff9b:1::/48",  # NAT64
    "2002::/16",          # 6to4
    "2001::/32",          # Teredo
)]
MAX_URL = 2048


class UnsafeUrl(ValueError):
    """The URL or an address it resolves to is not allowed; the message says why."""


class Target(NamedTuple):
    scheme: str
    host: str
    port: int
    path: str
    """Path plus query, as sent."""


def check_url(url: str, settings: Settings) -> Target:
    """Syntax and scheme checks (no DNS)."""
    if len(url) > MAX_URL:
        raise UnsafeUrl(f"url must be at most {MAX_URL} characters")
    try:
        parts: SplitResult = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"url is not a valid URL: {exc}") from None
    allowed = ("https", "http") if settings.webhooks_allow_http else ("https",)
    if parts.scheme not in allowed:
        raise UnsafeUrl("url must use https")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("url must not contain credentials")
    if not parts.hostname:
        raise UnsafeUrl("url must name a host")
    if parts.fragment:
        raise UnsafeUrl("url must not contain a fragment")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    default = 443 if parts.scheme == "https" else 80
    return Target(parts.scheme, parts.hostname.lower(), port or default, path)


def vet_address(ip: IPAddress, allow_private: bool) -> str | None:
    """Why `ip` may not be contacted, or None if it may."""
    if ip in METADATA:
        return "a cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return "an IPv4-mapped IPv6 address"
    if allow_private:
        return None
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        return "a reserved address"
    if any(ip in net for net in _EXTRA_BLOCKED if net.version == ip.version):
        return "a translated or shared address"
    if ip.is_private or not ip.is_global:
        return "a private address"
    return None


async def resolve(target: Target, allow_private: bool) -> list[IPAddress]:
    """Every address of the host, all vetted; raise UnsafeUrl if any one is refused."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(target.host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        reason = vet_address(literal, allow_private)
        if reason is not None:
            raise UnsafeUrl(f"url host {target.host!r} is {reason}")
        return [literal]
    refused = UnsafeUrl(f"url host {target.host!r} must resolve, and only to public addresses")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise refused from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))
    # One bad answer refuses the host: a round-robin record could hand it out at send time.
    if not addresses or any(vet_address(ip, allow_private) is not None for ip in addresses):
        raise refused
    return addresses
