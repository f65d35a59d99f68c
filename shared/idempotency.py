"""``Idempotency-Key`` for commands (Stripe-style): a retried request has its effect once and
gets the same response.

The key, a fingerprint of the request (method, path, body) and the response are stored per
tenant in ``<schema>.idempotency_key`` in the same transaction as the command's effect. A
request with a known key and the same fingerprint gets the stored response (header
``Idempotent-Replayed: true``) and changes nothing; the same key with another request is a 422.
Two requests with one key at once are serialized by an advisory lock on the key: the second
waits for the first's commit and then replays it. A command that fails (4xx, 5xx) stores
nothing, so its retry runs again. Keys are kept ``retention`` (expired ones are ignored and
replaced, and ``purge`` deletes them).

This module is the store (no FastAPI: the journey worker purges the keys); the request side,
the header's dependency and ``run_idempotent``, is in ``shared/deps.py``.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any, NamedTuple

import asyncpg
import orjson

from shared.errors import Unprocessable

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"


class StoredResponse(NamedTuple):
    status_code: int
    body: Any


def fingerprint(method: str, path: str, body: Any) -> str:
    """What makes two requests the same: method, path and the JSON body (keys sorted)."""
    canonical = orjson.dumps([method.upper(), path, body], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def _lock_key(schema: str, tenant_id: str, key: str) -> int:
    digest = hashlib.blake2b(f"idempotency|{schema}|{tenant_id}|{key}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


async def replay(
    conn: asyncpg.Connection,
    schema: str,
    *,
    tenant_id: str,
    key: str,
    request_hash: str,
    retention: timedelta,
) -> StoredResponse | None:
    """The stored response of ``key``, or None (then the caller runs the command and calls
    ``remember`` in this transaction). Holds the key's lock until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key(schema, tenant_id, key))
    row = await conn.fetchrow(
        f"SELECT request_hash, status_code, response::text AS response "
        f"FROM {schema}.idempotency_key "
        "WHERE tenant_id = $1 AND key = $2 AND created_at > now() - $3::interval",
        tenant_id,
        key,
        retention,
    )
    if row is None:
        return None
    if row["request_hash"] != request_hash:
        raise Unprocessable(
            f"the {HEADER} {key!r} was already used with a different request; "
            "use a new key for a new request"
        )
    return StoredResponse(row["status_code"], orjson.loads(row["response"]))


async def remember(
    conn: asyncpg.Connection,
    schema: str,
    *,
    tenant_id: str,
    key: str,
    request_hash: str,
    status_code: int,
    response: Any,
) -> None:
    """Store the response of ``key`` (replacing an expired entry) in the caller's transaction."""
    await conn.execute(
        f"INSERT INTO {schema}.idempotency_key "
        "(tenant_id, key, request_hash, status_code, response) "
        "VALUES ($1, $2, $3, $4, $5::jsonb) "
        "ON CONFLICT (tenant_id, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, "
        "status_code = EXCLUDED.status_code, response = EXCLUDED.response, created_at = now()",
        tenant_id,
        key,
        request_hash,
        status_code,
        orjson.dumps(response).decode(),
    )


async def purge(conn: asyncpg.Connection, schema: str, retention: timedelta) -> int:
    """Delete the keys older than ``retention``; how many."""
    status: str = await conn.execute(
        f"DELETE FROM {schema}.idempotency_key WHERE created_at < now() - $1::interval",
        retention,
    )
    return int(status.split()[-1])
