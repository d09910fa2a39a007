"""API keys: create, list, revoke and look up; only a hash of each key is ever stored.

A key is `slk_<id>_<secret>`: `id` is 12 random hex digits, public (it is the table's primary key,
shown by `storyloom keys list`, and what `revoke` takes); `secret` is 32 random bytes
(`secrets.token_urlsafe`). The fixed `slk_` prefix lets secret scanners and people recognise a key.

Why plain SHA-256 and not bcrypt/argon2: those slow a brute force of *guessable* passwords. A key
holds 256 random bits, so no guess list exists and a fast hash is as safe (the standard for API
tokens); it keeps a request's check to a microsecond and lets a key be found by its hash through a
unique index. A keyed hash (HMAC with a server secret) would protect against someone holding only
a copy of the database, at the cost of one more secret every process must share; not worth it here.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storyloom.errors import InputError
from storyloom.store.database import Database
from storyloom.store.schema import api_keys

__all__ = ["KEY_PREFIX", "RESERVED_TENANTS", "ApiKey", "KeyStore", "Role", "hash_key", "validate_tenant"]

KEY_PREFIX = "slk_"
RESERVED_TENANTS = frozenset({"system"})  # the service's own periodic jobs run as this tenant
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ID = re.compile(r"[0-9a-f]{12}")
_REF = re.compile(r"(?:slk_)?([0-9a-f]{12})(?:_\S*)?")  # an id, a prefix, or a whole key


class Role(StrEnum):
    """`member` acts within its tenant; `admin` is the deployment's operator (see api/auth.py)."""

    ADMIN = "admin"
    MEMBER = "member"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key's record: never the key itself."""

    id: str
    tenant: str
    role: Role
    created_at: float
    revoked_at: float | None
    last_used_at: float | None

    @property
    def prefix(self) -> str:
        """The key's public beginning, as shown in lists: `slk_<id>`."""
        return f"{KEY_PREFIX}{self.id}"

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def validate_tenant(tenant: str) -> str:
    if not _TENANT.fullmatch(tenant):
        raise InputError(
            f"tenant {tenant[:80]!r} is not a valid name: use 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    if tenant in RESERVED_TENANTS:
        raise InputError(f"tenant {tenant!r} is reserved for the service's own jobs.")
    return tenant


def _record(row: Any) -> ApiKey:
    m = row._mapping
    return ApiKey(
        id=m["id"],
        tenant=m["tenant"],
        role=Role(m["role"]),
        created_at=float(m["created_at"]),
        revoked_at=m["revoked_at"],
        last_used_at=m["last_used_at"],
    )


_COLUMNS = (
    api_keys.c.id,
    api_keys.c.tenant,
    api_keys.c.role,
    api_keys.c.created_at,
    api_keys.c.revoked_at,
    api_keys.c.last_used_at,
)


class KeyStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, *, tenant: str, role: Role | str = Role.MEMBER) -> tuple[ApiKey, str]:
        """A new key for `tenant`: its record and the key, which exists nowhere else afterwards."""
        validate_tenant(tenant)
        try:
            role = Role(role)
        except ValueError:
            raise InputError(f"role must be admin or member, not {str(role)[:40]!r}.") from None
        key_id = secrets.token_hex(6)
        key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(
            id=key_id, tenant=tenant, role=role, created_at=time.time(), revoked_at=None, last_used_at=None
        )
        row = {
            "id": key_id,
            "key_hash": hash_key(key),
            "tenant": tenant,
            "role": role.value,
            "created_at": record.created_at,
        }

        async def tx(conn: AsyncConnection) -> None:
            await conn.execute(sa.insert(api_keys).values(**row))

        await self._db.transaction(tx)
        return record, key

    async def list_keys(self, *, tenant: str | None = None, include_revoked: bool = True) -> list[ApiKey]:
        query = sa.select(*_COLUMNS).order_by(api_keys.c.created_at, api_keys.c.id)
        if tenant is not None:
            query = query.where(api_keys.c.tenant == tenant)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        async with self._db.read() as conn:
            return [_record(row) for row in await conn.execute(query)]

    async def revoke(self, ref: str) -> ApiKey:
        """Revoke by id (`3f9a…`), prefix (`slk_3f9a…`) or the whole key (a leaked one); revoking
        twice keeps the first time. An error never repeats `ref`: it may be a key."""
        found_id = _REF.fullmatch(ref.strip())
        if found_id is None:
            raise InputError("that is not a key id: give the prefix `storyloom keys list` shows (slk_…).")
        key_id = found_id.group(1)
        now = time.time()

        async def tx(conn: AsyncConnection) -> ApiKey | None:
            await conn.execute(
                sa.update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            row = (await conn.execute(sa.select(*_COLUMNS).where(api_keys.c.id == key_id))).first()
            return _record(row) if row is not None else None

        found = await self._db.transaction(tx)
        if found is None:
            raise InputError(f"no API key with id {key_id!r}.")
        return found

    async def find(self, key: str) -> ApiKey | None:
        """The record of the key (revoked or not); None when no key is this one."""
        return await self.find_by_hash(hash_key(key))

    async def find_by_hash(self, digest: str) -> ApiKey | None:
        query = sa.select(*_COLUMNS).where(api_keys.c.key_hash == digest)
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        return _record(row) if row is not None else None

    async def touch(self, key_ids: list[str], at: float) -> None:
        """Record that these keys were used (callers throttle: this is a write)."""
        if not key_ids:
            return

        async def tx(conn: AsyncConnection) -> None:
            await conn.execute(sa.update(api_keys).where(api_keys.c.id.in_(key_ids)).values(last_used_at=at))

        await self._db.transaction(tx)
