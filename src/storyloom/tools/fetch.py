"""`fetch_page`: HTTP GET of one page with size and time limits, and its readable text.

The body is read up to `max_bytes` (more is cut, and said so: `truncated: true`), within the
tool's `timeout_s`; HTML becomes text with the stdlib parser (scripts, styles and markup dropped,
block elements as line breaks), other text types are returned as they are, anything else is
refused without reading it. Only http(s) URLs, and only public addresses unless
`allow_private` (`STORYLOOM_FETCH_ALLOW_PRIVATE`): the URL comes from a model, see
`tools.netguard`. Redirects are followed here, at most `MAX_REDIRECTS`, each hop checked.
"""

from __future__ import annotations

import html.parser
from typing import Any
from urllib.parse import urljoin

import aiohttp
from pydantic import BaseModel, Field, HttpUrl

from storyloom.tools import http
from storyloom.tools.base import Tool, ToolError, ToolPolicy
from storyloom.tools.netguard import AddressRule, check_url, public_only

__all__ = ["MAX_REDIRECTS", "FetchInput", "extract_text", "fetch_tool"]

MAX_REDIRECTS = 5
_REDIRECTS = {301, 302, 303, 307, 308}

_BLOCKS = {"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "section", "article", "pre"}
_SKIP = {"script", "style", "noscript", "template", "svg", "head"}


class FetchInput(BaseModel):
    url: HttpUrl = Field(description="The http(s) URL of the page")
    max_chars: int = Field(default=8000, ge=100, le=100_000, description="Longest text to return")


class _Text(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in _SKIP:
            self._skip += 1
        elif tag in _BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in _SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skip:
            self.parts.append(data)


def extract_text(markup: str) -> tuple[str, str]:
    """(title, text) of an HTML document: whitespace collapsed within lines, blank lines dropped."""
    parser = _Text()
    parser.feed(markup)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return " ".join(parser.title.split()), "\n".join(line for line in lines if line)


_ACCEPT = {"accept": "text/html, text/plain;q=0.9, */*;q=0.1"}


def fetch_tool(
    *,
    max_bytes: int = 1_000_000,
    policy: ToolPolicy | None = None,
    allow_private: bool = False,
    address_rule: AddressRule | None = None,
) -> Tool[FetchInput]:
    """`address_rule` replaces the public-only rule (tests, or a site-specific allow-list);
    `allow_private` lifts the guard altogether (a fetcher meant for an intranet)."""
    rule: AddressRule | None = None if allow_private else (address_rule or public_only)

    async def run(args: FetchInput) -> dict[str, Any]:
        url = str(args.url)
        for _ in range(MAX_REDIRECTS + 1):
            if rule is not None:
                check_url(url, rule)
            async with http.session(rule).get(url, headers=_ACCEPT, allow_redirects=False) as r:
                location = r.headers.get("location")
                if r.status in _REDIRECTS and location:
                    url = urljoin(url, location)
                    continue
                return await _read(r, url, args.max_chars, max_bytes)
        raise ToolError(f"{args.url} redirects more than {MAX_REDIRECTS} times", transient=False)

    return Tool(
        name="fetch_page",
        input=FetchInput,
        fn=run,
        description="Fetch a web page by URL and return its title and readable text.",
        policy=policy
        or ToolPolicy(max_concurrency=20, calls_per_minute=120, timeout_s=10.0, cache_ttl_s=300.0),
    )


async def _read(r: aiohttp.ClientResponse, url: str, max_chars: int, max_bytes: int) -> dict[str, Any]:
    await http.raise_for_status(r, f"GET {url}")
    ctype = r.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype and not (ctype.startswith("text/") or ctype in ("application/xhtml+xml", "application/json")):
        raise ToolError(f"{url} is {ctype}, not a text page", transient=False)
    body = await r.content.read(max_bytes + 1)
    truncated = len(body) > max_bytes
    raw = body[:max_bytes].decode(r.get_encoding() if r.charset else "utf-8", "replace")
    title, text = extract_text(raw) if ctype in ("text/html", "application/xhtml+xml", "") else ("", raw)
    if len(text) > max_chars:
        text, truncated = text[:max_chars], True
    return {"url": url, "status": r.status, "title": title, "text": text, "truncated": truncated}
