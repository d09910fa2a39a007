"""fetch_page takes its URLs from models, so by default it reaches public addresses only: loopback,
private, link-local (cloud metadata) and the like are refused — as IP literals, as names that
resolve to them, and as redirect hops — while a page that is allowed still reads as before."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from storyloom.config import Settings
from storyloom.tools import ToolRegistry, ToolRuntime, builtin_tools, fetch_tool
from storyloom.tools.netguard import IPAddress, public_only


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.7", "private"),
        ("172.16.5.5", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "not a public"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("::ffff:127.0.0.1", "loopback"),
        ("fd00::1", "private"),
    ],
)
def test_addresses_that_are_not_public_are_refused_with_a_reason(address: str, why: str) -> None:
    reason = public_only(ipaddress.ip_address(address))
    assert reason is not None and why in reason


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert public_only(ipaddress.ip_address(address)) is None


@pytest.fixture
async def site() -> AsyncIterator[Callable[[str], Any]]:
    """A page server on a loopback address of the test's choosing; `/hop/N` redirects N times."""
    runners: list[web.AppRunner] = []

    async def start(host: str, redirect_to: str | None = None) -> str:
        async def page(request: web.Request) -> web.Response:
            return web.Response(text="<title>Inside</title><p>secret</p>", content_type="text/html")

        async def away(request: web.Request) -> web.Response:
            assert redirect_to is not None
            raise web.HTTPFound(redirect_to)

        async def hop(request: web.Request) -> web.Response:
            n = int(request.match_info["n"])
            raise web.HTTPFound(f"/hop/{n - 1}" if n > 1 else "/page")

        app = web.Application()
        app.router.add_get("/page", page)
        app.router.add_get("/away", away)
        app.router.add_get("/hop/{n}", hop)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, host, 0).start()
        runners.append(runner)
        return f"http://{host}:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def _fetch(tool: Any, url: str) -> Any:
    rt = ToolRuntime(ToolRegistry([tool]))
    try:
        return await rt.call("fetch_page", {"url": url})
    finally:
        await rt.aclose()


async def test_loopback_is_refused_as_a_literal_and_as_a_name(site: Any) -> None:
    base = await site("127.0.0.1")
    port = base.rsplit(":", 1)[1]
    for url in (f"{base}/page", f"http://localhost:{port}/page", "http://169.254.169.254/latest/meta-data/"):
        result = await _fetch(fetch_tool(), url)
        assert result.degraded, url
        assert result.reason is not None and "refuses to fetch" in result.reason, result.reason
        assert "STORYLOOM_FETCH_ALLOW_PRIVATE" in result.reason
        assert "secret" not in str(result.output)


async def test_a_redirect_to_a_refused_address_is_not_followed(site: Any) -> None:
    inside = await site("127.0.0.2")
    outside = await site("127.0.0.1", redirect_to=f"{inside}/page")

    def only_127_0_0_1(ip: IPAddress) -> str | None:
        return None if str(ip) == "127.0.0.1" else "outside the allowed list"

    allowed = await _fetch(fetch_tool(address_rule=only_127_0_0_1), f"{outside}/page")
    assert not allowed.degraded and allowed.output["title"] == "Inside"
    bounced = await _fetch(fetch_tool(address_rule=only_127_0_0_1), f"{outside}/away")
    assert bounced.degraded and bounced.reason is not None
    assert "127.0.0.2" in bounced.reason and "outside the allowed list" in bounced.reason


async def test_redirects_are_followed_a_bounded_number_of_times(site: Any) -> None:
    base = await site("127.0.0.1")
    ok = await _fetch(fetch_tool(allow_private=True), f"{base}/hop/5")
    assert not ok.degraded and ok.output["url"].endswith("/page") and ok.output["text"] == "secret"
    looping = await _fetch(fetch_tool(allow_private=True), f"{base}/hop/6")
    assert looping.degraded and looping.reason is not None and "redirects more than 5" in looping.reason


async def test_the_setting_lifts_the_guard_for_an_intranet_deployment(site: Any) -> None:
    base = await site("127.0.0.1")
    guarded = {t.name: t for t in builtin_tools(Settings())}["fetch_page"]
    open_ = {t.name: t for t in builtin_tools(Settings(fetch_allow_private=True))}["fetch_page"]
    assert (await _fetch(guarded, f"{base}/page")).degraded
    assert (await _fetch(open_, f"{base}/page")).output["text"] == "secret"
