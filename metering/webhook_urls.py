"""Which webhook URLs the service may call: http(s) only, and never a link-local or cloud metadata
address, in any of its spellings.

A budget owner names a URL the service will POST to; aimed at a metadata service (169.254.169.254,
fd00:ec2::254, ...) it would let them make the service fetch cloud credentials. So the address is
refused when the budget is made (`check_webhook_url`) and again at every delivery, after the name is
resolved (`forbidden_address`, used by the sender), in every form that reaches the same IPv4 host:
legacy IPv4 spellings (decimal, hex, octal, short forms), and IPv6 addresses that embed an IPv4
address (IPv4-mapped and IPv4-compatible, NAT64 64:ff9b::/96 and 64:ff9b:1::/48, 6to4 2002::/16,
Teredo 2001::/32). Pure functions.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Any
from urllib.parse import urlsplit

from metering.errors import BadRequest

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_HOSTS = frozenset({"metadata", "metadata.google.internal", "metadata.goog", "instance-data",
                            "instance-data.ec2.internal"})
# Metadata services outside the link-local ranges.
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")})
NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
# RFC 6052: where the IPv4 address sits in an IPv6 address, per NAT64 prefix length (byte slices;
# byte 8, bits 64..71, is reserved and skipped).
_RFC6052 = {32: (slice(4, 8),), 40: (slice(5, 8), slice(9, 10)), 48: (slice(6, 8), slice(9, 11)),
            56: (slice(7, 8), slice(9, 12)), 64: (slice(9, 13),), 96: (slice(12, 16),)}
_LEGACY_IPV4 = re.compile(r"^[0-9a-fA-FxX.]+$")


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address an IPv6 address may stand for."""
    raw = address.packed
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if int(address) >> 32 == 0 and int(address) > 1:  # IPv4-compatible ::a.b.c.d (not :: or ::1)
        found.append(ipaddress.IPv4Address(raw[12:]))
    lengths = (96,) if address in NAT64_WELL_KNOWN else (48, 56, 64, 96) if address in NAT64_LOCAL else ()
    for length in lengths:
        found.append(ipaddress.IPv4Address(b"".join(raw[part] for part in _RFC6052[length])))
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    return found


def forbidden_address(address: Address) -> bool:
    """Link-local (169.254/16, fe80::/10: where cloud metadata services answer) or a known metadata
    address, itself or embedded in an IPv6 address."""
    candidates: list[Address] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        candidates += embedded_ipv4(address)
    return any(a.is_link_local or a in METADATA_ADDRESSES for a in candidates)


def literal_address(host: str) -> Address | None:
    """The address a URL host names literally, legacy IPv4 spellings included ("2852039166",
    "0xa9fea9fe", "0251.0376.0251.0376", "169.254.43518" all mean 169.254.169.254 to a resolver)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LEGACY_IPV4.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def check_webhook_url(url: Any, *, allow_link_local: bool = False) -> None:
    """An http(s) URL whose host is not a link-local or metadata address, unless the deployment
    allows them (METERING_WEBHOOK_ALLOW_LINK_LOCAL)."""
    if not isinstance(url, str) or len(url) > 2000:
        raise BadRequest("webhook_url: must be an http:// or https:// URL of at most 2000 characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError:
        raise BadRequest("webhook_url: not a valid URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise BadRequest("webhook_url: must be an http:// or https:// URL with a host")
    if allow_link_local:
        return
    host = host.rstrip(".").lower()
    address = literal_address(host)
    if host in METADATA_HOSTS or (address is not None and forbidden_address(address)):
        raise BadRequest(f"webhook_url: {host} is a link-local or metadata address; refused "
                         "(set METERING_WEBHOOK_ALLOW_LINK_LOCAL=1 to allow it)")
