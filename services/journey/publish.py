"""Publish a write command's customer activity (manual merge, split, agent-recorded fact).

Each command is one unit of work, audited in the same transaction. The resulting customer
activity is published, and the broker's acknowledgement awaited, inside that transaction
before it commits: when the broker does not take it, nothing is stored and the client gets a
503. (The remaining gap, a COMMIT that fails after the broker took the activity, publishes a
change that was not saved; an outbox closes it.)
"""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from shared.errors import ServiceUnavailable
from shared.events.activity import CustomerActivity


async def deliver(
    producer: AIOKafkaProducer | None, topic: str, activity: CustomerActivity
) -> None:
    """Publish and await the broker's acknowledgement (called inside the command's transaction,
    so a refusal rolls the change back)."""
    if producer is None:
        return
    try:
        await producer.send_and_wait(topic, activity.to_json(), key=activity.kafka_key())
    except KafkaError as exc:
        raise ServiceUnavailable(
            f"the event broker did not acknowledge the change ({type(exc).__name__}); "
            "nothing was saved, retry"
        ) from exc
