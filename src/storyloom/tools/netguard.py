"""Which addresses a model-driven fetch may reach: public ones only, unless the operator says so.

`fetch_page` takes its URL from a model, and a model takes it from whatever text it read, so
the URL is untrusted input: without a guard a prompt injection can read the cloud's metadata
service (169.254.169.254), the Redis or Postgres next to the worker, or the API's own admin
routes on loopback. The check sits in two places because either alone has a hole:

- in the resolver (`GuardedResolver`), so the address checked is the address connected to: a
  name that resolves to a public address at check time and to 127.0.0.1 at connect time (DNS
  rebinding) cannot slip through, since aiohttp connects to what the resolver returned;
- on every URL before it is requested (`check_url`), because aiohttp does not ask the resolver
  about IP literals, and redirects are followed by hand so that each hop is checked.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import TypeAlias
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from storyloom.tools.base import ToolError

__all__ = ["AddressRule", "GuardedResolver", "check_url", "public_only"]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressRule = Callable[[IPAddress], "str | None"]
"""Why an address is refused (a few words), or None when it may be reached."""


def public_only(ip: IPAddress) -> str | None:
    """Refuse everything that is not globally routable: loopback, private, link-local (cloud
    metadata), carrier-grade NAT, multicast, reserved and unspecified addresses."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return public_only(ip.ipv4_mapped)
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "not a public address"
    return None


def _refusal(host: str, ip: IPAddress, why: str) -> ToolError:
    shown = host if host == str(ip) else f"{host} ({ip})"
    return ToolError(
        f"fetch_page refuses to fetch {shown}: {why} (set STORYLOOM_FETCH_ALLOW_PRIVATE=1 to allow it)",
        transient=False,
    )


def check_url(url: str, rule: AddressRule) -> None:
    """Refuse a URL that is not http(s), or whose host is an IP literal the rule refuses. Names
    are left to the resolver, which checks what they resolve to when the connection is made."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        scheme = parts.scheme or "no scheme"
        raise ToolError(f"fetch_page fetches http(s) URLs only, not {scheme}: {url}", transient=False)
    host = (parts.hostname or "").strip("[]")
    if not host:
        raise ToolError(f"fetch_page needs a host in the URL: {url}", transient=False)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return
    why = rule(ip)
    if why is not None:
        raise _refusal(host, ip, why)


class GuardedResolver(AbstractResolver):
    """The default resolver with every refused address dropped; a name left with no address is
    refused with the reason of its first one."""

    def __init__(self, rule: AddressRule = public_only) -> None:
        self._rule = rule
        self._inner = aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        kept: list[ResolveResult] = []
        first: tuple[IPAddress, str] | None = None
        for entry in found:
            ip = ipaddress.ip_address(entry["host"].split("%")[0])
            why = self._rule(ip)
            if why is None:
                kept.append(entry)
            elif first is None:
                first = (ip, why)
        if not kept and first is not None:
            raise _refusal(host, *first)
        return kept

    async def close(self) -> None:
        await self._inner.close()
