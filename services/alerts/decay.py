"""Set-based decay rescoring: one SQL statement per batch scores every customer in PostgreSQL
with the same formula as ``scoring.score`` (a parity test holds them together) and writes the
score, contributions and history of every customer the rules cannot touch (and, when its score
moved a point or more, the engagement change journey is told of). It returns the
*candidates* — customers with an open alert, a disarmed or pending rule, a score under their
threshold or a possible drop — which go through the Python rule engine (``engine.rescore``).

Peaks (the drop rule's daily maxima) are recorded for candidates only: a decaying score is
below the peak its last event recorded, so the drop rule loses nothing by it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from services.alerts.engagement import change_upsert
from services.alerts.model import EngagementModel, Factor, ResolvedModel, Rule
from services.alerts.state import loads

# p: one row per (tenant, segment) with a model, plus ('*', 'default') for the built-in model.
DECAY_SQL = """
WITH p AS (
    SELECT * FROM unnest($5::text[], $6::text[], $7::float8[], $8::float8[], $9::float8[],
        $10::float8[], $11::float8[], $12::float8[], $13::float8[], $14::float8[], $15::float8[],
        $16::float8[], $17::float8[], $18::float8[], $19::float8[], $20::int[], $21::bool[],
        $22::bool[])
    AS p(tenant_id, segment, w_act, w_util, w_cases, w_fr, w_sat, w_sent, act_hl, act_target,
         fr_hl, case_limit, fr_limit, alert_below, drop_points, drop_days, check_below,
         check_drop)
),
batch AS (
    SELECT * FROM alerts.customer_state
    WHERE (tenant_id, customer_id) > ($1, $2) AND scored_at < $3 AND merged_into IS NULL
      AND ($23::text IS NULL OR tenant_id = $23)
    ORDER BY tenant_id, customer_id LIMIT $4 FOR UPDATE SKIP LOCKED
),
f AS (
    SELECT b.tenant_id, b.customer_id, b.segment, b.recorded_score, b.peaks, b.rule_state,
           b.open_alert_id, b.traits, m.w_act, m.w_util, m.w_cases, m.w_fr, m.w_sat, m.w_sent,
           m.alert_below, m.drop_points, m.drop_days, m.check_below, m.check_drop,
           LEAST(1.0, b.activity * power(0.5, e.el / (m.act_hl * 86400.0)) / m.act_target)
               AS f_act,
           1.0 - LEAST(1.0, (jsonb_array_length(b.open_cases)
               + b.repeats * power(0.5, e.el / (m.fr_hl * 86400.0))) / m.case_limit) AS f_cases,
           1.0 - LEAST(1.0, b.friction * power(0.5, e.el / (m.fr_hl * 86400.0)) / m.fr_limit)
               AS f_fr,
           CASE WHEN b.seats_purchased > 0 THEN
               LEAST(1.0, COALESCE(b.seats_active, 0)::float8 / b.seats_purchased) END AS f_util,
           b.satisfaction AS f_sat, b.sentiment AS f_sent
    FROM batch b
    CROSS JOIN LATERAL (
        SELECT CASE WHEN b.decayed_at IS NOT NULL AND $24::timestamptz > b.decayed_at
               THEN extract(epoch FROM $24::timestamptz - b.decayed_at)::float8 ELSE 0.0 END
               AS el
    ) e
    CROSS JOIN LATERAL (
        SELECT * FROM p WHERE p.tenant_id IN (b.tenant_id, '*')
          AND p.segment IN (b.segment, 'default')
        ORDER BY (p.tenant_id = b.tenant_id) DESC, (p.segment = b.segment) DESC LIMIT 1
    ) m
),
s AS (
    SELECT f.*, CASE WHEN t.total > 0 THEN 100.0 / t.total END AS scale
    FROM f CROSS JOIN LATERAL (
        SELECT f.w_act + f.w_cases + f.w_fr
            + CASE WHEN f.f_util IS NULL THEN 0 ELSE f.w_util END
            + CASE WHEN f.f_sat IS NULL THEN 0 ELSE f.w_sat END
            + CASE WHEN f.f_sent IS NULL THEN 0 ELSE f.w_sent END AS total
    ) t
),
r AS (
    SELECT s.tenant_id, s.customer_id, s.segment, s.recorded_score, x.new_score,
        jsonb_build_object(
            'points', jsonb_strip_nulls(jsonb_build_object(
                'activity', round((s.scale * s.w_act * s.f_act)::numeric, 2),
                'cases', round((s.scale * s.w_cases * s.f_cases)::numeric, 2),
                'friction', round((s.scale * s.w_fr * s.f_fr)::numeric, 2),
                'utilisation', round((s.scale * s.w_util * s.f_util)::numeric, 2),
                'satisfaction', round((s.scale * s.w_sat * s.f_sat)::numeric, 2),
                'sentiment', round((s.scale * s.w_sent * s.f_sent)::numeric, 2))),
            'factors', jsonb_strip_nulls(jsonb_build_object(
                'activity', round(s.f_act::numeric, 4),
                'cases', round(s.f_cases::numeric, 4),
                'friction', round(s.f_fr::numeric, 4),
                'utilisation', round(s.f_util::numeric, 4),
                'satisfaction', round(s.f_sat::numeric, 4),
                'sentiment', round(s.f_sent::numeric, 4))),
            'max_points', jsonb_strip_nulls(jsonb_build_object(
                'activity', round((s.scale * s.w_act)::numeric, 2),
                'cases', round((s.scale * s.w_cases)::numeric, 2),
                'friction', round((s.scale * s.w_fr)::numeric, 2),
                'utilisation', CASE WHEN s.f_util IS NOT NULL
                    THEN round((s.scale * s.w_util)::numeric, 2) END,
                'satisfaction', CASE WHEN s.f_sat IS NOT NULL
                    THEN round((s.scale * s.w_sat)::numeric, 2) END,
                'sentiment', CASE WHEN s.f_sent IS NOT NULL
                    THEN round((s.scale * s.w_sent)::numeric, 2) END))
        ) AS contributions,
        (s.recorded_score IS NULL OR abs(x.new_score - s.recorded_score) >= 1.0) AS record,
        -- NULL anywhere counts as a candidate: when in doubt, the Python rules decide
        COALESCE(s.open_alert_id IS NOT NULL OR (NOT (s.traits ? 'waypoint_churned') AND (
            jsonb_path_exists(s.rule_state, '$.* ? (@.armed == false || @.below_since != null)')
            OR (s.check_below AND x.new_score < s.alert_below)
            OR (s.check_drop AND COALESCE((
                SELECT max((pk ->> 1)::float8) FROM jsonb_array_elements(s.peaks) pk
                WHERE (pk ->> 0)::float8 >= (floor(extract(epoch FROM $24::timestamptz) / 86400)
                    - (s.drop_days - 1)) * 86400) - x.new_score >= s.drop_points, false))
        )), true) AS candidate
    FROM s CROSS JOIN LATERAL (
        SELECT COALESCE(round(LEAST(100.0, GREATEST(0.0, s.scale * (
            s.w_act * s.f_act + s.w_cases * s.f_cases + s.w_fr * s.f_fr
            + COALESCE(s.w_util * s.f_util, 0) + COALESCE(s.w_sat * s.f_sat, 0)
            + COALESCE(s.w_sent * s.f_sent, 0))))::numeric, 2)::float8, 0.0) AS new_score
    ) x
),
upd AS (
    UPDATE alerts.customer_state c SET
        score = r.new_score, contributions = r.contributions,
        recorded_score = CASE WHEN r.record THEN r.new_score ELSE c.recorded_score END,
        scored_at = $24::timestamptz, updated_at = now()
    FROM r
    WHERE NOT r.candidate AND c.tenant_id = r.tenant_id AND c.customer_id = r.customer_id
),
hist AS (
    INSERT INTO alerts.score_history (tenant_id, customer_id, scored_at, score, previous_score,
        delta, segment, cause, contributions, event_ids)
    SELECT tenant_id, customer_id, $24::timestamptz, new_score, recorded_score,
           new_score - recorded_score, segment, 'decay', contributions, '[]'::jsonb
    FROM r WHERE NOT candidate AND record
),
changed AS ({changed}
)
SELECT tenant_id, customer_id, candidate, (NOT candidate AND record) AS changed
FROM r ORDER BY tenant_id, customer_id
""".replace(
    "{changed}",
    change_upsert(
        "(SELECT tenant_id, customer_id FROM r WHERE NOT candidate AND record ORDER BY 1, 2)"
    ),
)


def _row(tenant: str, resolved: ResolvedModel) -> tuple[Any, ...]:
    w, p, t = resolved.weights, resolved.params, resolved.thresholds
    return (
        tenant, resolved.segment,
        *(float(w.get(f, 0.0)) for f in (
            Factor.activity, Factor.utilisation, Factor.cases, Factor.friction,
            Factor.satisfaction, Factor.sentiment)),
        p.activity_half_life_days, p.activity_target, p.friction_half_life_days, p.case_limit,
        p.friction_limit, t.alert_below, t.drop_points, t.drop_days,
        Rule.below_threshold in t.rules or Rule.below_for_days in t.rules,
        Rule.score_drop in t.rules,
    )  # fmt: skip


def model_rows(models: dict[str, EngagementModel]) -> list[list[Any]]:
    """The ``p`` table as 18 parallel arrays: every tenant model's segments and default."""
    rows = [_row("*", EngagementModel().for_segment("default"))]
    for tenant, model in models.items():
        rows.append(_row(tenant, model.for_segment("default")))
        rows.extend(_row(tenant, model.for_segment(segment)) for segment in model.segments)
    return [list(column) for column in zip(*rows, strict=True)]


async def all_models(conn: asyncpg.Connection) -> dict[str, EngagementModel]:
    rows = await conn.fetch("SELECT tenant_id, model::text AS model FROM alerts.engagement_model")
    return {r["tenant_id"]: EngagementModel.model_validate(loads(r["model"], {})) for r in rows}


async def decay_batch(
    conn: asyncpg.Connection,
    *,
    params: list[list[Any]],
    now: datetime,
    due_before: datetime,
    after: tuple[str, str],
    limit: int,
    tenant_id: str | None,
) -> list[asyncpg.Record]:
    """Score a batch in SQL; returns every (tenant_id, customer_id, candidate, changed) of the
    batch (``changed``: its score moved a point or more, recorded for journey here)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        DECAY_SQL, after[0], after[1], due_before, limit, *params, tenant_id, now
    )
    return rows
