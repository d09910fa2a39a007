"""API keys on SQLite and a real PostgreSQL: only a hash is stored, lookup, revoke, last use."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from storyloom.errors import InputError
from storyloom.store import Database
from storyloom.store.keys import KeyStore, Role, hash_key
from storyloom.store.schema import api_keys


async def test_a_key_is_stored_only_as_its_hash_and_found_by_it(db: Database) -> None:
    store = KeyStore(db)
    record, key = await store.create(tenant="alice", role="admin")
    assert key.startswith(f"slk_{record.id}_") and len(key) > 50
    assert record.prefix == f"slk_{record.id}" and record.role is Role.ADMIN and not record.revoked
    async with db.read() as conn:
        rows = [dict(r._mapping) for r in await conn.execute(sa.select(api_keys))]
    assert len(rows) == 1
    assert rows[0]["key_hash"] == hash_key(key)
    secret = key[len(record.prefix) + 1 :]
    assert not any(secret in str(value) for value in rows[0].values())  # nothing holds the secret
    found = await store.find(key)
    assert found is not None and found.id == record.id and found.tenant == "alice"
    assert await store.find(key + "x") is None
    assert await store.find(key[:-1]) is None


async def test_two_keys_differ_and_list_filters_by_tenant(db: Database) -> None:
    store = KeyStore(db)
    a, key_a = await store.create(tenant="alice")
    b, key_b = await store.create(tenant="bob")
    assert key_a != key_b and a.id != b.id and a.role is Role.MEMBER
    assert [k.id for k in await store.list_keys()] == [a.id, b.id]
    assert [k.id for k in await store.list_keys(tenant="bob")] == [b.id]


async def test_revoke_by_id_or_prefix_keeps_the_first_time(db: Database) -> None:
    store = KeyStore(db)
    a, key_a = await store.create(tenant="alice")
    b, _ = await store.create(tenant="alice")
    first = await store.revoke(a.id)
    assert first.revoked and first.revoked_at is not None
    again = await store.revoke(a.prefix)
    assert again.revoked_at == first.revoked_at
    found = await store.find(key_a)
    assert found is not None and found.revoked  # found, and refused by the API for it
    assert [k.id for k in await store.list_keys(include_revoked=False)] == [b.id]
    with pytest.raises(InputError, match="no API key"):
        await store.revoke("0123456789ab")
    with pytest.raises(InputError, match="not a key id"):
        await store.revoke("alice")
    c, key_c = await store.create(tenant="carol")
    assert (await store.revoke(key_c)).id == c.id  # a whole key names its own id


async def test_touch_records_last_use(db: Database) -> None:
    store = KeyStore(db)
    a, _ = await store.create(tenant="alice")
    await store.touch([a.id], 1234.5)
    [listed] = await store.list_keys()
    assert listed.last_used_at == 1234.5


@pytest.mark.parametrize(
    ("tenant", "role", "message"),
    [
        ("", "member", "not a valid name"),
        ("a b", "member", "not a valid name"),
        ("x" * 65, "member", "not a valid name"),
        ("system", "member", "reserved"),
        ("alice", "owner", "role must be admin or member"),
    ],
)
async def test_bad_tenant_or_role_is_one_sentence(db: Database, tenant: str, role: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        await KeyStore(db).create(tenant=tenant, role=role)
