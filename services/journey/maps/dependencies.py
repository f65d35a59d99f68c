"""The journey map API's query parameters, validated in one place (``map_params``): unknown
granularity, journey, view or segment trait, a bad date, ``to`` not after ``from``, or any
parameter the endpoint does not take, give a 422 naming the parameter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Query, Request

from services.journey.maps import rules
from services.journey.maps.schemas import Granularity, JourneyKind, MapQuery, invalid
from shared.guards import IsoDate

COMMON = {"granularity", "journey", "from", "to"}


def segment_filter(request: Request, allowed: set[str]) -> dict[str, str]:
    """The request's ``segment.<trait>=<value>`` parameters, trait → value; a 422 naming the
    parameter for an unknown trait, an empty or too long value, a trait given twice with two
    values, or any other parameter not in ``allowed`` (the map's and journey quality's)."""
    segment: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name.startswith("segment."):
            trait = name.removeprefix("segment.")
            if trait not in rules.SEGMENTS:
                known = ", ".join(rules.SEGMENTS)
                raise invalid(name, f"unknown segment trait {trait!r}; known: {known}")
            if not value or len(value) > rules.MAX_TEXT:
                raise invalid(name, f"a segment value must have 1 to {rules.MAX_TEXT} characters")
            if trait in segment and segment[trait] != value:
                raise invalid(name, "give each segment trait once")
            segment[trait] = value
        elif name not in allowed:
            raise invalid(name, f"unknown parameter; this endpoint takes {sorted(allowed)}")
    return segment


def map_params(*extra: str) -> Callable[..., MapQuery]:
    """Dependency: the common map parameters, refusing any the endpoint does not take."""
    allowed = COMMON | set(extra)

    def dependency(
        request: Request,
        granularity: Annotated[
            Granularity, Query(description="Activities: touchpoint, channel or stage.")
        ] = Granularity.touchpoint,
        journey: Annotated[
            JourneyKind, Query(description="What a journey is: customer, episode or case.")
        ] = JourneyKind.episode,
        start: Annotated[
            IsoDate | None,
            Query(
                alias="from",
                description="Journeys whose first step's UTC day is on or after this date.",
            ),
        ] = None,
        end: Annotated[
            IsoDate | None,
            Query(alias="to", description="… and before this date (exclusive)."),
        ] = None,
    ) -> MapQuery:
        segment = segment_filter(request, allowed)
        if start and end and end <= start:
            raise invalid("to", "must be after 'from'")
        return MapQuery(granularity.value, journey.value, start, end, segment)

    return dependency
