"""Sealing the sensitive value of a validated event before it is stored or published."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from shared.events import Envelope
from shared.privacy.crypto import Keyring
from shared.privacy.masking import MASK, SEALED, SENSITIVE_FIELD


def needs_sealing(envelope: Envelope) -> bool:
    name = SENSITIVE_FIELD.get(str(envelope.type))
    data = envelope.data
    return (
        name is not None
        and bool(getattr(data, "sensitive", False))
        and getattr(data, name, None) not in (None, MASK)
    )


def tenants_to_seal(envelopes: Iterable[Envelope]) -> set[str]:
    return {e.tenant for e in envelopes if needs_sealing(e)}


def seal(envelope: Envelope, keyring: Keyring) -> None:
    """In place: the sensitive value replaced by ``MASK`` and kept sealed in ``data.sealed``.
    A ``sealed`` field sent from outside is dropped first (only Waypoint seals)."""
    extra: dict[str, Any] | None = envelope.data.__pydantic_extra__
    if extra is not None:
        extra.pop(SEALED, None)
    if not needs_sealing(envelope):
        return
    name = SENSITIVE_FIELD[str(envelope.type)]
    token = keyring.seal(envelope.tenant, getattr(envelope.data, name))
    setattr(envelope.data, name, MASK)
    if extra is not None:
        extra[SEALED] = {name: token}


def seal_raw(tenant: str, event_type: str, data: dict[str, Any], keyring: Keyring) -> None:
    """The same for an event still as a dict (journey's facts recorded by agents)."""
    data.pop(SEALED, None)
    name = SENSITIVE_FIELD.get(event_type)
    if name is None or not data.get("sensitive") or data.get(name) in (None, MASK):
        return
    data[SEALED] = {name: keyring.seal(tenant, data[name])}
    data[name] = MASK
