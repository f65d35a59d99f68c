"""Envelope encryption and the one masking rule (shared/privacy), without services."""

from __future__ import annotations

import os
import uuid

import pytest
import structlog
from sqlalchemy import text

from shared.auth.service import ensure_tenant
from shared.config import CommonSettings, Environment
from shared.db import Database, raw_connection
from shared.privacy.crypto import (
    DEV_ENCRYPTION_KEYS,
    Keyring,
    SealError,
    generate_key,
    parse_keys,
    rewrap_all,
)
from shared.privacy.masking import MASK, mask_event, mask_log_values, mask_payload, masked


def test_key_settings_are_checked():
    primary, keys = parse_keys("new:" + generate_key("x").split(":")[1] + "," + DEV_ENCRYPTION_KEYS)
    assert primary == "new"
    assert set(keys) == {"new", "dev"}
    for bad in (
        "",
        "nokey",
        "a:not-base64!",
        "a:" + "QUFB",
        f"{DEV_ENCRYPTION_KEYS},{DEV_ENCRYPTION_KEYS}",
    ):
        with pytest.raises(SealError):
            parse_keys(bad)
    with pytest.raises(ValueError, match="WAYPOINT_ENCRYPTION_KEYS"):
        CommonSettings(
            env=Environment.prod, database_url="postgresql://x/y", kafka_bootstrap_servers="k:9092"
        )


def test_sealed_values_open_only_for_their_tenant():
    ring = Keyring.from_setting(DEV_ENCRYPTION_KEYS)
    ring.deks.update(a=os.urandom(32), b=os.urandom(32))
    token = ring.seal("a", {"pin": 1234})
    assert "1234" not in token
    assert ring.unseal("a", token) == {"pin": 1234}
    with pytest.raises(SealError):
        ring.unseal("b", token)
    with pytest.raises(SealError):
        ring.unseal("a", token[:-4] + "AAAA")
    assert ring.identifier_hash("a", "phone:+1") != ring.identifier_hash("b", "phone:+1")


def test_one_masking_rule_for_events_payloads_entries_and_logs():
    event = {"type": "fact.collected", "data": {"name": "card", "value": "4111", "sensitive": True}}
    assert mask_event(event)["data"]["value"] == MASK
    assert mask_event({**event, "data": {**event["data"], "sensitive": False}}) is not None
    assert "4111" not in mask_payload(
        '{"type": "fact.collected", "data": {"value": "4111", "sensitive": true}}'
    )
    assert mask_payload('{"cut": "4111 sensitive') == MASK
    assert mask_payload("not json") == "not json"
    assert masked({"value": "4111", "sensitive": True, "sealed": "t"}, reveal=False) == {
        "value": MASK,
        "sensitive": True,
        "masked": True,
    }
    logged = mask_log_values(
        None, "info", {"event": "x", "fact": {"value": "4111", "sensitive": True}}
    )
    assert logged["fact"]["value"] == MASK
    with structlog.testing.capture_logs(processors=[mask_log_values]) as logs:
        structlog.get_logger().info("seen", envelope=event)
    assert "4111" not in str(logs)


async def test_rotating_the_kek_rewraps_data_keys_and_values_still_open(db: Database):
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    old = Keyring.from_setting(DEV_ENCRYPTION_KEYS)
    async with db.session() as session:
        await ensure_tenant(session, tenant)
        await old.ensure(await raw_connection(session), {tenant})
    token = old.seal(tenant, "secret")
    new_entry = generate_key("k2")
    rotated = Keyring.from_setting(f"{new_entry},{DEV_ENCRYPTION_KEYS}")
    async with db.session() as session:
        done, _current = await rewrap_all(await raw_connection(session), rotated)
    assert done >= 1
    only_new = Keyring.from_setting(new_entry)  # the old KEK removed after the rotation
    async with db.session() as session:
        await only_new.ensure(await raw_connection(session), {tenant})
        kek = await session.scalar(
            text("SELECT kek_id FROM auth.data_key WHERE tenant_id = :t"), {"t": tenant}
        )
    assert kek == "k2"
    assert only_new.unseal(tenant, token) == "secret"
    # Back to the development KEK, which the other tests' processes are configured with.
    back = Keyring.from_setting(f"{DEV_ENCRYPTION_KEYS},{new_entry}")
    async with db.session() as session:
        await rewrap_all(await raw_connection(session), back)


async def test_no_data_key_for_a_tenant_that_does_not_exist(db: Database):
    ring = Keyring.from_setting(DEV_ENCRYPTION_KEYS)
    async with db.session() as session:
        await ring.ensure(await raw_connection(session), {f"ghost-{uuid.uuid4().hex[:8]}"})
    assert ring.deks == {}
