"""The journey-quality sections of the map page, read through the service functions behind
``GET /v1/pain-points``, ``/v1/fcr``, ``/v1/experience``,
``/v1/designed-journeys/{name}/conformance`` and ``/v1/journey-health`` (called directly, not
over HTTP), with the API's defaults where the page has no filter of its own.

Each section is a panel read on its own (``read_panel``, ``GET /app/map/quality/{panel}``): the
page loads a panel when it is first shown and re-reads only the panels on screen, so the map's
30-second refresh does not rerun every quality query. The graph's pain colouring
(``colour_nodes``) stays with the map's own refresh.

Pain points, FCR and the health summary are read over the map's days, judged at ``as_of`` (the
moment the page was read, shown on the page); with no ``from``/``to`` on the map they cover the
API's default range (the 28 days up to today). Experience and conformance read the map's own
query (granularity, journey kind, days, segment); conformance is at the design's granularity
and journey kind, as its endpoint reads it when no granularity or journey is named.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from services.journey.conformance import repository as designs
from services.journey.conformance import service as conformance
from services.journey.experience import service as experience
from services.journey.maps import activities
from services.journey.maps.schemas import MapQuery
from services.journey.maps.settings import MapConfig
from services.journey.quality import fcr, health, pain
from services.journey.quality import repository as quality
from services.journey.quality.policy import parse_window
from services.journey.quality.schemas import DEFAULT_DAYS, MAX_DAYS, Range

FCR_WINDOWS = ("1d", "7d", "30d", "90d")
FCR_BY = ("reason", "channel", "agent_team")
PAIN_SHOWN = 20  # the API's default limit
PAIN_COLOURED = 5  # the nodes carrying the most pain-point impact are drawn red
PAIN_KINDS_NAMED = 2  # ... labelled with their worst kinds (the table gives the numbers)
LONG_WAIT_MS = 300_000  # the API's default long_wait_s
MAX_MOMENTS, MIN_SAMPLE = 5, 30  # the API's defaults
DEVIATIONS_SHOWN = 10


def quality_range(
    start: date | None, last: date | None, segment: dict[str, str], as_of: datetime
) -> Range:
    """The map's days (``last`` inclusive) as the quality API's range; its defaults otherwise."""
    end = last + timedelta(days=1) if last else as_of.date() + timedelta(days=1)
    first = start or end - timedelta(days=DEFAULT_DAYS)
    end = max(end, first + timedelta(days=1))
    first = max(first, end - timedelta(days=MAX_DAYS))
    return Range(first, end, as_of, segment)


def _node_pain(rows: list[dict[str, Any]], mapper: Any, nodes: list[dict[str, Any]]) -> None:
    """Give each map node the pain points of its activities: ``pain_impact`` (the sum of their
    impacts) and, for the ``PAIN_COLOURED`` nodes on the map with the most impact, ``pain``
    (the kinds that hurt most there), which colours the node."""
    impact: dict[str, float] = defaultdict(float)
    kinds: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for row in rows:
        node = mapper(row["key"])
        impact[node] += row["impact"]
        kinds[node][row["kind"]] += row["impact"]
    shown = {node["id"] for node in nodes}
    top = sorted((n for n in shown if impact.get(n, 0) > 0), key=lambda n: (-impact[n], n))
    coloured = set(top[:PAIN_COLOURED])
    for node in nodes:
        node["pain_impact"] = round(impact.get(node["id"], 0.0), 3)
        worst = sorted(kinds[node["id"]].items(), key=lambda kv: (-kv[1], kv[0]))
        node["pain"] = (
            [kind.replace("_", " ") for kind, _ in worst[:PAIN_KINDS_NAMED]]
            if node["id"] in coloured
            else []
        )


def _figure(name: str, fig: dict[str, Any], kind: str) -> dict[str, Any]:
    return {
        "name": name,
        "kind": kind,
        "value": fig.get("value"),
        "previous": fig.get("previous"),
        "change": fig.get("change"),
    }


def _health_figures(body: dict[str, Any]) -> dict[str, Any]:
    contacts = body["contacts"]
    figures = [
        {
            **_figure("contacts", contacts, "count"),
            "change": contacts["value"] - contacts["previous"],
        },
        _figure("FCR (policy window)", body["fcr"], "rate"),
        _figure("repeat contact rate", body["repeat_rate"], "rate"),
        _figure("abandon rate", body["abandon_rate"], "rate"),
    ]
    for mix in body["channel_mix"][:4]:
        figures.append(
            {
                "name": f"share of contacts on {mix['channel']}",
                "kind": "rate",
                "value": mix["share"],
                "previous": mix["previous_share"],
                "change": mix["change"],
            }
        )
    slots = {slot: body[slot] for slot in health.SLOTS if body.get(slot, {}).get("available", True)}
    return {
        "period": body["period"],
        "previous_period": body["previous_period"],
        "figures": figures,
        "top_pain_points": body["top_pain_points"],
        "slots": slots,
        "missing": [slot for slot in health.SLOTS if slot not in slots],
    }


PANELS = {
    "pain_points": "Pain points",
    "fcr": "First-contact resolution",
    "experience": "Experience by journey position",
    "conformance": "Conformance",
    "health": "Journey health",
}


def _range(q: MapQuery, as_of: datetime) -> tuple[Range, dict[str, str]]:
    r = quality_range(q.start, q.end - timedelta(days=1) if q.end else None, dict(q.segment), as_of)
    echo = {"from": r.start.isoformat(), "to": r.end.isoformat(), "as_of": as_of.isoformat()}
    return r, echo


async def colour_nodes(
    conn: asyncpg.Connection,
    tenant: str,
    q: MapQuery,
    config: MapConfig,
    nodes: list[dict[str, Any]],
    *,
    as_of: datetime,
) -> dict[str, str]:
    """Give the nodes their pain points (in place; see ``_node_pain``); the range read."""
    r, echo = _range(q, as_of)
    policy = await quality.policy_of(conn, tenant)
    pains = await pain.report(
        conn,
        tenant,
        pain.PainQuery("touchpoint", r.start, r.end, r.as_of_us, r.segment, LONG_WAIT_MS),
        policy,
        limit=500,
    )
    _node_pain(pains["pain_points"], activities.mapper(q.granularity, config.stages), nodes)
    return echo


async def read_panel(
    conn: asyncpg.Connection,
    tenant: str,
    q: MapQuery,
    config: MapConfig,
    panel: str,
    *,
    as_of: datetime,
    fcr_window: str,
    fcr_by: str,
    design: str,
) -> dict[str, Any]:
    """One section (``{panel: its figures}``, as the ``_quality_<panel>.html`` templates read
    them); ``{}`` for conformance when the tenant has no designed journeys."""
    r, echo = _range(q, as_of)
    if panel == "pain_points":
        policy = await quality.policy_of(conn, tenant)
        pains = await pain.report(
            conn,
            tenant,
            pain.PainQuery("touchpoint", r.start, r.end, r.as_of_us, r.segment, LONG_WAIT_MS),
            policy,
            limit=PAIN_SHOWN,
        )
        body = {**echo, "total": pains["total"], "rows": pains["pain_points"]}
        return {panel: {**body, "coloured": PAIN_COLOURED}}
    if panel == "fcr":
        policy = await quality.policy_of(conn, tenant)
        fq = fcr.FcrQuery(
            r.start, r.end, r.as_of_us, fcr_by, ((fcr_window, parse_window(fcr_window)),), r.segment
        )
        if fcr.answerable(fq, policy):
            fcr_body = await fcr.report_from_days(conn, tenant, fq, policy)
        else:
            fcr_body = await fcr.report(conn, tenant, fq, policy)
        return {
            panel: {
                **echo,
                "by": fcr_by,
                "window": fcr_window,
                "windows": list(dict.fromkeys([*FCR_WINDOWS, fcr_window])),
                "policy_window": policy.default_window,
                "total": fcr_body["total"],
                "groups": fcr_body["groups"],
            }
        }
    if panel == "experience":
        exp = await experience.experience(
            conn, tenant, q, config, min_sample=MIN_SAMPLE, max_moments=MAX_MOMENTS
        )
        return {panel: exp}
    if panel == "health":
        policy = await quality.policy_of(conn, tenant)
        return {panel: _health_figures(await health.summary(conn, tenant, r, policy))}
    assert panel == "conformance", panel
    found = await designs.all_of(conn, tenant)
    if not found:
        return {}
    chosen = next((d for d in found if d.name == design), found[0])
    d = chosen.definition
    cq = MapQuery(d.granularity.value, d.journey.value, q.start, q.end, q.segment)
    return {
        panel: {
            "designs": [d.name for d in found],
            **await conformance.conformance(
                conn, tenant, chosen, config, cq, by=None, limit=DEVIATIONS_SHOWN
            ),
        }
    }


async def panels(conn: asyncpg.Connection, tenant: str) -> list[str]:
    """The panels the page shows: conformance only when the tenant has designed journeys."""
    has_designs = bool(await designs.all_of(conn, tenant))
    return [p for p in PANELS if p != "conformance" or has_designs]


def now() -> datetime:
    """The moment the page's quality figures are judged at (whole seconds, so it reads back)."""
    return datetime.now(UTC).replace(microsecond=0)
