"""Request parsing and response shapes of the journey quality API.

Common parameters (``from``, ``to``, ``as_of``, ``segment.<trait>=<value>``) are validated in one
place (``quality_params``); anything unknown or malformed is a 422 naming the parameter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import Query, Request
from pydantic import BaseModel, ConfigDict, Field

from services.journey.maps import rules as maps
from services.journey.maps.dependencies import segment_filter
from services.journey.maps.schemas import invalid
from services.journey.quality.policy import FcrPolicy
from services.journey.quality.sql import to_us
from shared.guards import UtcDateTime

DEFAULT_DAYS = 28
MAX_DAYS = 731
COMMON = {"from", "to", "as_of"}
BY_SEGMENT = tuple(f"segment.{t}" for t in maps.SEGMENTS)


@dataclass(frozen=True)
class Range:
    start: date
    end: date
    as_of: datetime
    segment: dict[str, str] = field(default_factory=dict)

    @property
    def as_of_us(self) -> int:
        return to_us(self.as_of)

    def echo(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "as_of": self.as_of.isoformat(),
            "segment": self.segment,
        }


def quality_params(*extra: str) -> Callable[..., Range]:
    allowed = COMMON | set(extra)

    def dependency(
        request: Request,
        start: Annotated[
            date | None,
            Query(
                alias="from",
                description=f"First UTC day (default: {DEFAULT_DAYS} days before `to`).",
            ),
        ] = None,
        end: Annotated[
            date | None,
            Query(
                alias="to", description="Day after the last (exclusive; default: after `as_of`)."
            ),
        ] = None,
        as_of: Annotated[
            UtcDateTime | None,
            Query(description="When contacts are judged (default: now); nothing later is seen."),
        ] = None,
    ) -> Range:
        segment = segment_filter(request, allowed)
        moment = as_of or datetime.now(UTC)  # UtcDateTime: aware UTC, in range, or a 422
        try:  # the default range leaves the calendar near year 1 or 9999
            last = end or (moment.date() + timedelta(days=1))
            first = start or (last - timedelta(days=DEFAULT_DAYS))
        except OverflowError:
            raise invalid("to" if end else "as_of", "the range leaves the calendar") from None
        if last <= first:
            raise invalid("to", "must be after 'from'")
        if (last - first).days > MAX_DAYS:
            raise invalid("from", f"a range covers at most {MAX_DAYS} days")
        if (first - date(1970, 1, 2)).days < (last - first).days:  # no date before year 1
            raise invalid("from", "the previous period must start after 1970-01-01")
        return Range(first, last, moment, segment)

    return dependency


def parse_by(value: str | None, allowed: tuple[str, ...], param: str = "by") -> str | None:
    if value is None:
        return None
    if value not in allowed:
        raise invalid(param, f"unknown grouping {value!r}; known: {', '.join(allowed)}")
    return value


# --- responses (documentation; endpoints render JSON once with orjson) --------------------------


class FcrPolicyPublic(BaseModel):
    policy: FcrPolicy


class WindowFigures(BaseModel):
    window: str = Field(description="`policy` (each contact's policy window) or e.g. `7d`.")
    judged: int = Field(description="Contacts whose window had elapsed at `as_of`.")
    resolved: int
    repeated: int
    fcr_rate: float | None = Field(description="resolved / judged.")
    repeat_rate: float | None = Field(description="repeated / judged.")
    still_open: int = Field(description="Contacts whose window had not elapsed yet.")
    still_open_share: float | None
    already_repeated: int = Field(description="Still open, but a further contact already came.")


class FcrGroup(BaseModel):
    model_config = ConfigDict(extra="allow")

    key: str | None
    contacts: int
    windows: list[WindowFigures]
    declared: dict[str, Any]


class FcrReport(BaseModel):
    model_config = ConfigDict(extra="allow")

    total: FcrGroup
    groups: list[FcrGroup]


class PainPoint(BaseModel):
    model_config = ConfigDict(extra="allow")

    kind: str
    key: str
    affected: int
    base: int
    rate: float | None
    severity: float
    impact: float = Field(description="affected × severity.")
    previous: dict[str, Any]
    change: dict[str, Any]
    example: dict[str, Any] | None
    drill_down: dict[str, str]


class PainReport(BaseModel):
    model_config = ConfigDict(extra="allow")

    by: str
    total: int
    pain_points: list[PainPoint]


class AffectedStep(BaseModel):
    customer_id: str
    journey_key: str
    step_key: str
    at: str
    activity: str
    channel: str
    reason: str | None
    timeline: str


class AffectedPage(BaseModel):
    model_config = ConfigDict(extra="allow")

    items: list[AffectedStep]
    next_cursor: str | None


class JourneyHealth(BaseModel):
    model_config = ConfigDict(extra="allow")

    top_pain_points: list[PainPoint]
    fcr: dict[str, Any]
    abandon_rate: dict[str, Any]
    channel_mix: list[dict[str, Any]]
    experience: dict[str, Any]
    conformance: dict[str, Any]
