"""How far behind each consumer group is: committed offsets against the high watermarks.

Works on real Kafka and on the embedded Tansu broker alike, where the admin client's
``list_consumer_group_offsets`` and ``describe_consumer_groups`` fail to decode, and where
ListOffsets(latest) answers a stale offset with S3 storage. So: one consumer per group, with the
group's id but never joining it (``assign``, no commits), reads the committed offsets
(OffsetFetch), and takes each partition's high watermark from a fetch response.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

# Which of a service's topic settings its worker's group consumes, in pipeline order. Other
# Waypoint topics count too for a group once it has committed offsets on them.
# Per service: each consumer-group setting and the topics that group consumes.
CONSUMED: dict[str, dict[str, tuple[str, ...]]] = {
    "ingest": {"consumer_group": ("topic_raw",)},
    "journey": {
        "consumer_group": ("topic_normalized",),
        "engagement_consumer_group": ("topic_engagement",),
    },
    "alerts": {"consumer_group": ("topic_activity",)},
}


@dataclass(frozen=True)
class Group:
    service: str
    group_id: str
    topics: tuple[str, ...]  # known to be consumed
    candidates: tuple[str, ...] = ()  # consumed if the group has offsets on them


def groups_of(settings_by_service: dict[str, Any]) -> list[Group]:
    """The consumer groups of the given services' settings, in pipeline order."""
    every_topic = sorted(
        {
            str(value)
            for settings in settings_by_service.values()
            for name, value in vars(settings).items()
            if name.startswith("topic_") and isinstance(value, str)
        }
    )
    found = []
    for service, settings in settings_by_service.items():
        for group_setting, topic_settings in CONSUMED.get(service, {"consumer_group": ()}).items():
            group_id = getattr(settings, group_setting, None)
            if not isinstance(group_id, str):
                continue
            known = tuple(getattr(settings, name) for name in topic_settings)
            others = tuple(t for t in every_topic if t not in known)
            label = service if group_setting == "consumer_group" else f"{service}/{group_setting}"
            found.append(Group(label, group_id, known, others))
    return found


class GroupProbe:
    def __init__(self, bootstrap: str, group: Group):
        self.group = group
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
            max_partition_fetch_bytes=64 * 1024,
            request_timeout_ms=10_000,
        )
        self.partitions: list[TopicPartition] = []

    async def start(self) -> None:
        await self.consumer.start()
        topics = await self.consumer.topics()
        wanted = []
        for topic in (*self.group.topics, *self.group.candidates):
            if topic not in topics:
                continue
            found = sorted(self.consumer.partitions_for_topic(topic) or ())
            partitions = [TopicPartition(topic, p) for p in found]
            if topic in self.group.topics or any(
                [await self.consumer.committed(tp) is not None for tp in partitions]
            ):
                wanted += partitions
        self.partitions = wanted
        self.consumer.assign(wanted)

    async def lag(self, timeout: float = 5.0) -> int:
        """Records behind, summed over the group's partitions (fresh high watermarks)."""
        if not self.partitions:
            return 0
        since_ms = time.time() * 1000
        deadline = time.monotonic() + timeout
        while True:
            await self.consumer.getmany(timeout_ms=100, max_records=100_000)  # drop what it read
            fresh = [
                (self.consumer.last_poll_timestamp(tp) or 0) >= since_ms for tp in self.partitions
            ]
            if all(fresh):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"no fetch answer for group {self.group.group_id}")
        behind = 0
        for tp in self.partitions:
            high = self.consumer.highwater(tp) or 0
            committed = await self.consumer.committed(tp) or 0
            behind += max(0, high - committed)
        return behind

    async def stop(self) -> None:
        await self.consumer.stop()


async def wait_until_drained(
    bootstrap: str,
    groups: list[Group],
    *,
    timeout: float,
    report: Callable[[dict[str, int], float], None],
    report_every: float = 2.0,
    outboxes: dict[str, Callable[[], Awaitable[int]]] | None = None,
) -> dict[str, int]:
    """Poll every group's lag until all are 0 twice in a row, or ``timeout``; the last lags.

    Groups are read in pipeline order, so a 0 downstream read after a 0 upstream includes what
    the upstream worker published. A service that publishes through an outbox (after its commit)
    names it in ``outboxes`` (service → messages pending): read right after its group, an empty
    outbox means everything it committed is on the broker before the next group is read."""
    started = time.monotonic()
    probes = [GroupProbe(bootstrap, g) for g in groups]
    lags: dict[str, int] = {}
    try:
        for probe in probes:
            await probe.start()
        zero_rounds = 0
        last_report = started
        while True:
            lags = {}
            for p in probes:
                lags[p.group.service] = await p.lag()
                if p.group.service in (outboxes or {}):
                    lags[f"{p.group.service} outbox"] = await (outboxes or {})[p.group.service]()
            zero_rounds = zero_rounds + 1 if not any(lags.values()) else 0
            now = time.monotonic()
            if zero_rounds >= 2 or now - started >= timeout:
                return lags
            if now - last_report >= report_every:
                report(lags, now - started)
                last_report = now
            await asyncio.sleep(0.2)
    finally:
        for probe in probes:
            await probe.stop()
