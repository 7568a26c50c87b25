"""Posting a webhook only to a public address: no loopback, private, link-local or metadata address.

A webhook URL comes from a config file, and on a team server from a run's project file: without this
check it would let whoever writes one make the server (or the agent) send requests to the machine
itself, its network, or the cloud's metadata service at 169.254.169.254. The name is resolved once,
every address it resolves to is checked, and the request goes to that checked address (with the
name in the Host header and TLS SNI, and the certificate checked against the name), so a DNS answer
that changes between the check and the connection (DNS rebinding) cannot slip an internal address
in. Redirects are never followed. ``[notify] allow_private = true`` in the home's config.toml lifts
the check (a webhook on the local network, a test server on loopback).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from typing import Any

#: Seconds for the whole request (connect, send, answer).
TIMEOUT = 10.0
HINT = "set allow_private = true in the [notify] table of the home's config.toml if this is intended"


class AddressRefused(OSError):
    """The webhook's address is not a public one: refused, and retrying cannot change that."""


def refusal(address: str) -> str | None:
    """Why ``address`` (an IP) may not be sent to, e.g. "loopback"; None if it is a public address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # a scope ("fe80::1%eth0") changes nothing
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address inside an IPv6 one reaches that IPv4 address: judge that one.
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            return refusal(str(embedded))
    for kind, test in (("unspecified", ip.is_unspecified), ("loopback", ip.is_loopback),
                       ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
                       ("private", ip.is_private), ("reserved", ip.is_reserved)):
        if test:
            return kind
    if not ip.is_global:  # 100.64.0.0/10 (carrier-grade NAT) and other special-purpose ranges
        return "non-public"
    return None


def checked_addresses(host: str, port: int, allow_private: bool = False) -> list[str]:
    """The addresses to connect to for ``host``, in the resolver's order: resolved once, every answer checked.

    Raises ``AddressRefused`` if any address the name resolves to is not public (one internal answer
    among public ones is how a rebinding name would try its luck), ``OSError`` if it does not resolve.
    """
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except socket.gaierror as e:
        raise OSError(f"the webhook's host {host} does not resolve: {e.strerror}") from None
    addresses = list(dict.fromkeys(str(answer[4][0]) for answer in answers))
    if not addresses:
        raise OSError(f"the webhook's host {host} does not resolve")
    if not allow_private:
        for address in addresses:
            why = refusal(address)
            if why is not None:
                shown = host if host == address else f"{host} ({address})"
                raise AddressRefused(f"refused to send the webhook to {shown}: a {why} address; {HINT}")
    return addresses


def post_json(url: str, body: Mapping[str, Any], allow_private: bool = False) -> int:
    """POST ``body`` as JSON to ``url``, connecting only to a checked address; returns the status."""
    import httpx

    try:
        target = httpx.URL(url)
    except httpx.InvalidURL as e:
        raise AddressRefused(f"refused to send the webhook to {url!r}: not a URL ({e})") from None
    if target.scheme not in ("http", "https") or not target.host:
        raise AddressRefused(f"refused to send the webhook to {url!r}: the URL must start with https:// or http://")
    port = target.port or (443 if target.scheme == "https" else 80)
    addresses = checked_addresses(target.host, port, allow_private)
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    # trust_env=False: a proxy from the environment would do its own resolving, past the check.
    with httpx.Client(timeout=TIMEOUT, follow_redirects=False, trust_env=False) as client:

        def send(address: str) -> int:
            response = client.post(target.copy_with(host=address), json=dict(body),
                                   headers={"host": target.netloc.decode("ascii")}, extensions=extensions)
            return response.status_code

        # Each checked address in turn, as a connection by name would (localhost: ::1, then 127.0.0.1).
        for address in addresses[:-1]:
            try:
                return send(address)
            except httpx.ConnectError:
                continue
        return send(addresses[-1])
