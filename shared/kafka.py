"""Kafka clients built one way for every service.

Producers use ``acks=all`` and no idempotence flag (the embedded Tansu broker rejects it);
exactly-once effects come from idempotent consumers keyed on event id, which holds on real
Kafka too. Consumers never auto-commit: offsets are committed after the batch's effects.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from shared.config import CommonSettings


def make_producer(settings: CommonSettings, **overrides: Any) -> AIOKafkaProducer:
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "acks": "all",
        "linger_ms": 5,
        "max_batch_size": 512 * 1024,
        "max_request_size": 4 * 1024 * 1024,
        "request_timeout_ms": 30_000,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def make_consumer(
    settings: CommonSettings, *topics: str, group_id: str, **overrides: Any
) -> AIOKafkaConsumer:
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": 5000,
        "fetch_max_bytes": 32 * 1024 * 1024,
        "max_partition_fetch_bytes": 8 * 1024 * 1024,
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 1_000,
        "isolation_level": "read_uncommitted",
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


def all_topics(settings: CommonSettings) -> list[str]:
    return [
        settings.topic_raw,
        settings.topic_normalized,
        settings.topic_dead_letter,
        settings.topic_activity,
        settings.topic_engagement,
        settings.topic_privacy,
    ]


async def ensure_topics(
    settings: CommonSettings, topics: list[str] | None = None, *, partitions: int | None = None
) -> None:
    """Create missing topics (idempotent; safe when several processes race)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in (topics or all_topics(settings)) if t not in existing]
        if wanted:
            count = partitions or settings.topic_partitions
            try:
                await admin.create_topics(
                    [
                        NewTopic(
                            name=t,
                            num_partitions=count,
                            replication_factor=settings.topic_replication_factor,
                        )
                        for t in wanted
                    ]
                )
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


async def broker_reachable(settings: CommonSettings, timeout: float = 2.0) -> bool:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=int(timeout * 1000)
    )
    try:
        await asyncio.wait_for(admin.start(), timeout)
        await asyncio.wait_for(admin.list_topics(), timeout)
        return True
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        try:
            await admin.close()
        except Exception:  # noqa: BLE001 - closing a half-open client must not mask the answer
            pass


def header(
    headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...] | None, name: str
) -> str | None:
    for key, value in headers or ():
        if key == name:
            return value.decode(errors="replace") if value is not None else None
    return None
