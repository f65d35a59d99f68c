"""SQL fragments shared by the FCR, pain-point and health queries over ``journey.map_step``.

Values always travel as parameters; only fixed column names and operators are formatted in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from services.journey.maps.rules import SEGMENTS
from services.journey.quality.policy import FcrPolicy, parse_window


@dataclass
class Params:
    """Positional parameters of one statement ($1 is always the tenant)."""

    values: list[Any] = field(default_factory=list)

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def range_filter(
    p: Params, start: date, end: date, segment: dict[str, str], *, contacts: bool = False
) -> str:
    """Rows of the tenant (already $1) with their step's UTC day in [start, end)."""
    clauses = [
        "tenant_id = $1",
        f"day >= {p.add(start)}",
        f"day < {p.add(end)}",
    ]
    if contacts:
        clauses.append("contact")
    for trait, value in sorted(segment.items()):
        assert trait in SEGMENTS
        clauses.append(f"{trait} = {p.add(value)}")
    return " AND ".join(clauses)


def policy_window(p: Params, policy: FcrPolicy) -> str:
    """Each contact's window under the policy (µs): the first matching override in
    ``ranked()`` order, else the default (as ``FcrPolicy.window_for``)."""
    branches = []
    for o in policy.ranked():
        conds = []
        if o.reason is not None:
            conds.append(f"reason = {p.add(o.reason)}")
        if o.channel is not None:
            conds.append(f"channel = {p.add(o.channel)}")
        for trait, value in sorted(o.segment.items()):
            assert trait in SEGMENTS
            conds.append(f"{trait} = {p.add(value)}")
        branches.append(f"WHEN {' AND '.join(conds)} THEN {p.add(parse_window(o.window))}::bigint")
    default = f"{p.add(policy.default_us)}::bigint"
    return f"(CASE {' '.join(branches)} ELSE {default} END)" if branches else default


def further_gap(*, same_reason: bool, reopen_counts: bool) -> str:
    """The gap to the further contact that makes a contact a repeat (``rules.further_gap``)."""
    gap = "next_same_us" if same_reason else "next_any_us"
    return f"least({gap}, reopen_us)" if reopen_counts else gap


def group_expr(by: str) -> str:
    """``reason``, ``channel``, ``agent_team``, ``touchpoint``, ``edge`` or ``segment.<trait>``
    (validated by the caller) as a SQL expression; rows without a value group under ``(none)``."""
    if by.startswith("segment."):
        trait = by.removeprefix("segment.")
        assert trait in SEGMENTS
        return f"coalesce({trait}, '(none)')"
    return {
        "reason": "coalesce(reason, '(none)')",
        "channel": "channel",
        "agent_team": "coalesce(team, '(none)')",
        "touchpoint": "activity",
        "edge": "prev_activity || '>' || activity",
    }[by]


def to_us(t: datetime) -> int:
    return (t.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // _MICRO


_MICRO = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)
