"""Producing many keyed messages at once: one record batch per partition, one future per batch.

For one producer used by one batch at a time (the worker). Concurrent callers should use
``producer.send``: aiokafka queues whole batches one at a time per partition.

``producer.send`` costs a future, a partitioner call and a callback per message, which was the
worker's second-largest cost; building the batches here keeps Kafka's default partitioning
(murmur2 of the key), so one key's messages stay in one partition and in order.

A message too large to publish is a fault of that one record, never a reason to stall: it is
refused (and returned to the caller to dead-letter), whether the client's ``max_request_size``
or the broker's ``message.max.bytes`` says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError
from aiokafka.partitioner import murmur2
from aiokafka.record.default_records import DefaultRecordBatchBuilder

Headers = list[tuple[str, bytes]]
TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)
_DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024  # aiokafka's default max_request_size


@lru_cache(maxsize=200_000)
def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner for a keyed message (same as the Java client's)."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


def message_bytes(key: bytes | None, value: bytes | None, headers: Headers | None = None) -> int:
    """Upper bound of one message's size in a request (what ``max_request_size`` limits)."""
    size: int = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers or [])
    return size


def too_large(key: bytes | None, value: bytes | None, limit: int) -> bool:
    # The exact estimate costs a microsecond; the record overhead is far below 256 bytes.
    return len(key or b"") + len(value or b"") + 256 > limit and message_bytes(key, value) > limit


def max_message_bytes(producer: AIOKafkaProducer) -> int:
    """The largest message ``producer`` sends (its ``max_request_size``; aiokafka keeps it
    private). ``send`` enforces it; ``send_batch`` does not, so ``publish`` checks it."""
    return int(getattr(producer, "_max_request_size", _DEFAULT_MAX_REQUEST_BYTES))


# The normalized topic carries structured-mode CloudEvents: the Kafka binding (§3.2) says so
# with this header, so a generic CloudEvents consumer reads them without guessing.
STRUCTURED_HEADERS: Headers = [("content-type", b"application/cloudevents+json; charset=utf-8")]


async def publish(
    producer: AIOKafkaProducer,
    topic: str,
    messages: Sequence[tuple[bytes, bytes]],
    headers: Headers | None = None,
) -> list[int]:
    """Produce ``(key, value)`` messages, each with ``headers``, and wait until the broker
    acknowledged all of them.

    Returns the indexes of the messages refused as too large (nothing else is skipped: any
    other error is raised, and the caller retries)."""
    if not messages:
        return []
    limit = max_message_bytes(producer)
    extra = list(headers or [])
    count = len(await producer.partitions_for(topic))
    refused: list[int] = []
    by_partition: dict[int, list[int]] = {}
    for index, (key, value) in enumerate(messages):
        if too_large(key, value, limit):
            refused.append(index)
        else:
            by_partition.setdefault(partition_of(key, count), []).append(index)
    sent: list[tuple[int, list[int], asyncio.Future[object]]] = []
    for partition, indexes in by_partition.items():
        batch, members = producer.create_batch(), list[int]()
        for index in indexes:
            key, value = messages[index]
            appended = batch.append(key=key, value=value, timestamp=None, headers=extra)
            if appended is None:  # the batch is full
                sent.append((partition, members, await _send(producer, batch, topic, partition)))
                batch, members = producer.create_batch(), list[int]()
                batch.append(key=key, value=value, timestamp=None, headers=extra)  # takes any
            members.append(index)
        sent.append((partition, members, await _send(producer, batch, topic, partition)))
    outcomes = await asyncio.gather(*(future for _, _, future in sent), return_exceptions=True)
    for (partition, members, _), outcome in zip(sent, outcomes, strict=True):
        if isinstance(outcome, TOO_LARGE):  # the broker's limit: find which ones, send the rest
            refused.extend(await _one_by_one(producer, topic, partition, messages, members, extra))
        elif isinstance(outcome, BaseException):
            raise outcome
    return sorted(refused)


async def _send(
    producer: AIOKafkaProducer, batch: Any, topic: str, partition: int
) -> asyncio.Future[object]:
    batch.close()
    future: asyncio.Future[object] = await producer.send_batch(batch, topic, partition=partition)
    return future


async def _one_by_one(
    producer: AIOKafkaProducer,
    topic: str,
    partition: int,
    messages: Sequence[tuple[bytes, bytes]],
    members: list[int],
    headers: Headers,
) -> list[int]:
    refused = []
    for index in members:
        key, value = messages[index]
        try:
            await producer.send_and_wait(
                topic, value, key=key, partition=partition, headers=headers or None
            )
        except TOO_LARGE:
            refused.append(index)
    return refused


DeadLetter = tuple[bytes | None, bytes | None, Headers]  # key, value, headers


async def send_dead_letters(
    producer: AIOKafkaProducer, topic: str, letters: Sequence[DeadLetter], *, fallback_bytes: int
) -> None:
    """Produce dead letters in order and wait for all. One too large to publish whole is cut to
    fit (the ``waypoint-truncated`` header gives its original size; the source topic keeps it
    all): to the client's limit first, to ``fallback_bytes`` if the broker still refuses it."""
    futures = [
        await producer.send(topic, value, key=key, headers=headers)
        for key, value, headers in (_fit(producer, letter) for letter in letters)
    ]
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    for (key, value, headers), outcome in zip(letters, outcomes, strict=True):
        if isinstance(outcome, TOO_LARGE) and len(value or b"") > fallback_bytes:
            cut = [*headers, _truncated(len(value or b""))]
            await producer.send_and_wait(
                topic, (value or b"")[:fallback_bytes], key=key, headers=cut
            )
        elif isinstance(outcome, BaseException):
            raise outcome


def _fit(producer: AIOKafkaProducer, letter: DeadLetter) -> DeadLetter:
    key, value, headers = letter
    limit = max_message_bytes(producer)
    if value is None or message_bytes(key, value, headers) <= limit:
        return letter
    cut = [*headers, _truncated(len(value))]
    room = limit - message_bytes(key, None, cut) - 16  # 16: the value's length prefix and more
    return key, value[: max(room, 0)], cut


def _truncated(size: int) -> tuple[str, bytes]:
    return ("waypoint-truncated", str(size).encode())
