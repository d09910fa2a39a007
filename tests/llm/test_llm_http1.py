"""The lean HTTP/1.1 path for streamed answers (llm/http1.py), against a raw loopback server that
writes exact bytes: keep-alive reuse, a stale kept connection, gzip, close-delimited bodies, a cut
body, a malformed response, errors with Retry-After, and the service's uvloop."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop

from storyloom.errors import ProviderConnectionError, ProviderTimeout, RateLimitError, StreamCutError
from storyloom.llm import http1
from storyloom.llm.client import HttpModelClient
from storyloom.llm.http1 import Origin
from storyloom.llm.types import ChatRequest

# request number on its connection -> the response's bytes (None: close without a word; b"": no
# answer at all until the client goes)
Respond = Callable[[int], bytes | None]


def _events(*texts: str, finish: bool = True) -> bytes:
    out = b""
    for text in texts:
        doc = {"model": "fake", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
        out += b"data: " + json.dumps(doc).encode() + b"\n\n"
    if finish:
        doc = {"model": "fake", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        out += b"data: " + json.dumps(doc).encode() + b"\n\ndata: [DONE]\n\n"
    return out


def _chunked(body: bytes, pieces: int = 3) -> bytes:
    size = max(1, len(body) // pieces)
    out = b""
    for i in range(0, len(body), size):
        part = body[i : i + size]
        out += b"%x\r\n" % len(part) + part + b"\r\n"
    return out + b"0\r\n\r\n"


def _sse_head(extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n{extra}".encode()


class _Server:
    """Reads whole requests (head + content-length body) and answers each with `respond(n)`."""

    def __init__(self, respond: Respond, *, close_after: int | None = None) -> None:
        self.respond = respond
        self.close_after = close_after  # close each connection after this many responses
        self.connections = 0
        self.requests = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.hung_up = asyncio.Event()  # a client closed a connection it had given up on

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        n = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                self.requests += 1
                answer = self.respond(n)
                if answer is None:
                    break
                if not answer:
                    await reader.read()
                    self.hung_up.set()
                    break
                writer.write(answer)
                await writer.drain()
                n += 1
                if self.close_after is not None and n >= self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def _serve(server: _Server, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    srv = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=tls)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"https://localhost:{port}/v1" if tls else f"http://127.0.0.1:{port}/v1"
    finally:
        srv.close()
        for writer in server.writers:  # kept connections: their handlers end on the close
            writer.close()
        await asyncio.sleep(0.01)


def _request() -> ChatRequest:
    return ChatRequest(model="fake", messages=[{"role": "user", "content": "hi"}])


async def _chat(url: str, **kw: Any) -> tuple[str, list[str]]:
    deltas: list[str] = []
    client = HttpModelClient(url, "k", connect_timeout_s=2, ttft_timeout_s=5, total_timeout_s=10, **kw)
    try:
        result = await client.chat(_request(), deltas.append)
        return result.text, deltas
    finally:
        await client.aclose()


def test_origins_the_lean_path_speaks() -> None:
    assert Origin.parse("https://api.deepseek.com/v1") == Origin("https", "api.deepseek.com", 443, "/v1")
    assert Origin.parse("http://[::1]:8000/v1/").host_header() == "[::1]:8000"  # type: ignore[union-attr]
    assert Origin.parse("http://user:pw@host/v1") is None  # credentials in the URL: aiohttp's job
    assert Origin.parse("unix:///tmp/sock") is None


async def test_a_kept_connection_serves_the_next_call() -> None:
    body = _events("Hello", " world")
    server = _Server(lambda n: _sse_head("transfer-encoding: chunked\r\n\r\n") + _chunked(body))
    async with _serve(server) as url:
        client = HttpModelClient(url, "k")
        try:
            for _ in range(3):
                assert (await client.chat(_request())).text == "Hello world"
        finally:
            await client.aclose()
    assert (server.connections, server.requests) == (1, 3)


@pytest.mark.parametrize("how", ["closed while idle", "closed on the next request"])
async def test_a_kept_connection_the_server_closed_is_replaced_without_an_error(how: str) -> None:
    """Idle: the close arrives before the next call. On the request: the server's keep-alive ran
    out just as the request went (the race every HTTP/1.1 client meets): retried once, fresh."""
    ok = _sse_head("transfer-encoding: chunked\r\n\r\n") + _chunked(_events("again"))
    if how == "closed while idle":
        server = _Server(lambda n: ok, close_after=1)
    else:
        server = _Server(lambda n: ok if n == 0 else None)
    async with _serve(server) as url:
        client = HttpModelClient(url, "k")
        try:
            assert (await client.chat(_request())).text == "again"
            if how == "closed while idle":
                await asyncio.sleep(0.05)
            assert (await client.chat(_request())).text == "again"
        finally:
            await client.aclose()
    assert server.connections == 2


async def test_gzip_and_close_delimited_bodies_are_read_whole() -> None:
    zipped = gzip.compress(_events("zip", "ped"))
    head = _sse_head(f"content-encoding: gzip\r\ncontent-length: {len(zipped)}\r\n\r\n")
    server = _Server(lambda n: head + zipped)
    async with _serve(server) as url:
        text, deltas = await _chat(url)
    assert text == "zipped" and "".join(deltas) == "zipped"

    unframed = _sse_head("connection: close\r\n\r\n") + _events("until ", "EOF")
    closed = _Server(lambda n: unframed, close_after=1)
    async with _serve(closed) as url:
        assert (await _chat(url))[0] == "until EOF"


async def test_a_body_cut_mid_stream_keeps_the_text_already_streamed() -> None:
    body = _events("kept ", "part", finish=False)
    cut_bytes = _sse_head("transfer-encoding: chunked\r\n\r\n") + _chunked(body)[:-5]
    cut = _Server(lambda n: cut_bytes, close_after=1)
    async with _serve(cut) as url:
        with pytest.raises(StreamCutError) as info:
            await _chat(url)
    assert info.value.partial_text == "kept part"


async def test_a_malformed_response_is_a_connection_error() -> None:
    bad = _Server(lambda n: b"HTTP/1.1 abc nonsense\r\n\r\n", close_after=1)
    async with _serve(bad) as url:
        with pytest.raises(ProviderConnectionError):
            await _chat(url)


async def test_a_429_keeps_its_retry_after_and_the_connection() -> None:
    err = b'{"error": {"message": "slow down"}}'
    ok = _events("fine")
    server = _Server(
        lambda n: (
            b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 7\r\n"
            + f"content-length: {len(err)}\r\n\r\n".encode()
            + err
            if n == 0
            else _sse_head(f"content-length: {len(ok)}\r\n\r\n") + ok
        )
    )
    async with _serve(server) as url:
        client = HttpModelClient(url, "k")
        try:
            with pytest.raises(RateLimitError) as info:
                await client.chat(_request())
            assert info.value.retry_after_s == 7.0 and "slow down" in str(info.value)
            assert (await client.chat(_request())).text == "fine"
        finally:
            await client.aclose()
    assert server.connections == 1


def test_streams_on_uvloop_as_the_service_runs_them() -> None:
    body = _events("on ", "uvloop")

    async def main() -> tuple[str, list[str]]:
        server = _Server(lambda n: _sse_head("transfer-encoding: chunked\r\n\r\n") + _chunked(body, 5))
        async with _serve(server) as url:
            return await _chat(url)

    text, deltas = uvloop.run(main())
    assert text == "on uvloop" and "".join(deltas) == "on uvloop"


async def test_the_aiohttp_path_answers_the_same() -> None:
    body = _events("same ", "answer")
    server = _Server(lambda n: _sse_head("transfer-encoding: chunked\r\n\r\n") + _chunked(body))
    async with _serve(server) as url:
        assert await _chat(url, lean_streams=False) == await _chat(url)


async def test_a_call_timed_out_on_a_kept_connection_does_not_leave_it_in_the_pool() -> None:
    """The answer to a call given up on would arrive later for nobody: the connection is closed,
    and the next call gets a fresh one."""
    ok = _sse_head("transfer-encoding: chunked\r\n\r\n") + _chunked(_events("fresh"))
    server = _Server(lambda n: ok if n == 0 else b"")
    async with _serve(server) as url:
        client = HttpModelClient(url, "k", ttft_timeout_s=0.3)
        try:
            assert (await client.chat(_request())).text == "fresh"
            with pytest.raises(ProviderTimeout):
                await client.chat(_request())  # the kept connection: the server never answers
            async with asyncio.timeout(5):  # the close crosses the loop: wait for it, not a guess
                await server.hung_up.wait()
            assert (await client.chat(_request())).text == "fresh"
        finally:
            await client.aclose()
    assert server.connections == 2


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return key, cert


async def test_https_verifies_the_certificate_as_real_providers_need(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every real provider is HTTPS: the lean path must speak TLS with SNI and verify the chain
    and the host name (here against a CA the test trusts through SSL_CERT_FILE), and refuse a
    certificate it cannot verify."""
    key, cert = _self_signed(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    body = _events("over ", "TLS")
    server = _Server(lambda n: _sse_head("transfer-encoding: chunked\r\n\r\n") + _chunked(body))
    async with _serve(server, tls) as url:
        monkeypatch.setattr(http1, "_SSL", None)
        with pytest.raises(ProviderConnectionError, match="certificate"):
            await _chat(url)  # the system's CAs do not know this one
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        monkeypatch.setattr(http1, "_SSL", None)
        client = HttpModelClient(url, "k")
        try:
            for _ in range(2):
                assert (await client.chat(_request())).text == "over TLS"
        finally:
            await client.aclose()
    monkeypatch.setattr(http1, "_SSL", None)  # the next user builds the default context again
    assert server.connections == 1  # one kept connection for both calls (the refused one never got past TLS)


async def test_a_key_with_a_line_break_is_refused_not_sent_as_a_second_header() -> None:
    server = _Server(lambda n: _sse_head("transfer-encoding: chunked\r\n\r\n") + _chunked(_events("x")))
    async with _serve(server) as url:
        client = HttpModelClient(url, "sk-abc\r\nx-injected: 1")
        try:
            with pytest.raises(ProviderConnectionError, match="line break"):
                await client.chat(_request())
        finally:
            await client.aclose()
    assert server.requests == 0
