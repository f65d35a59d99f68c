"""What the journey map page shows, read through the maps package's service functions (the
same ones behind ``/v1/journey-map``, its variants, channel switches, channel mix, journeys
and export; the page calls them directly, not over HTTP), with each node's feedback summary
(as ``/v1/journey-map`` gives it), FCR per node on the performance view, and the journey-quality
sections (``map_quality``: pain points, which also colour the nodes, FCR, experience,
conformance, the health summary), each read on its own when the page shows it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg

from services.journey.experience import feedback_service
from services.journey.maps import export, service
from services.journey.maps import repository as repo
from services.journey.maps.schemas import Granularity, JourneyKind, MapQuery, View
from services.journey.pages import map_quality
from services.journey.quality import mapview as quality_map
from shared.errors import Unprocessable

VARIANTS_SHOWN = 10
JOURNEYS_PER_PAGE = 50


@dataclass(frozen=True)
class MapFilters:
    """The page's filters. ``to`` is inclusive here (a day picked in the form is shown); the
    map API's ``to`` is exclusive, so the query reads up to the next day."""

    granularity: Granularity = Granularity.touchpoint
    journey: JourneyKind = JourneyKind.episode
    view: View = View.performance
    from_: date | None = None
    to: date | None = None
    segment: str = ""  # trait=value
    focus: str = ""
    mix: str = "age_group"  # the trait the channel-mix table splits by
    fcr_window: str = "7d"  # the FCR table's window, beside the policy's
    fcr_by: str = "reason"
    design: str = ""  # the designed journey conformance is read against (default: the first)

    def params(self, **extra: str) -> dict[str, str]:
        params = {
            "view": self.view.value,
            "granularity": self.granularity.value,
            "journey": self.journey.value,
            "from": self.from_.isoformat() if self.from_ else "",
            "to": self.to.isoformat() if self.to else "",
            "segment": self.segment,
            "focus": self.focus,
            "mix": self.mix if self.mix != "age_group" else "",
            "fcr_window": self.fcr_window if self.fcr_window != "7d" else "",
            "fcr_by": self.fcr_by if self.fcr_by != "reason" else "",
            "design": self.design,
            **extra,
        }
        return {k: v for k, v in params.items() if v}

    def map_query(self) -> MapQuery:
        segment = dict([self.segment.split("=", 1)]) if self.segment else {}
        end = self.to + timedelta(days=1) if self.to else None
        return MapQuery(self.granularity.value, self.journey.value, self.from_, end, segment)


@dataclass
class MapView:
    graph: dict[str, Any]
    variants: list[dict[str, Any]]
    variant_count: int
    switches: list[dict[str, Any]]
    mix: list[dict[str, Any]]
    segments: list[str]
    notice: str | None = None
    # the quality panels the page shows (loaded when shown, ``read_panel``), the range they read
    # and the moment they are judged at (``map_quality``)
    quality: dict[str, Any] = field(default_factory=dict)


async def read_map(pool: asyncpg.Pool, tenant: str, filters: MapFilters) -> MapView:
    """The graph, its tables and the filter choices for one tenant (one connection)."""
    q = filters.map_query()
    view: str | None = filters.view.value
    notice = None
    if filters.view is View.tactical and not filters.focus:
        view, notice = None, "Click a node (or name one in Focus) to centre the tactical view."
    async with pool.acquire() as conn:
        config = await service.config_of(conn, tenant)
        loaded = await service.load(conn, tenant, q)
        total, ordered = await service.variants(conn, tenant, q, config)
        mix = await service.channel_mix(
            conn, tenant, dataclasses.replace(q, segment={}), filters.mix
        )
        segments = sorted(s for s in await repo.segments_of(conn, tenant) if s)
        mapped = service.at_granularity(loaded, q.granularity, config)
        try:
            graph = service.build_map(mapped, q, config, view=view, focus=filters.focus or None)
        except Unprocessable as exc:  # a focus that is not on this map: show the whole map
            notice = f"{exc.message}; showing the whole map."
            graph = service.build_map(mapped, q, config, view=None, focus=None)
        nodes = graph["nodes"] + ([graph["focus"]] if graph.get("focus") else [])
        await feedback_service.annotate(conn, tenant, q, config, nodes)
        if graph.get("view") == View.performance.value:
            await quality_map.annotate(conn, tenant, q, graph, config)
        as_of = map_quality.now()
        echo = await map_quality.colour_nodes(conn, tenant, q, config, nodes, as_of=as_of)
        quality = {"range": echo, "panels": await map_quality.panels(conn, tenant)}
    channels = service.at_granularity(loaded, Granularity.channel.value, config)
    return MapView(
        graph=graph,
        variants=[
            {"path": list(path), "count": n, "share": n / total}
            for path, n in ordered[:VARIANTS_SHOWN]
        ],
        variant_count=len(ordered),
        switches=service.channel_switches(channels)["switches"],
        mix=mix["segments"],
        segments=segments,
        notice=notice,
        quality=quality,
    )


async def read_panel(
    pool: asyncpg.Pool, tenant: str, filters: MapFilters, panel: str, as_of: datetime
) -> dict[str, Any]:
    """One journey-quality panel of the page (``map_quality.read_panel``)."""
    q = filters.map_query()
    async with pool.acquire() as conn:
        config = await service.config_of(conn, tenant)
        return await map_quality.read_panel(
            conn,
            tenant,
            q,
            config,
            panel,
            as_of=as_of,
            fcr_window=filters.fcr_window,
            fcr_by=filters.fcr_by,
            design=filters.design,
        )


async def read_journeys(
    pool: asyncpg.Pool,
    tenant: str,
    filters: MapFilters,
    *,
    edge: str | None,
    node: str | None,
    variant: str | None,
    cursor: str | None,
) -> dict[str, Any]:
    """The journeys behind an edge, a node or a variant (a page of them, and the next cursor)."""
    q = filters.map_query()
    async with pool.acquire() as conn:
        config = await service.config_of(conn, tenant)
        mapping, match = export.matcher(
            q.granularity, config, edge=edge, node=node, variant=variant
        )
        return await export.journeys_page(
            conn, tenant, q, mapping, match, limit=JOURNEYS_PER_PAGE, cursor=cursor
        )
