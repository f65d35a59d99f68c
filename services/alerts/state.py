"""Customer state rows ↔ ``CustomerState`` (asyncpg, inside the caller's transaction)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from services.alerts.model import EngagementModel
from services.alerts.scoring import Aggregates


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def loads(value: Any, default: Any) -> Any:
    """jsonb from asyncpg: already decoded by SQLAlchemy's codec, or text on a bare connection."""
    if isinstance(value, str | bytes):
        return orjson.loads(value)
    return default if value is None else value


@dataclass
class CustomerState:
    tenant_id: str
    customer_id: str
    account_id: str | None = None
    segment: str = "default"
    traits: dict[str, Any] = field(default_factory=dict)
    agg: Aggregates = field(default_factory=Aggregates)
    recent_events: list[dict[str, Any]] = field(default_factory=list)
    score: float | None = None
    contributions: dict[str, Any] = field(default_factory=dict)
    recorded_score: float | None = None
    peaks: list[list[float]] = field(default_factory=list)
    rule_state: dict[str, dict[str, Any]] = field(default_factory=dict)
    open_alert_id: uuid.UUID | None = None
    open_alert_rules: list[str] | None = None
    merged_into: str | None = None
    scored_at: datetime | None = None


STATE_COLUMNS = (
    "tenant_id, customer_id, account_id, segment, traits, activity, repeats, friction, "
    "decayed_at, seats_active, seats_purchased, open_cases, last_contact_at, satisfaction, "
    "sentiment, last_event_at, recent_events, score, contributions, recorded_score, peaks, "
    "rule_state, open_alert_id, open_alert_rules, merged_into, scored_at"
)

_JSONB = {"traits", "open_cases", "recent_events", "contributions", "peaks", "rule_state",
          "open_alert_rules"}  # fmt: skip
# jsonb read as text and parsed with orjson: several times faster than the driver's json codec
SELECT_COLUMNS = ", ".join(
    f"{c}::text AS {c}" if c in _JSONB else c for c in STATE_COLUMNS.replace(" ", "").split(",")
)


def from_row(row: asyncpg.Record) -> CustomerState:
    """From a row of ``SELECT_COLUMNS`` (positional: this runs 100,000 times a decay pass)."""
    (tenant_id, customer_id, account_id, segment, traits, activity, repeats, friction, decayed_at,
     seats_active, seats_purchased, open_cases, last_contact_at, satisfaction, sentiment,
     last_event_at, recent_events, score, contributions, recorded_score, peaks, rule_state,
     open_alert_id, open_alert_rules, merged_into, scored_at) = row  # fmt: skip
    return CustomerState(
        tenant_id,
        customer_id,
        account_id,
        segment,
        loads(traits, {}),
        Aggregates(
            activity,
            repeats,
            friction,
            decayed_at,
            seats_active,
            seats_purchased,
            loads(open_cases, []),
            last_contact_at,
            satisfaction,
            sentiment,
            last_event_at,
        ),
        loads(recent_events, []),
        score,
        loads(contributions, {}),
        recorded_score,
        loads(peaks, []),
        loads(rule_state, {}),
        open_alert_id,
        loads(open_alert_rules, None),
        merged_into,
        scored_at,
    )


async def lock_states(
    conn: asyncpg.Connection, tenant_id: str, customer_ids: list[str]
) -> dict[str, CustomerState]:
    """Load (and row-lock, in key order) the customers' states; unknown ones are absent."""
    rows = await conn.fetch(
        f"SELECT {SELECT_COLUMNS} FROM alerts.customer_state "
        "WHERE tenant_id = $1 AND customer_id = ANY($2::text[]) "
        "ORDER BY customer_id FOR UPDATE",
        tenant_id,
        sorted(set(customer_ids)),
    )
    states = {r["customer_id"]: from_row(r) for r in rows}
    await forget_closed_alerts(conn, list(states.values()))
    return states


async def forget_closed_alerts(conn: asyncpg.Connection, states: list[CustomerState]) -> None:
    """An alert resolved by hand (API) no longer counts as the customer's open alert."""
    open_ids = [s.open_alert_id for s in states if s.open_alert_id is not None]
    if not open_ids:
        return
    closed = {
        r["id"]
        for r in await conn.fetch(
            "SELECT id FROM alerts.alert WHERE id = ANY($1::uuid[]) AND status = 'resolved'",
            open_ids,
        )
    }
    for s in states:
        if s.open_alert_id in closed:
            s.open_alert_id, s.open_alert_rules = None, None


async def load_models(conn: asyncpg.Connection, tenants: list[str]) -> dict[str, EngagementModel]:
    rows = await conn.fetch(
        "SELECT tenant_id, model FROM alerts.engagement_model WHERE tenant_id = ANY($1::text[])",
        tenants,
    )
    found = {r["tenant_id"]: EngagementModel.model_validate(loads(r["model"], {})) for r in rows}
    return {t: found.get(t) or EngagementModel() for t in tenants}


_UPSERT = f"""
INSERT INTO alerts.customer_state ({STATE_COLUMNS}, updated_at)
SELECT *, now() FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::float8[], $7::float8[],
    $8::float8[], $9::timestamptz[], $10::int[], $11::int[], $12::jsonb[], $13::timestamptz[],
    $14::float8[], $15::float8[], $16::timestamptz[], $17::jsonb[], $18::float8[], $19::jsonb[],
    $20::float8[], $21::jsonb[], $22::jsonb[], $23::uuid[], $24::jsonb[], $25::text[],
    $26::timestamptz[])
ON CONFLICT (tenant_id, customer_id) DO UPDATE SET
""" + ", ".join(
    f"{c} = EXCLUDED.{c}" for c in [*STATE_COLUMNS.replace(" ", "").split(",")[2:], "updated_at"]
)


async def save_states(conn: asyncpg.Connection, states: list[CustomerState]) -> None:
    if not states:
        return
    cols: list[list[Any]] = [[] for _ in range(26)]
    for s in states:
        a = s.agg
        values = (
            s.tenant_id,
            s.customer_id,
            s.account_id,
            s.segment,
            dumps(s.traits),
            a.activity,
            a.repeats,
            a.friction,
            a.decayed_at,
            a.seats_active,
            a.seats_purchased,
            dumps(a.open_cases),
            a.last_contact_at,
            a.satisfaction,
            a.sentiment,
            a.last_event_at,
            dumps(s.recent_events),
            s.score,
            dumps(s.contributions),
            s.recorded_score,
            dumps(s.peaks),
            dumps(s.rule_state),
            s.open_alert_id,
            dumps(s.open_alert_rules) if s.open_alert_rules is not None else None,
            s.merged_into,
            s.scored_at,
        )
        for col, value in zip(cols, values, strict=True):
            col.append(value)
    await conn.execute(_UPSERT, *cols)
