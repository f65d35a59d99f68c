"""The journey health summary's ``conformance`` slot: per designed journey of the tenant, the
share of journeys fully conforming and the mean fitness in the period and the previous one,
from the maintained counts (``counts.py``). A design whose counts cannot answer (not counted for
its current version yet, or a segment filter the counts do not hold) says so instead of
figures: the summary stays cheap and never shows stale numbers."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.journey.conformance import counts
from services.journey.conformance import repository as repo
from services.journey.maps.schemas import MapQuery
from services.journey.maps.service import config_of
from services.journey.quality.health import register
from services.journey.quality.schemas import Range


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _mean_fitness(stats: dict[str, int]) -> float | None:
    n = stats.get("n", 0)
    total = sum(float(k[2:]) * v for k, v in stats.items() if k.startswith("f:"))
    return round(total / n, 4) if n else None


def _change(now: float | None, before: float | None) -> float | None:
    return round(now - before, 4) if now is not None and before is not None else None


async def section(conn: asyncpg.Connection, tenant: str, r: Range, before: Range) -> dict[str, Any]:
    designs = await repo.all_of(conn, tenant)
    config = await config_of(conn, tenant)
    items: list[dict[str, Any]] = []
    for design in designs:
        d = design.definition
        item: dict[str, Any] = {"name": design.name, "version": design.version}
        figures: list[dict[str, int]] = []
        for period in (r, before):
            q = MapQuery(d.granularity.value, d.journey.value, period.start, period.end,
                         dict(r.segment))  # fmt: skip
            found = await counts.read(conn, tenant, design, config, q, None)
            if found is None:
                break
            figures.append(found[None])
        if len(figures) < 2:
            why = (
                "more than one segment filter"
                if not counts.answerable(MapQuery(segment=dict(r.segment)), None)
                else "counts pending for this version"
            )
            items.append({**item, "available": False, "detail": why})
            continue
        now, prev = figures
        share = _rate(now.get("ok", 0), now.get("n", 0))
        share_before = _rate(prev.get("ok", 0), prev.get("n", 0))
        fitness, fitness_before = _mean_fitness(now), _mean_fitness(prev)
        items.append(
            {
                **item,
                "available": True,
                "journey": d.journey.value,
                "journeys": {"value": now.get("n", 0), "previous": prev.get("n", 0)},
                "conforming_share": {
                    "value": share,
                    "previous": share_before,
                    "change": _change(share, share_before),
                },
                "mean_fitness": {
                    "value": fitness,
                    "previous": fitness_before,
                    "change": _change(fitness, fitness_before),
                },
            }
        )
    return {"available": True, "designed_journeys": items}


register("conformance", section)
