"""Experience at query time over the map's maintained steps and the stored surveys.

The step log is exact under late events, replays, merges and splits (and ``rebuild-maps``
recomputes it); surveys are read under the customer they belong to now. So the figures are
exact for whatever is stored when the request runs, with no state of their own to maintain.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from services.journey.experience import repository as repo
from services.journey.experience import rules, stats
from services.journey.maps import activities
from services.journey.maps import repository as maps_repo
from services.journey.maps import rules as maps
from services.journey.maps.schemas import MapQuery
from services.journey.maps.settings import MapConfig


@dataclass
class CustomerJourneys:
    customer: uuid.UUID
    steps: dict[str, maps.Step]
    views: list[maps.StepView]
    selected: list[maps.Journey]  # the query's journeys of this customer


def _selected(
    views: list[maps.StepView], profile: maps.Profile, config: MapConfig, q: MapQuery
) -> list[maps.Journey]:
    lo = (q.start - maps.EPOCH.date()).days if q.start else None
    hi = (q.end - maps.EPOCH.date()).days if q.end else None
    out = []
    for journey in maps.journeys(views, window_us=config.window_us):
        if journey.kind != q.kind:
            continue
        day = maps.day_of(journey.start_us)
        if (lo is not None and day < lo) or (hi is not None and day >= hi):
            continue
        if q.segment:
            values = dict(
                zip(
                    maps.SEGMENTS,
                    maps.seg_values(profile, journey.start_us, config.bands),
                    strict=True,
                )
            )
            if any(values.get(t) != v for t, v in q.segment.items()):
                continue
        out.append(journey)
    return out


async def load_journeys(
    conn: asyncpg.Connection, tenant: str, q: MapQuery, config: MapConfig
) -> list[CustomerJourneys]:
    """The query's customers with their steps (in journey order) and selected journeys."""
    ids = await repo.customers_in(conn, tenant, q)
    keys = [(tenant, c) for c in ids]
    steps = await maps_repo.steps_of(conn, keys)
    profiles = await maps_repo.profiles_of(conn, keys)
    out = []
    for key in keys:
        views = maps.ordered(steps[key].values())
        profile = profiles.get(key) or maps.new_profile()
        out.append(
            CustomerJourneys(key[1], steps[key], views, _selected(views, profile, config, q))
        )
    return out


def _survey(row: asyncpg.Record) -> rules.Survey | None:
    data = orjson.loads(row["data"])
    kind, score = data.get("survey"), data.get("score")
    if kind not in stats.SURVEYS or not isinstance(score, int | float):
        return None
    about = data.get("about_interaction_id")
    return rules.Survey(
        row["event_id"],
        maps.to_us(row["time"]),
        kind,
        float(score),
        about if isinstance(about, str) else None,
    )


async def experience(
    conn: asyncpg.Connection,
    tenant: str,
    q: MapQuery,
    config: MapConfig,
    *,
    min_sample: int,
    max_moments: int,
) -> dict[str, Any]:
    customers = await load_journeys(conn, tenant, q, config)
    surveys: dict[uuid.UUID, list[rules.Survey]] = defaultdict(list)
    for row in await repo.events_of(
        conn, tenant, "survey.responded", [c.customer for c in customers]
    ):
        found = _survey(row)
        if found is not None:
            surveys[row["customer_id"]].append(found)
    f = activities.mapper(q.granularity, config.stages)
    stage = activities.mapper("stage", config.stages)
    exp = rules.Experience()
    journeys = 0
    for c in customers:
        journeys += len(c.selected)
        where: dict[str, list[tuple[int, int]]] = defaultdict(list)  # step → (journey, index)
        for j, journey in enumerate(c.selected):
            for i, view in enumerate(journey.steps):
                where[view.key].append((j, i))
        per_journey: dict[int, list[rules.Survey]] = defaultdict(list)
        for survey in sorted(surveys.get(c.customer, ()), key=lambda s: (s.time_us, s.event_id)):
            key = rules.attach(survey.time_us, survey.about, c.steps, c.views)
            if key is None:
                exp.unattached += 1
                continue
            if key not in where:
                continue  # about a step of a journey outside the query
            exp.surveys[survey.kind] += 1
            for j, i in where[key]:
                exp.add(survey, rules.position(c.selected[j].steps, i, f, stage))
                per_journey[j].append(survey)
        _units(exp, c, per_journey, f)
    moments, tested = rules.moments_of_truth(exp.units, min_sample=min_sample, limit=max_moments)
    return {
        **q.echo(),
        "journeys": journeys,
        **rules.experience_body(exp),
        "moments_of_truth": moments,
        "moments_tested": tested,
        "min_sample": min_sample,
        "max_moments": max_moments,
    }


def _units(
    exp: rules.Experience,
    c: CustomerJourneys,
    per_journey: dict[int, list[rules.Survey]],
    f: Any,
) -> None:
    """Moments of truth units: journeys with CSAT or NPS responses, and the customer (churn)."""
    for j, answered in per_journey.items():
        found = rules.features(c.selected[j].steps, c.steps, f)
        csat = [s.score for s in answered if s.kind == "csat"]
        nps = [stats.nps_points(s.score) for s in answered if s.kind == "nps"]
        if csat:
            exp.units["csat"].append((found, sum(csat) / len(csat)))
        if nps:
            exp.units["nps"].append((found, sum(nps) / len(nps)))
    if not c.selected:
        return
    churned_at = min(
        (v.time_us for v in c.views if rules.first_type(c.steps[v.key]) == "customer.churned"),
        default=None,
    )
    found = set()
    for journey in c.selected:
        found |= rules.features(journey.steps, c.steps, f, before_us=churned_at)
    exp.units["churn"].append((found, 1.0 if churned_at is not None else 0.0))
