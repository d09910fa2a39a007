"""A lean HTTP/1.1 connection for streamed chat answers: httptools parses, the caller reads blocks.

Why not aiohttp here (it stays for everything else): profiled at 200 concurrent chapter jobs, a
worker spent ~20% of its CPU inside aiohttp's body path for provider streams. Each HTTP chunk (a
provider sends one per SSE event, ~120 per answer) went through three Python callbacks into a
StreamReader (chunk splits, water marks, a resume check per chunk), and each read through
`iter_any` → `readany` → `_wait` → a future. Here the body's decoded pieces are appended to a list
by httptools' one `on_body` callback, and a read takes all of them at once with at most one future.
The request side is one write of a pre-built head. What this does not do, because a chat
completion call does not need it: redirects, proxies, cookies, request streaming, HTTP/2.

Semantics kept from the aiohttp path: the body is delivered decoded (chunked, gzip, deflate), a
connection lost before the end raises ConnectionResetError at the read that meets it (the caller
turns it into a cut stream), a keep-alive connection goes back to its pool only after a complete
message, and a reused connection the server had already closed is retried once on a fresh one
(nothing of the request can have been processed: not one byte came back).
"""

from __future__ import annotations

import asyncio
import ssl
import time
import urllib.parse
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import cast

import httptools

__all__ = ["ConnectTimeout", "LeanConnection", "LeanPool", "Origin", "request_head"]

#: Pause the socket when this much body is waiting to be read (a caller that stopped reading).
_HIGH_WATER = 4 * 2**20
_MAX_IDLE = 1024  # as aiohttp's connector limit on the other path


@dataclass(frozen=True, slots=True)
class Origin:
    """Where the requests go: scheme, host, port, and the base path requests are under."""

    scheme: str
    host: str
    port: int
    base_path: str

    @classmethod
    def parse(cls, base_url: str) -> Origin | None:
        """None for a URL this client does not speak (not http/https, or with credentials)."""
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
            return None
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return None
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


class ConnectTimeout(TimeoutError):
    """No connection within the connect timeout (not the answer's own deadlines)."""


_SSL: ssl.SSLContext | None = None


def _ssl_context() -> ssl.SSLContext:
    global _SSL
    if _SSL is None:
        _SSL = ssl.create_default_context()
    return _SSL


class LeanConnection(asyncio.Protocol):
    """One HTTP/1.1 connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.status = 0
        self.headers: dict[str, str] = {}
        self.complete = False  # the response's last byte is in
        self.lost = False
        self.received = 0  # bytes of this response so far (0: nothing came back)
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._pieces: list[bytes] = []
        self._buffered = 0
        self._flow_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._head = False
        self._error: BaseException | None = None
        self._decoder: zlib._Decompress | None = None
        self._keep_alive = False

    # ---- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports (the service's loops) are not asyncio.Transport subclasses, but they
        # have the same methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, zlib.error) as exc:
            self._error = ConnectionResetError(f"malformed HTTP response: {exc}")
            self.close()
        if self._buffered > _HIGH_WATER and self.transport is not None and not self._flow_paused:
            self._flow_paused = True
            self.transport.pause_reading()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._head and not self.complete and self._close_delimited():
            self.on_message_complete()  # a body without length or chunks ends with its connection
        if self._error is None and not self.complete:
            self._error = ConnectionResetError(f"connection lost{f': {exc}' if exc else ''}")
        self._wake()

    def eof_received(self) -> bool | None:
        return None  # close the transport: a half-closed HTTP/1.1 connection is of no use

    def _close_delimited(self) -> bool:
        chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        return not chunked and "content-length" not in self.headers and self._error is None

    # ---- httptools callbacks -------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self._head = True
        encoding = self.headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj()
        elif encoding not in ("identity", ""):
            raise zlib.error(f"unsupported content-encoding {encoding!r}")

    def on_body(self, body: bytes) -> None:
        if self._decoder is not None:
            body = self._decoder.decompress(body)
            if not body:
                return
        self._pieces.append(body)
        self._buffered += len(body)

    def on_message_complete(self) -> None:
        # Asked here: once the parser has moved past the message, llhttp no longer knows.
        self._keep_alive = self._parser.should_keep_alive()
        if self._decoder is not None:
            rest = self._decoder.flush()
            if rest:
                self._pieces.append(rest)
        self.complete = True

    # ---- the caller's side ---------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.status, self.headers, self.complete, self.received = 0, {}, False, 0
        self._keep_alive = False
        self._pieces, self._buffered = [], 0  # what the last answer left unread (after its [DONE])
        self._head, self._decoder = False, None
        self.transport.write(data)

    async def head(self) -> None:
        """Wait for the status line and headers."""
        while not self._head:
            if self._error is not None:
                raise self._error
            await self._wait()

    async def read(self) -> bytes:
        """The body decoded so far and not yet read, waiting for some; b"" once it is complete."""
        while not self._pieces:
            if self.complete:
                return b""
            if self._error is not None:
                raise self._error
            await self._wait()
        pieces, self._pieces, self._buffered = self._pieces, [], 0
        if self._flow_paused and self.transport is not None and not self.transport.is_closing():
            self._flow_paused = False
            self.transport.resume_reading()
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def read_all(self, limit: int) -> bytes:
        """The whole body (at most `limit` bytes kept; the rest is read and dropped)."""
        parts: list[bytes] = []
        kept = 0
        while block := await self.read():
            if kept < limit:
                parts.append(block[: limit - kept])
                kept += len(parts[-1])
        return b"".join(parts)

    @property
    def reusable(self) -> bool:
        return self.complete and not self.lost and self._error is None and self._keep_alive

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


@dataclass(slots=True)
class LeanPool:
    """Idle keep-alive connections to one origin, on one event loop."""

    origin: Origin
    keepalive_s: float = 30.0
    connects: int = 0  # connections opened (against requests sent: how well keep-alive holds)
    requests: int = 0
    _idle: list[LeanConnection] = field(default_factory=list)

    async def request(self, head: bytes, body: bytes, connect_timeout_s: float) -> LeanConnection:
        """Send one request and return its connection once the response's head is in."""
        self.requests += 1
        conn = self._take_idle()
        if conn is not None:
            conn.send(head + body)
            try:
                await conn.head()
                return conn
            except ConnectionError:
                conn.close()
                if conn.received:  # the server answered something, then failed: not a stale socket
                    raise
            except BaseException:  # cancelled (a deadline): the answer would arrive for nobody
                conn.close()
                raise
        conn = await self._connect(connect_timeout_s)
        conn.send(head + body)
        try:
            await conn.head()
        except BaseException:
            conn.close()
            raise
        return conn

    def release(self, conn: LeanConnection) -> None:
        """Back to the idle list after a complete response, else closed."""
        if conn.reusable and len(self._idle) < _MAX_IDLE:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _take_idle(self) -> LeanConnection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.reusable and now - conn.idle_since < self.keepalive_s:
                return conn
            conn.close()
        return None

    async def _connect(self, timeout_s: float) -> LeanConnection:
        self.connects += 1
        loop = asyncio.get_running_loop()
        origin = self.origin
        tls = _ssl_context() if origin.scheme == "https" else None
        try:
            async with asyncio.timeout(timeout_s):
                host = origin.host if tls else None
                _, conn = await loop.create_connection(
                    LeanConnection, origin.host, origin.port, ssl=tls, server_hostname=host
                )
        except TimeoutError as exc:  # ours: an outer deadline arrives here as a cancellation
            where = f"{origin.host}:{origin.port}"
            raise ConnectTimeout(f"no connection to {where} within {timeout_s:.1f} s") from exc
        return conn


def request_head(origin: Origin, path: str, headers: Mapping[str, str], body_length: int) -> bytes:
    """A POST's request line and headers, ready to write; a value with a line break (a key pasted
    with its newline) is refused rather than sent as a second header."""
    if any("\r" in value or "\n" in value for value in headers.values()):
        raise ValueError("a request header value contains a line break (check the deployment's key)")
    lines = [f"POST {origin.base_path}{path} HTTP/1.1", f"host: {origin.host_header()}"]
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    lines.append("accept-encoding: gzip, deflate")
    lines.append(f"content-length: {body_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
