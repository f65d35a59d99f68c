"""Sending dead-lettered records back to the raw topic, once their cause is fixed.

Typical use: events refused as ``unknown_tenant`` before the tenant was created. The records
are re-sent unchanged (the ``waypoint-*`` headers dropped); events stored meanwhile are
deduplicated, and records that are still bad are dead-lettered again with a fresh reason.
A dead letter cut to fit the producer (``waypoint-truncated``) is not re-sent: only part of the
record is there; the log names where the whole one is (the source topic, partition, offset).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.ingest.config import IngestSettings
from services.ingest.records import best_effort_identity
from shared.kafka import header, make_producer
from shared.logging import get_logger

log = get_logger("ingest.redrive")


@dataclass(frozen=True)
class RedriveFilter:
    reasons: Collection[str] = ()
    tenant: str | None = None

    def wants(self, reason: str | None, tenant: str | None) -> bool:
        if self.reasons and reason not in self.reasons:
            return False
        return self.tenant is None or tenant == self.tenant


async def redrive(
    settings: IngestSettings,
    wanted: RedriveFilter,
    *,
    dry_run: bool = False,
    idle_seconds: float = 2.0,
) -> Counter[str]:
    """Re-send the matching records of the dead-letter topic; returns counts by reason."""
    producer = make_producer(settings)
    reader = AIOKafkaConsumer(  # no group: reads everything, commits nothing
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    await producer.start()
    await reader.start()
    sent: Counter[str] = Counter()
    try:
        partitions = await producer.partitions_for(settings.topic_dead_letter)
        reader.assign([TopicPartition(settings.topic_dead_letter, p) for p in partitions])
        await reader.seek_to_beginning()
        pending = []
        last_record = time.monotonic()
        while time.monotonic() - last_record < idle_seconds:
            batches = await reader.getmany(timeout_ms=200, max_records=5000)
            for records in batches.values():
                last_record = time.monotonic()
                for record in records:
                    reason = header(record.headers, "waypoint-reason")
                    tenant, _ = best_effort_identity(record.value, record.headers)
                    if not wanted.wants(reason, tenant):
                        continue
                    if header(record.headers, "waypoint-truncated"):  # only a part: never resend
                        log.warning(
                            "redrive.skipped_truncated",
                            reason=reason,
                            source_topic=header(record.headers, "waypoint-source-topic"),
                            source_partition=header(record.headers, "waypoint-source-partition"),
                            source_offset=header(record.headers, "waypoint-source-offset"),
                        )
                        continue
                    sent[reason or "none"] += 1
                    if dry_run:
                        continue
                    original = [(k, v) for k, v in record.headers if not k.startswith("waypoint-")]
                    pending.append(
                        await producer.send(
                            settings.topic_raw, record.value, key=record.key, headers=original
                        )
                    )
        await asyncio.gather(*pending)
    finally:
        await reader.stop()
        await producer.stop()
    return sent
