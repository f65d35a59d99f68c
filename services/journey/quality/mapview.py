"""FCR and repeat-contact rate per node on the journey map's performance view.

A node's figures count the contacts at its activities (at the map's granularity) whose own UTC
day is in the map's ``from``/``to``, in the map's segment, judged at the start of today (UTC)
under the tenant's policy (from the FCR day counts when they answer exactly).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime
from typing import Any

import asyncpg

from services.journey.maps import activities
from services.journey.maps.schemas import MapQuery
from services.journey.maps.settings import MapConfig
from services.journey.quality import fcr
from services.journey.quality import repository as repo
from services.journey.quality.sql import to_us


async def annotate(
    conn: asyncpg.Connection,
    tenant: str,
    q_map: MapQuery,
    body: dict[str, Any],
    config: MapConfig,
    *,
    as_of: datetime | None = None,
) -> None:
    """Add ``fcr`` to every node of a performance view (in place)."""
    policy = await repo.policy_of(conn, tenant)
    moment = as_of or datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    q = fcr.FcrQuery(
        q_map.start or date(1970, 1, 1),
        q_map.end or date(9999, 12, 31),
        to_us(moment),
        "touchpoint",
        (),
        q_map.segment,
    )
    if fcr.answerable(q, policy):
        body_fcr = await fcr.report_from_days(conn, tenant, q, policy)
    else:
        body_fcr = await fcr.report(conn, tenant, q, policy)
    per = {
        g["key"]: (g["contacts"], g["windows"][0]["judged"], g["windows"][0]["repeated"])
        for g in body_fcr["groups"]
    }
    f = activities.mapper(q_map.granularity, config.stages)
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for activity, values in per.items():
        node = totals[f(activity)]
        for i, v in enumerate(values):
            node[i] += v
    for node in body["nodes"]:
        c, j, r = totals.get(node["id"], [0, 0, 0])
        node["fcr"] = fcr.node_fcr(c, j, r)
