"""Feedback on the map's nodes at query time: the stored ``feedback.submitted`` events placed on
the customer's maintained steps (exact for whatever is stored; nothing of its own to keep)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, time
from typing import Any

import asyncpg
import orjson

from services.journey.experience import feedback
from services.journey.experience import repository as repo
from services.journey.maps import activities
from services.journey.maps import repository as maps_repo
from services.journey.maps import rules as maps
from services.journey.maps.schemas import MapQuery
from services.journey.maps.settings import MapConfig
from shared.cursors import cursor_key, cursor_time, invalid_cursor


def _bound(day: Any) -> datetime | None:
    return datetime.combine(day, time(), tzinfo=UTC) if day else None


def _parse(row: asyncpg.Record) -> feedback.Feedback | None:
    data = orjson.loads(row["data"])
    comment = data.get("comment")
    if not isinstance(comment, str) or not comment:
        return None
    rating = data.get("rating")
    about, interaction = data.get("about"), data.get("interaction_id")
    return feedback.Feedback(
        event_id=row["event_id"],
        time_us=maps.to_us(row["time"]),
        author="agent" if data.get("author") == "agent" else "customer",
        rating=float(rating) if isinstance(rating, int | float) else None,
        comment=comment,
        about=about if isinstance(about, str) else None,
        interaction=interaction if isinstance(interaction, str) else None,
    )


async def items(
    conn: asyncpg.Connection, tenant: str, q: MapQuery, config: MapConfig
) -> list[dict[str, Any]]:
    """Every feedback in [from, to) (by its own time) of customers in the segment, placed on a
    node at the query's granularity, comments masked, newest first."""
    rows = await repo.events_between(
        conn, tenant, "feedback.submitted", _bound(q.start), _bound(q.end)
    )
    parsed = [(r["customer_id"], fb) for r in rows if (fb := _parse(r)) is not None]
    if not parsed:
        return []
    keys = sorted({(tenant, c) for c, _ in parsed})
    steps = await maps_repo.steps_of(conn, keys)
    profiles = await maps_repo.profiles_of(conn, keys)
    known = await repo.known_activities(
        conn, tenant, sorted({fb.about for _, fb in parsed if fb.about})
    )
    views = {k: maps.ordered(steps[k].values()) for k in keys}
    f = activities.mapper(q.granularity, config.stages)
    out = []
    for customer, fb in parsed:
        key = (tenant, customer)
        if q.segment:
            values = maps.seg_values(
                profiles.get(key) or maps.new_profile(), fb.time_us, config.bands
            )
            named = dict(zip(maps.SEGMENTS, values, strict=True))
            if any(named.get(t) != v for t, v in q.segment.items()):
                continue
        placed = feedback.place(fb, steps[key], views[key], known)
        node = f(placed.node) if placed.node is not None else None
        out.append(feedback.public(fb, placed, node, str(customer)))
    out.sort(key=lambda i: (i["at"], i["event_id"]), reverse=True)
    return out


async def annotate(
    conn: asyncpg.Connection,
    tenant: str,
    q: MapQuery,
    config: MapConfig,
    nodes: list[dict[str, Any]],
) -> None:
    """Give each map node its feedback summary (count, by author, mean rating, latest)."""
    per_node = feedback.summaries(await items(conn, tenant, q, config))
    for node in nodes:
        node["feedback"] = per_node.get(node["id"], feedback.EMPTY)


def encode_cursor(item: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([item["at"], item["event_id"]])).decode()


def decode_cursor(cursor: str | None) -> tuple[str, str] | None:
    if not cursor:
        return None
    try:
        at, event_id = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
        cursor_time(at)  # an aware time inside the calendar once in UTC, or a 422
        return str(at), cursor_key(event_id)
    except (ValueError, TypeError) as exc:
        raise invalid_cursor() from exc


def page(
    found: list[dict[str, Any]], *, after: tuple[str, str] | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first, after the cursor's (time, event id)."""
    if after is not None:
        found = [i for i in found if (i["at"], i["event_id"]) < after]
    chosen = found[:limit]
    more = len(found) > limit
    return chosen, encode_cursor(chosen[-1]) if more and chosen else None
