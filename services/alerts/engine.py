"""The engagement engine: customer activity → aggregates → score → rules → alerts + outbox.

``rescore`` is pure (state and model in, state changes and ``Effects`` out); ``process_activities``
and ``write_effects`` do the I/O inside the caller's transaction (the consumer's batch, or one
scheduler batch). Idempotent on (tenant, activity id): a replayed activity changes nothing.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.alerts.engagement import mark_changed
from services.alerts.model import EngagementModel, Rule
from services.alerts.rules import evaluate, peak_within
from services.alerts.scoring import apply_event, merge, parse_time, score
from services.alerts.state import (
    CustomerState,
    dumps,
    load_models,
    lock_states,
    save_states,
)
from services.alerts.tables import OUTBOX_CHANNEL
from shared.events.activity import CustomerActivity

RECENT_EVENTS = 10
SUMMARY_FIELDS = (
    "channel", "direction", "feature", "active_seats", "purchased_seats", "survey", "score",
    "sentiment", "case_id", "reason", "status", "where", "wait_s", "resolved", "to_queue",
    "touchpoint",
)  # fmt: skip
CHURNED_TRAIT = "waypoint_churned"
LEAD_TIME_HORIZON = timedelta(days=180)
HISTORY_COLUMNS = [
    "tenant_id", "customer_id", "scored_at", "score", "previous_score", "delta", "segment",
    "cause", "contributions", "event_ids",
]  # fmt: skip


@dataclass
class Effects:
    history: list[tuple[Any, ...]] = field(default_factory=list)
    opened: list[dict[str, Any]] = field(default_factory=list)
    extended: list[tuple[uuid.UUID, list[str]]] = field(default_factory=list)
    resolved: list[tuple[uuid.UUID, str, str]] = field(default_factory=list)  # id, why, rule
    churn: list[tuple[Any, ...]] = field(default_factory=list)
    # customers whose engagement (score or open alert) changed: published to journey
    changed: set[tuple[str, str]] = field(default_factory=set)
    applied: int = 0
    duplicates: int = 0


def activity_id(activity: CustomerActivity) -> str:
    """The idempotency key: the event id, or a deterministic id for merges and splits."""
    if activity.kind == "event" and activity.event and activity.event.get("id"):
        return f"event:{activity.event['id']}"
    others = ",".join(sorted(activity.merged_ids or activity.split_ids))
    return f"{activity.kind}:{activity.customer_id}:{activity.occurred_at.isoformat()}:{others}"[
        :300
    ]


def summarize(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data")
    data = data if isinstance(data, dict) else {}
    summary = {"id": event.get("id"), "type": event.get("type"), "time": event.get("time")}
    summary.update({k: data[k] for k in SUMMARY_FIELDS if data.get(k) is not None})
    return summary


def explanation_text(explanation: dict[str, Any]) -> str:
    change = explanation.get("change")
    moved = f" ({change:+.1f} since the previous score)" if change is not None else ""
    weakest = sorted(
        explanation["max_points"],
        key=lambda f: explanation["contributions"][f] - explanation["max_points"][f],
    )[:2]
    parts = ", ".join(
        f"{f} {explanation['contributions'][f]:.1f}/{explanation['max_points'][f]:.1f}"
        for f in weakest
    )
    return (
        f"Engagement {explanation['score']:.1f} vs threshold {explanation['threshold']:.0f}"
        f"{moved}; rules: {', '.join(explanation['rules'])}; weakest factors: {parts}"
    )


def rescore(
    state: CustomerState,
    model: EngagementModel,
    now: datetime,
    effects: Effects,
    *,
    cause: str,
    event_ids: list[str] | None = None,
    default_owner: str = "unassigned",
) -> None:
    """Score the customer at ``now``, run the rules and record what follows in ``effects``."""
    resolved = model.for_segment(state.segment)
    result = score(state.agg, resolved.weights, resolved.params, now)
    previous = state.score
    state.score, state.scored_at = result.value, now
    state.contributions = {
        "points": result.contributions,
        "factors": result.factors,
        "max_points": result.max_points,
    }
    if (
        cause != "decay"
        or state.recorded_score is None
        or abs(result.value - state.recorded_score) >= 1.0
    ):
        delta = None if state.recorded_score is None else result.value - state.recorded_score
        effects.history.append(
            (state.tenant_id, state.customer_id, now, result.value, state.recorded_score, delta,
             state.segment, cause, dumps(state.contributions), dumps(event_ids or []))
        )  # fmt: skip
        state.recorded_score = result.value
        effects.changed.add((state.tenant_id, state.customer_id))
    if state.traits.get(CHURNED_TRAIT):
        return
    th = resolved.thresholds
    ev = evaluate(
        th,
        state.rule_state,
        score=result.value,
        peaks=state.peaks,
        now=now,
        open_rules=state.open_alert_rules if state.open_alert_id else None,
    )
    state.rule_state, state.peaks = ev.states, ev.peaks
    if ev.fired or (ev.resolve and state.open_alert_id is not None):
        effects.changed.add((state.tenant_id, state.customer_id))
    if ev.fired and state.open_alert_id is not None:
        effects.extended.append((state.open_alert_id, [r.value for r in ev.fired]))
        state.open_alert_rules = [*(state.open_alert_rules or []), *(r.value for r in ev.fired)]
    elif ev.fired:
        rules = [r.value for r in ev.fired]
        explanation: dict[str, Any] = {
            "score": result.value,
            "threshold": th.alert_below,
            "previous_score": previous,
            "change": None if previous is None else round(result.value - previous, 2),
            "segment": state.segment,
            "rules": rules,
            "contributions": result.contributions,
            "max_points": result.max_points,
            "factors": result.factors,
            "cause": cause,
            "event_ids": event_ids or [],
            "last_event_at": state.agg.last_event_at.isoformat()
            if state.agg.last_event_at
            else None,
            "recent_events": state.recent_events[-5:],
        }
        if Rule.score_drop in ev.fired:
            explanation["drop"] = {
                "peak": peak_within(ev.peaks, th.drop_days, now),
                "days": th.drop_days,
                "points": th.drop_points,
            }
        explanation["summary"] = explanation_text(explanation)
        alert_id = uuid.uuid4()
        effects.opened.append(
            {
                "id": alert_id,
                "tenant_id": state.tenant_id,
                "customer_id": state.customer_id,
                "account_id": state.account_id,
                "rule": rules[0],
                "rules": rules,
                "owner": str(state.traits.get("csm_owner") or model.default_owner or default_owner)[
                    :128
                ],
                "segment": state.segment,
                "score": result.value,
                "threshold": th.alert_below,
                "explanation": explanation,
                "opened_at": now,
            }
        )
        state.open_alert_id, state.open_alert_rules = alert_id, rules
    elif ev.resolve and state.open_alert_id is not None:
        effects.resolved.append(
            (state.open_alert_id, "recovered", (state.open_alert_rules or ["?"])[0])
        )
        state.open_alert_id, state.open_alert_rules = None, None


def _apply(state: CustomerState, activity: CustomerActivity, model: EngagementModel) -> None:
    if activity.traits:
        state.traits = {**state.traits, **activity.traits}
    state.account_id = activity.account_id or state.account_id
    state.segment = model.segment_of(state.traits)
    event = activity.event or {}
    state.agg = apply_event(state.agg, event, model.for_segment(state.segment).params)
    if event.get("type") == "customer.churned":
        state.traits[CHURNED_TRAIT] = True
    elif event.get("type") == "customer.renewed":
        state.traits.pop(CHURNED_TRAIT, None)
    state.recent_events = sorted(
        [*state.recent_events, summarize(event)], key=lambda e: str(e.get("time"))
    )[-RECENT_EVENTS:]


async def process_activities(
    conn: asyncpg.Connection,
    activities: list[CustomerActivity],
    *,
    now: datetime,
    default_owner: str,
) -> Effects:
    """Apply a batch of activities (in order) inside the caller's transaction."""
    effects = Effects()
    ids = [activity_id(a) for a in activities]
    fresh = {
        (r["tenant_id"], r["activity_id"])
        for r in await conn.fetch(
            "INSERT INTO alerts.processed_activity (tenant_id, activity_id) "
            "SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING "
            "RETURNING tenant_id, activity_id",
            [a.tenant for a in activities],
            ids,
        )
    }
    by_tenant: dict[str, list[CustomerActivity]] = defaultdict(list)
    for activity, aid in zip(activities, ids, strict=True):
        if (activity.tenant, aid) in fresh:
            fresh.discard((activity.tenant, aid))  # a duplicate inside the batch applies once
            by_tenant[activity.tenant].append(activity)
        else:
            effects.duplicates += 1
    models = await load_models(conn, sorted(by_tenant))
    for tenant, items in sorted(by_tenant.items()):  # one lock order across workers
        model = models[tenant]
        wanted = [c for a in items for c in (a.customer_id, *a.merged_ids)]
        states = await lock_states(conn, tenant, wanted)
        touched: dict[str, list[str]] = {}
        causes: dict[str, str] = {}
        for activity in items:
            state = states.get(activity.customer_id) or CustomerState(tenant, activity.customer_id)
            states[activity.customer_id] = state
            state.merged_into = None
            event_ids = touched.setdefault(activity.customer_id, [])
            if activity.kind == "event":
                _apply(state, activity, model)
                if activity.event and activity.event.get("id"):
                    event_ids.append(str(activity.event["id"]))
                _record_outcome(state, activity, effects)
                causes.setdefault(activity.customer_id, "event")
            elif activity.kind == "merged":
                params = model.for_segment(state.segment).params
                for other_id in activity.merged_ids:
                    other = states.get(other_id)
                    if other is None or other_id == activity.customer_id:
                        continue
                    state.agg = merge(state.agg, other.agg, params)
                    other.merged_into = activity.customer_id
                    if other.open_alert_id is not None:
                        rule = (other.open_alert_rules or ["?"])[0]
                        effects.resolved.append((other.open_alert_id, "merged", rule))
                        other.open_alert_id, other.open_alert_rules = None, None
                    effects.changed.add((other.tenant_id, other.customer_id))
                causes[activity.customer_id] = "merge"
            else:  # split: the parts build their own state from their next events
                causes.setdefault(activity.customer_id, "split")
            effects.applied += 1
        for customer_id, event_ids in touched.items():
            rescore(
                states[customer_id],
                model,
                now,
                effects,
                cause=causes[customer_id],
                event_ids=event_ids,
                default_owner=default_owner,
            )
        await save_states(conn, list(states.values()))
    await write_effects(conn, effects)
    return effects


def _record_outcome(state: CustomerState, activity: CustomerActivity, effects: Effects) -> None:
    event = activity.event or {}
    if event.get("type") not in {"customer.churned", "customer.renewed"}:
        return
    outcome = "churned" if event["type"] == "customer.churned" else "renewed"
    data = event.get("data")
    reason = data.get("reason") if isinstance(data, dict) else None
    occurred = parse_time(event.get("time")) or activity.occurred_at
    effects.churn.append(
        (state.tenant_id, activity_id(activity)[:256], state.customer_id, outcome,
         str(reason)[:256] if reason else None, state.segment, occurred)
    )  # fmt: skip
    if outcome == "churned" and state.open_alert_id is not None:
        rule = (state.open_alert_rules or ["?"])[0]
        effects.resolved.append((state.open_alert_id, "churned", rule))
        state.open_alert_id, state.open_alert_rules = None, None
        effects.changed.add((state.tenant_id, state.customer_id))


async def write_effects(conn: asyncpg.Connection, effects: Effects) -> int:
    """History, alerts (+ their outbox rows, same transaction), resolutions (+ a notice to the
    channels told of the opening), churn outcomes, and the engagement changes to publish. Returns
    the number of outbox rows written (a NOTIFY wakes the notifiers at commit)."""
    if effects.history:
        await conn.copy_records_to_table(
            "score_history",
            schema_name="alerts",
            columns=HISTORY_COLUMNS,
            records=effects.history,
        )
    outbox = 0
    if effects.opened:
        alerts = effects.opened
        payloads = [dumps(alert_payload(a)) for a in alerts]
        await conn.execute(
            "INSERT INTO alerts.alert (id, tenant_id, customer_id, account_id, rule, rules, "
            "owner, segment, score, threshold, explanation, opened_at) "
            "SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], "
            "$6::jsonb[], $7::text[], $8::text[], $9::float8[], $10::float8[], $11::jsonb[], "
            "$12::timestamptz[])",
            *(
                [a[k] for a in alerts]
                for k in ("id", "tenant_id", "customer_id", "account_id", "rule")
            ),
            [dumps(a["rules"]) for a in alerts],
            *([a[k] for a in alerts] for k in ("owner", "segment", "score", "threshold")),
            [dumps(a["explanation"]) for a in alerts],
            [a["opened_at"] for a in alerts],
        )
        outbox = await conn.fetchval(
            "WITH made AS (INSERT INTO alerts.outbox (tenant_id, alert_id, channel_id, payload) "
            "SELECT a.tenant_id, a.id, c.id, a.payload "
            "FROM unnest($1::uuid[], $2::text[], $3::jsonb[]) AS a(id, tenant_id, payload) "
            "JOIN alerts.notification_channel c ON c.tenant_id = a.tenant_id "
            "AND c.enabled AND c.deleted_at IS NULL RETURNING 1) SELECT count(*) FROM made",
            [a["id"] for a in alerts],
            [a["tenant_id"] for a in alerts],
            payloads,
        )
    if effects.extended:
        await conn.executemany(
            "UPDATE alerts.alert SET rules = rules || $2::jsonb WHERE id = $1",
            [(alert_id, dumps(rules)) for alert_id, rules in effects.extended],
        )
    if effects.resolved:
        await conn.executemany(
            "UPDATE alerts.alert SET status = 'resolved', resolved_at = now(), "
            "resolved_by = 'waypoint', resolution = $2 WHERE id = $1 AND status <> 'resolved'",
            [(alert_id, why) for alert_id, why, _rule in effects.resolved],
        )
        notices = await conn.fetchval(_RESOLVED_NOTICES, [i for i, _w, _r in effects.resolved])
        outbox += int(notices or 0)
    if outbox:
        await conn.execute("SELECT pg_notify($1, '')", OUTBOX_CHANNEL)
    for row in effects.churn:
        await conn.execute(
            "INSERT INTO alerts.churn_outcome (tenant_id, event_id, customer_id, outcome, reason, "
            "segment, occurred_at, first_alert_at, lead_time_s) "
            "SELECT $1, $2, $3, $4, $5, $6, $7, f.at, extract(epoch FROM $7 - f.at) "
            "FROM (SELECT min(opened_at) AS at FROM alerts.alert WHERE tenant_id = $1 "
            "AND customer_id = $3 AND opened_at <= $7 AND opened_at > $7 - $8::interval) f "
            "ON CONFLICT DO NOTHING",
            *row,
            LEAD_TIME_HORIZON,
        )
    await mark_changed(conn, effects.changed)
    return int(outbox or 0)


# Every channel that was sent (or is about to be sent) the opening hears of the resolution.
_RESOLVED_NOTICES = """
WITH made AS (
    INSERT INTO alerts.outbox (tenant_id, alert_id, channel_id, event, payload)
    SELECT o.tenant_id, o.alert_id, o.channel_id, 'resolved', jsonb_build_object(
        'type', 'waypoint.alert.resolved', 'alert_id', a.id::text, 'tenant', a.tenant_id,
        'customer_id', a.customer_id, 'account_id', a.account_id, 'rule', a.rule,
        'rules', a.rules, 'owner', a.owner, 'resolution', a.resolution,
        'opened_at', a.opened_at, 'resolved_at', a.resolved_at, 'score', s.score,
        'threshold', a.threshold)
    FROM alerts.outbox o
    JOIN alerts.alert a ON a.id = o.alert_id
    LEFT JOIN alerts.customer_state s
        ON s.tenant_id = a.tenant_id AND s.customer_id = a.customer_id
    WHERE o.alert_id = ANY($1::uuid[]) AND o.event = 'opened'
      AND o.status IN ('pending', 'delivered') AND a.status = 'resolved'
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM made
"""


def alert_payload(alert: dict[str, Any]) -> dict[str, Any]:
    """What channels receive (also stored on the outbox row)."""
    return {
        "type": "waypoint.alert.opened",
        "alert_id": str(alert["id"]),
        "tenant": alert["tenant_id"],
        "customer_id": alert["customer_id"],
        "account_id": alert["account_id"],
        "rule": alert["rule"],
        "rules": alert["rules"],
        "owner": alert["owner"],
        "segment": alert["segment"],
        "score": alert["score"],
        "threshold": alert["threshold"],
        "opened_at": alert["opened_at"].isoformat(),
        "explanation": alert["explanation"],
    }
