"""Who a request acts for: API keys to tenants, and what each role may do.

With authentication on (`serve --auth`, the default beyond loopback) every API route but
`PUBLIC_PATHS` needs `Authorization: Bearer <key>`; the key names the tenant, and `X-Tenant` may
only repeat it. With authentication off (the embedded loopback default) there are no keys: the
tenant is `X-Tenant` or `default`, and every caller is trusted like an operator.

Roles: `member` acts within its tenant. `admin` is the deployment's operator: it may also read
`/metrics` and `/api/metrics` (figures of every tenant) and read, never change, any tenant's jobs
(`GET /api/jobs/{id}` and its events: looking into someone's failed job is support work).
Everything else, admin or not, is the key's own tenant's; another tenant's id answers 404.

Static files (the studio, web/) are mounted with `app.mount(...)`: a mount carries none of the
routes' dependencies, so it is public by construction; list its prefix in `PUBLIC_PREFIXES` so the
route audit (tests/api/test_api_auth.py) knows it is meant to be.

Keys are looked up by hash and cached for at most `ttl_s` (1 s): a key revoked anywhere is refused
by every process within that time. Concurrent requests with the same uncached key share one read.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from storyloom.api.errors import error_body
from storyloom.api.middleware import WARM_UP_PATH
from storyloom.errors import AuthenticationError, PermissionDeniedError, StoreError
from storyloom.logs import get_logger
from storyloom.store.keys import ApiKey, KeyStore, Role, hash_key

__all__ = [
    "PRINCIPAL_SCOPE_KEY",
    "PUBLIC_PATHS",
    "PUBLIC_PREFIXES",
    "WARM_UP_PATH",
    "AuthMiddleware",
    "KeyAuthenticator",
    "Principal",
    "Role",
    "open_principal",
]

# Answer without a key: health (load balancers, orchestrators), the API's own description, and
# the studio's page ("/"), which holds no data: its API calls carry the key.
PUBLIC_PATHS = frozenset({"/", "/api/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
PUBLIC_PREFIXES: tuple[str, ...] = ("/studio/",)  # the studio's static files (web/)
PRINCIPAL_SCOPE_KEY = "storyloom.principal"  # where AuthMiddleware leaves the request's Principal
_REALM = 'Bearer realm="storyloom"'

_log = get_logger("storyloom.api.auth")


@dataclass(frozen=True, slots=True)
class Principal:
    """The tenant and role a request acts with; `key_id` None when authentication is off."""

    tenant: str
    role: Role
    key_id: str | None = None

    @property
    def read_scope(self) -> str | None:
        """The tenant whose jobs this principal may read; None: any (an admin key)."""
        return None if self.key_id is not None and self.role is Role.ADMIN else self.tenant

    def require_admin(self, what: str) -> None:
        if self.role is not Role.ADMIN:
            raise PermissionDeniedError(f"{what} needs an admin key; this key's role is {self.role.value}.")


def open_principal(x_tenant: str | None) -> Principal:
    """Authentication off: the tenant the header names, trusted like an operator."""
    return Principal(tenant=x_tenant or "default", role=Role.ADMIN)


class KeyAuthenticator:
    """Keys to principals with a short cache; also records (throttled) when each key was last used."""

    def __init__(
        self, store: KeyStore, *, ttl_s: float = 1.0, max_entries: int = 10_000, touch_every_s: float = 60.0
    ) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.touch_every_s = touch_every_s
        # hash -> (fetched at, record or None for no such key); unknown keys are cached too, so a
        # client retrying a wrong key costs one read a second, and the map is bounded (LRU order).
        self._cache: OrderedDict[str, tuple[float, ApiKey | None]] = OrderedDict()
        self._reading: dict[str, asyncio.Future[ApiKey | None]] = {}
        self._touched: dict[str, float] = {}  # key id -> when this process last wrote last_used_at
        self._touches: set[asyncio.Task[None]] = set()

    async def authenticate_header(self, authorization: str | None, x_tenant: str | None) -> Principal:
        """The principal of an `Authorization` header's value; AuthenticationError when it has no
        valid key (the message never repeats what was sent)."""
        if authorization is None or not authorization.strip():
            raise AuthenticationError(
                "this service needs an API key: send Authorization: Bearer <key> "
                "(`storyloom keys create` makes one)."
            )
        scheme, _, key = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise AuthenticationError("send the API key as Authorization: Bearer <key>.")
        return await self.authenticate(key.strip(), x_tenant)

    async def authenticate(self, key: str, x_tenant: str | None) -> Principal:
        record = await self._record(hash_key(key))
        if record is None:
            raise AuthenticationError("this API key is not valid.")
        if record.revoked:
            raise AuthenticationError("this API key has been revoked.")
        if x_tenant is not None and x_tenant != record.tenant:
            raise PermissionDeniedError(
                f"this key acts for tenant {record.tenant!r}; X-Tenant cannot change it (omit the header)."
            )
        self._touch(record.id)
        return Principal(tenant=record.tenant, role=record.role, key_id=record.id)

    async def _record(self, digest: str) -> ApiKey | None:
        cached = self._cache.get(digest)
        if cached is not None and time.monotonic() - cached[0] < self.ttl_s:
            return cached[1]
        reading = self._reading.get(digest)
        if reading is None:
            # A task of its own: a caller that gives up does not cancel the read the others await.
            reading = asyncio.ensure_future(self._read(digest))
            reading.add_done_callback(_retrieve)  # an error nobody waits for anymore is not logged
            self._reading[digest] = reading
        return await asyncio.shield(reading)

    async def _read(self, digest: str) -> ApiKey | None:
        try:
            record = await self.store.find_by_hash(digest)
        finally:
            self._reading.pop(digest, None)
        self._cache[digest] = (time.monotonic(), record)
        self._cache.move_to_end(digest)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return record

    def _touch(self, key_id: str) -> None:
        now = time.time()
        if now - self._touched.get(key_id, 0.0) < self.touch_every_s:
            return
        self._touched[key_id] = now
        task = asyncio.create_task(self._write_touch(key_id, now))
        self._touches.add(task)
        task.add_done_callback(self._touches.discard)

    async def _write_touch(self, key_id: str, at: float) -> None:
        try:
            await self.store.touch([key_id], at)
        except Exception as exc:  # last use is a courtesy figure: never fail a request for it
            _log.warning("api_key_touch_failed", key_id=key_id, error=type(exc).__name__)

    async def aclose(self) -> None:
        """Wait for the last-use writes in flight (shutdown)."""
        if self._touches:
            await asyncio.gather(*self._touches, return_exceptions=True)


def _retrieve(task: asyncio.Future[ApiKey | None]) -> None:
    if not task.cancelled():
        task.exception()


class AuthMiddleware:
    """Authenticate every HTTP request but the public paths, before any route, body or 404 is
    looked at; the principal goes into the scope for `api.deps.get_principal`.

    A middleware rather than a route dependency, so a route added later cannot forget it and an
    unauthenticated caller learns nothing (not even which paths exist, nor a 422 for its body).
    Authentication is off when the app's services have no `keys` (the loopback default).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        services = getattr(scope["app"].state, "services", None)
        keys: KeyAuthenticator | None = getattr(services, "keys", None)
        if keys is None:
            await self.app(scope, receive, send)
            return
        authorization = x_tenant = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"x-tenant":
                x_tenant = value.decode("latin-1")
        try:
            principal = await keys.authenticate_header(authorization, x_tenant)
        except AuthenticationError as exc:
            challenge = _REALM if authorization is None else f'{_REALM}, error="invalid_token"'
            await _send_json(send, 401, str(exc), [(b"www-authenticate", challenge.encode())])
            return
        except PermissionDeniedError as exc:
            await _send_json(send, 403, str(exc))
            return
        except (StoreError, OSError) as exc:
            _log.error("api.auth_store_error", error=type(exc).__name__)
            await _send_json(
                send, 503, "the database is unavailable; try again shortly.", [(b"retry-after", b"5")]
            )
            return
        scope[PRINCIPAL_SCOPE_KEY] = principal
        structlog.contextvars.bind_contextvars(tenant=principal.tenant, key_id=principal.key_id)
        await self.app(scope, receive, send)


def _is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path == WARM_UP_PATH or path.startswith(PUBLIC_PREFIXES)


async def _send_json(
    send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    # Outside the app's exception handlers, so the ErrorOut body is made here (same shape).
    text = detail.strip() or "not allowed"
    payload = json.dumps(error_body(text if text.endswith((".", "?", "!")) else f"{text}.")).encode()
    start: dict[str, Any] = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            *(headers or []),
        ],
    }
    await send(start)
    await send({"type": "http.response.body", "body": payload})
