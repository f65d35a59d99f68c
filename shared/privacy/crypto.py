"""Envelope encryption of sensitive values (AES-256-GCM).

Each tenant has one data key (DEK), stored in ``auth.data_key`` wrapped by a key-encryption key
(KEK) from ``WAYPOINT_ENCRYPTION_KEYS``. New data keys are wrapped with the first KEK; any listed
KEK unwraps, so a new KEK is put first, ``waypoint keys rotate-encryption`` re-wraps every data
key with it, and then the old one can be removed. Values are sealed with the tenant's data key
and the tenant as associated data, so a sealed value copied to another tenant does not open.
The same data key, through HMAC, names erased identifiers in tombstones (``identifier_hash``):
without the KEK a dump cannot test phone numbers against them.
"""

from __future__ import annotations

import base64
import hmac
import os
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

TOKEN_PREFIX = "wpenc1:"
# Development and test only (settings refuse it when WAYPOINT_ENV=prod).
DEV_ENCRYPTION_KEYS = "dev:" + base64.b64encode(b"waypoint-development-only-kek-32").decode()
_NONCE = 12


class SealError(ValueError):
    """A key setting is malformed, or a sealed value does not open with the keys at hand."""


def parse_keys(setting: str) -> tuple[str, dict[str, bytes]]:
    """``"id:base64,id2:base64"`` → (first id, {id: 32-byte key})."""
    keys: dict[str, bytes] = {}
    order: list[str] = []
    for part in (p.strip() for p in setting.split(",")):
        if not part:
            continue
        key_id, sep, encoded = part.partition(":")
        if not sep or not key_id:
            raise SealError("each encryption key is id:base64 (32 bytes)")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except ValueError as exc:
            raise SealError(f"encryption key {key_id!r} is not base64") from exc
        if len(raw) != 32:
            raise SealError(f"encryption key {key_id!r} must be 32 bytes, not {len(raw)}")
        if key_id in keys:
            raise SealError(f"encryption key id {key_id!r} is listed twice")
        keys[key_id] = raw
        order.append(key_id)
    if not order:
        raise SealError("WAYPOINT_ENCRYPTION_KEYS names no key")
    return order[0], keys


def generate_key(key_id: str) -> str:
    """A new ``id:base64`` entry for WAYPOINT_ENCRYPTION_KEYS."""
    return f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"


def _wrap_aad(tenant: str) -> bytes:
    return b"waypoint-data-key|" + tenant.encode()


def wrap(kek: bytes, tenant: str, dek: bytes) -> bytes:
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(kek).encrypt(nonce, dek, _wrap_aad(tenant))


def unwrap(kek: bytes, tenant: str, wrapped: bytes) -> bytes:
    try:
        return AESGCM(kek).decrypt(wrapped[:_NONCE], wrapped[_NONCE:], _wrap_aad(tenant))
    except InvalidTag as exc:
        raise SealError(f"tenant {tenant!r}'s data key does not open with its KEK") from exc


def is_sealed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(TOKEN_PREFIX)


@dataclass
class Keyring:
    """The KEKs from settings and the tenants' data keys read so far (they never change)."""

    primary: str
    keks: dict[str, bytes]
    deks: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def from_setting(cls, setting: str) -> Keyring:
        primary, keks = parse_keys(setting)
        return cls(primary, keks)

    async def ensure(self, conn: asyncpg.Connection, tenants: set[str]) -> None:
        """Read (or create) the data keys of ``tenants`` not known yet."""
        missing = sorted(tenants - self.deks.keys())
        if not missing:
            return
        await self._read(conn, missing)
        new = [t for t in missing if t not in self.deks]
        if new:
            rows = [
                (t, self.primary, wrap(self.keks[self.primary], t, os.urandom(32))) for t in new
            ]
            # A tenant that does not exist gets no key (and has nothing sealed or erased).
            await conn.executemany(
                "INSERT INTO auth.data_key (tenant_id, kek_id, wrapped) "
                "SELECT $1::text, $2::text, $3::bytea "
                "WHERE EXISTS (SELECT 1 FROM auth.tenant WHERE id = $1::text) "
                "ON CONFLICT DO NOTHING",
                rows,
            )
            await self._read(conn, new)  # a concurrent process may have created it first

    async def _read(self, conn: asyncpg.Connection, tenants: list[str]) -> None:
        rows = await conn.fetch(
            "SELECT tenant_id, kek_id, wrapped FROM auth.data_key WHERE tenant_id = ANY($1)",
            tenants,
        )
        for row in rows:
            kek = self.keks.get(row["kek_id"])
            if kek is None:
                raise SealError(
                    f"tenant {row['tenant_id']!r}'s data key is wrapped by KEK "
                    f"{row['kek_id']!r}, which WAYPOINT_ENCRYPTION_KEYS does not list"
                )
            self.deks[row["tenant_id"]] = unwrap(kek, row["tenant_id"], bytes(row["wrapped"]))

    def has(self, tenant: str) -> bool:
        return tenant in self.deks

    def _dek(self, tenant: str) -> bytes:
        try:
            return self.deks[tenant]
        except KeyError:
            raise SealError(f"no data key loaded for tenant {tenant!r}") from None

    def seal(self, tenant: str, value: Any) -> str:
        """``value`` (any JSON value) encrypted for ``tenant``, as a text token."""
        nonce = os.urandom(_NONCE)
        sealed = AESGCM(self._dek(tenant)).encrypt(nonce, orjson.dumps(value), tenant.encode())
        return TOKEN_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def unseal(self, tenant: str, token: str) -> Any:
        if not is_sealed(token):
            raise SealError("not a sealed value")
        try:
            raw = base64.urlsafe_b64decode(token[len(TOKEN_PREFIX) :])
            plain = AESGCM(self._dek(tenant)).decrypt(raw[:_NONCE], raw[_NONCE:], tenant.encode())
        except (InvalidTag, ValueError) as exc:
            raise SealError("the sealed value does not open with this tenant's key") from exc
        return orjson.loads(plain)

    def identifier_hash(self, tenant: str, identifier_key: str) -> str:
        """The tombstone name of a normalized identifier (``"type:value"``)."""
        digest = hmac.new(self._dek(tenant), b"tombstone|" + identifier_key.encode(), "sha256")
        return digest.hexdigest()


async def rewrap_all(conn: asyncpg.Connection, keyring: Keyring) -> tuple[int, int]:
    """Re-wrap every data key not wrapped by the primary KEK; (re-wrapped, already current)."""
    rows = await conn.fetch("SELECT tenant_id, kek_id, wrapped FROM auth.data_key FOR UPDATE")
    done = 0
    for row in rows:
        if row["kek_id"] == keyring.primary:
            continue
        kek = keyring.keks.get(row["kek_id"])
        if kek is None:
            raise SealError(
                f"tenant {row['tenant_id']!r}'s data key is wrapped by KEK {row['kek_id']!r}, "
                "which WAYPOINT_ENCRYPTION_KEYS does not list: add it (after the new one)"
            )
        dek = unwrap(kek, row["tenant_id"], bytes(row["wrapped"]))
        await conn.execute(
            "UPDATE auth.data_key SET kek_id = $2, wrapped = $3, rewrapped_at = now() "
            "WHERE tenant_id = $1",
            row["tenant_id"],
            keyring.primary,
            wrap(keyring.keks[keyring.primary], row["tenant_id"], dek),
        )
        done += 1
    return done, len(rows) - done
