"""Wake-ups: a worker that committed events tells the API's event hubs at once, by UDP datagram.

Without them a hub finds new events by polling (every 30 ms while anyone listens), which adds
15 ms on average and 30 ms at worst to every event's way to its client, and costs a query per poll
whether or not anything changed. A datagram is one syscall for the worker, needs no connection
and no acknowledgement, and losing one costs nothing but that wait: polling stays as the safety
net. `storyloom serve` binds the hub's port on loopback and hands its URL to the workers it starts
as `STORYLOOM_EVENT_WAKE_URL` (several API processes: several URLs, comma-separated).
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from storyloom.errors import ConfigError

if TYPE_CHECKING:
    from storyloom.jobs.events import EventHub

__all__ = ["WakeSender", "listen_for_wakes", "parse_wake_urls", "wake_socket", "wake_url"]

_PAYLOAD = b"w"


def parse_wake_urls(text: str) -> list[tuple[str, int]]:
    """`udp://127.0.0.1:7001[,udp://…]` into addresses; a ConfigError names a malformed one."""
    out: list[tuple[str, int]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        parsed = urlsplit(part)
        try:
            port = parsed.port
        except ValueError:
            port = None
        if parsed.scheme != "udp" or not parsed.hostname or port is None:
            raise ConfigError(f"an event wake URL must look like udp://127.0.0.1:7001, not {part!r}.")
        out.append((parsed.hostname, port))
    return out


class WakeSender:
    """A callable for `Database.add_commit_listener`: one datagram to each hub, never blocking."""

    def __init__(self, addresses: list[tuple[str, int]]) -> None:
        self.addresses = addresses
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self.sent = 0

    def __call__(self) -> None:
        for address in self.addresses:
            self.sent += 1  # counted first: the hub it wakes may look before this thread runs on
            try:
                self._sock.sendto(_PAYLOAD, address)
            except OSError:  # nobody listening, buffer full: the poll covers it
                self.sent -= 1

    def close(self) -> None:
        self._sock.close()


class _WakeProtocol(asyncio.DatagramProtocol):
    def __init__(self, hub: EventHub) -> None:
        self.hub = hub

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.hub.wake()


async def listen_for_wakes(
    hub: EventHub, host: str = "127.0.0.1", port: int = 0, *, sock: socket.socket | None = None
) -> asyncio.DatagramTransport:
    """Bind a UDP port whose datagrams wake `hub`; the port is `transport.get_extra_info("sockname")`.

    `sock`: an already bound socket instead (an API process of `serve` inherits its parent's, so a
    restarted process keeps the port the workers were told about).
    """
    loop = asyncio.get_running_loop()
    if sock is not None:
        transport, _ = await loop.create_datagram_endpoint(lambda: _WakeProtocol(hub), sock=sock)
    else:
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _WakeProtocol(hub), local_addr=(host, port)
        )
    return transport


def wake_socket(host: str = "127.0.0.1") -> socket.socket:
    """A bound, inheritable UDP socket for a child API process's wake-ups; its URL is `wake_url`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.set_inheritable(True)
    return sock


def wake_url(address: tuple[str | int, ...]) -> str:
    return "udp://{}:{}".format(*address[:2])
