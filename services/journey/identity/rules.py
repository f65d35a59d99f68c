"""Identity resolution rules: pure functions, no I/O.

Given the identifiers an event carries (with how this event verified them) and the customers
that currently hold each identifier, decide what happens: a new customer, a match, a merge of
several customers, a provisional link (kept apart), or nothing at all (blocked). Every decision
names the rule that made it, so merges can be audited and explained.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from typing import NamedTuple

from shared.events import (
    STRONG_VERIFICATION,
    IdentifierType,
    Verification,
    is_junk_value,
    verification_strength,
)

CUSTOMER_NAMESPACE = uuid.UUID("7f0f5c1e-3b7a-4e55-9c39-4a2f8b7d1e01")


class Outcome(StrEnum):
    new = "new"
    matched = "matched"
    merged = "merged"
    provisional = "provisional"
    blocked = "blocked"


class Rule(StrEnum):
    """Why a resolution or a merge was decided (a bounded set: also a metric label)."""

    new_identifiers = "new_identifiers"
    known_identifier = "known_identifier"
    ambiguous_best_holder = "ambiguous_best_holder"
    strong_link = "strong_link"
    weak_link_single_strong = "weak_link_single_strong"
    weak_link_between_strong = "weak_link_between_strong"
    junk_identifier = "junk_identifier"
    shared_identifier = "shared_identifier"
    manual = "manual"


@dataclass(frozen=True)
class Claim:
    """One identifier as an event presents it."""

    type: IdentifierType
    value: str
    verified_by: Verification | None = None
    key: str = field(init=False, compare=False)
    strength: int = field(init=False, compare=False)
    junk: bool = field(init=False, compare=False)  # never links anyone (``is_junk_value``)
    # The enums' values, read once (``Enum.value`` is a Python property; the worker reads
    # them for every link of every event).
    type_value: str = field(init=False, compare=False)
    verified_value: str | None = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "type_value", self.type.value)
        object.__setattr__(
            self, "verified_value", self.verified_by.value if self.verified_by else None
        )
        object.__setattr__(self, "key", f"{self.type.value}:{self.value}")
        object.__setattr__(self, "strength", verification_strength(self.verified_by))
        object.__setattr__(self, "junk", is_junk_value(self.type, self.value))


# Bounded by what it is for: a customer's identifiers come back with each of its events, close
# together (a batch is 500 records). Each entry costs ~400 bytes: 65,536 of them held 26 MB,
# which a worker that has seen that many identifiers never gave back.
@lru_cache(maxsize=4_096)
def claim_of(id_type: IdentifierType, value: str, verified_by: Verification | None) -> Claim:
    """A ``Claim``, shared between the events that present the same identifier the same way
    (it is immutable): the worker builds one per identifier of every event."""
    return Claim(id_type, value, verified_by)


class Holder(NamedTuple):
    """A customer (already resolved through merges) holding an identifier. A named tuple: the
    worker builds one per holder of every identifier of every event (a frozen dataclass's
    ``__init__`` costs ~2.4× as much)."""

    customer_id: uuid.UUID
    link_strength: int  # how strongly this identifier was tied to that customer
    customer_strength: int  # the customer's strongest identifier
    created_at: datetime
    last_seen_at: datetime


@dataclass(frozen=True)
class MergeStep:
    merged_id: uuid.UUID
    rule: Rule
    via: str  # the identifier key on the losing side that bridged


@dataclass(frozen=True)
class ProvisionalLink:
    other_id: uuid.UUID
    via: str
    strength: int


@dataclass
class Resolution:
    outcome: Outcome
    rule: Rule
    customer_id: uuid.UUID | None  # None with outcome new: create one; None when blocked
    link: list[Claim] = field(default_factory=list)  # claims to tie to the customer
    merges: list[MergeStep] = field(default_factory=list)
    provisional: list[ProvisionalLink] = field(default_factory=list)
    ignored: list[tuple[str, Rule]] = field(default_factory=list)


def new_customer_id(tenant: str, event_id: str) -> uuid.UUID:
    """Deterministic: re-applying the same event (retry, replay) yields the same customer id."""
    return uuid.uuid5(CUSTOMER_NAMESPACE, f"{tenant}|{event_id}")


def _holder_rank(h: Holder) -> tuple[int, datetime]:
    return (h.link_strength, h.last_seen_at)


def resolve(
    claims: Sequence[Claim],
    holders: Mapping[str, Sequence[Holder]],
    *,
    share_limit: Callable[[str], int],
) -> Resolution:
    """Decide who the event belongs to. ``holders`` maps identifier key → distinct customers."""
    usable: list[tuple[Claim, Sequence[Holder]]] = []
    ignored: list[tuple[str, Rule]] = []
    for claim in _dedupe(claims):
        found = holders.get(claim.key, ())
        if claim.junk:
            ignored.append((claim.key, Rule.junk_identifier))
        elif len(found) >= share_limit(claim.type_value):
            ignored.append((claim.key, Rule.shared_identifier))
        else:
            usable.append((claim, found))
    if not usable:
        rule = Rule.shared_identifier
        if all(r is Rule.junk_identifier for _, r in ignored):
            rule = Rule.junk_identifier
        return Resolution(Outcome.blocked, rule, None, ignored=ignored)

    # Evidence per candidate: the strongest verification, in this event, of an identifier that
    # only that customer holds. Identifiers held by several customers (below the share limit)
    # are ambiguous: they never bridge customers, they only place an event nobody else claims.
    evidence: dict[uuid.UUID, int] = {}
    via: dict[uuid.UUID, str] = {}
    info: dict[uuid.UUID, Holder] = {}
    ambiguous: list[tuple[Claim, Sequence[Holder]]] = []
    unheld: list[Claim] = []
    for claim, found in usable:
        if not found:
            unheld.append(claim)
        elif len(found) == 1:
            h = found[0]
            info[h.customer_id] = h
            if claim.strength > evidence.get(h.customer_id, -1):
                evidence[h.customer_id] = claim.strength
                via[h.customer_id] = claim.key
        else:
            ambiguous.append((claim, found))

    if not evidence:
        if ambiguous and not unheld:
            claim, found = max(ambiguous, key=lambda cf: _holder_rank(max(cf[1], key=_holder_rank)))
            best = max(found, key=_holder_rank)
            return Resolution(
                Outcome.matched,
                Rule.ambiguous_best_holder,
                best.customer_id,
                link=[claim, *unheld],
                ignored=ignored,
            )
        # New identifiers: a new customer. Ambiguous ones are tied to it too (the evidence that
        # a number is shared accumulates until it reaches the share limit).
        link = unheld + [c for c, _ in ambiguous]
        return Resolution(Outcome.new, Rule.new_identifiers, None, link=link, ignored=ignored)

    # Target: the customer this event proves best, then the best-identified, then the oldest.
    def rank(cid: uuid.UUID) -> tuple[int, int, float]:
        return (evidence[cid], info[cid].customer_strength, -info[cid].created_at.timestamp())

    ordered = sorted(evidence, key=rank, reverse=True)
    target = ordered[0]
    fresh = max((c.strength for c in unheld), default=0)
    if (
        evidence[target] < STRONG_VERIFICATION
        and fresh >= STRONG_VERIFICATION
        and info[target].customer_strength >= STRONG_VERIFICATION
    ):
        # A new, strongly verified identity reached a strongly identified customer only through
        # weak evidence (a caller ID, a cookie): most likely two people sharing a phone or a
        # device. Keep them apart: a new customer, provisionally linked to the others.
        return Resolution(
            Outcome.provisional,
            Rule.weak_link_between_strong,
            None,
            link=[c for c, _ in usable],
            provisional=[ProvisionalLink(cid, via[cid], evidence[cid]) for cid in ordered],
            ignored=ignored,
        )
    own = [c for c, found in usable if len(found) == 1 and found[0].customer_id == target]
    held_by_target = [c for c, found in ambiguous if any(h.customer_id == target for h in found)]
    resolution = Resolution(
        Outcome.matched,
        Rule.known_identifier,
        target,
        link=[*own, *held_by_target, *unheld],
        ignored=ignored,
    )
    for other in ordered[1:]:
        bridge = min(evidence[target], evidence[other])
        both_strong = (
            info[target].customer_strength >= STRONG_VERIFICATION
            and info[other].customer_strength >= STRONG_VERIFICATION
        )
        if bridge >= STRONG_VERIFICATION:
            resolution.merges.append(MergeStep(other, Rule.strong_link, via[other]))
        elif not both_strong:
            resolution.merges.append(MergeStep(other, Rule.weak_link_single_strong, via[other]))
        else:
            resolution.provisional.append(ProvisionalLink(other, via[other], bridge))
            # The weak identifier is a real observation for this person too: tie it to the
            # target as well (it now has two holders and so stops placing events on its own).
            resolution.link.extend(
                c for c, found in usable if len(found) == 1 and found[0].customer_id == other
            )
    if resolution.merges:
        resolution.outcome = Outcome.merged
        resolution.rule = resolution.merges[0].rule
    elif resolution.provisional:
        resolution.outcome = Outcome.provisional
        resolution.rule = Rule.weak_link_between_strong
    return resolution


def _dedupe(claims: Sequence[Claim]) -> list[Claim]:
    """One claim per identifier key, keeping the strongest verification."""
    best: dict[str, Claim] = {}
    for c in claims:
        if c.key not in best or c.strength > best[c.key].strength:
            best[c.key] = c
    return list(best.values())


@dataclass(frozen=True)
class EventSide:
    """For a split: which identifiers an event applied after the merge carried."""

    event_id: str
    keys: frozenset[str]


def split_attribution(
    events: Sequence[EventSide], *, restored_keys: set[str], survivor_keys: set[str]
) -> list[str]:
    """Events applied since a merge (in application order) that go back to the restored customer.

    An event moves when it carried an identifier of the restored side and none of the
    survivor's; one carrying both stays with the survivor (the merge evidence lives there). New
    identifiers first seen on a moved event join the restored side for the events after it."""
    restored, survivor = set(restored_keys), set(survivor_keys)
    moved: list[str] = []
    for ev in events:
        if ev.keys & restored and not ev.keys & survivor:
            moved.append(ev.event_id)
            restored |= ev.keys
        else:
            survivor |= ev.keys - restored
    return moved
