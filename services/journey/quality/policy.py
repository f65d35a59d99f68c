"""A tenant's FCR policy (``PUT /v1/fcr-policy``): the default window, overrides per contact
reason, channel and segment, what "further contact" means and whether reopened cases count.

The most specific matching override sets a contact's window (the one naming the most of reason,
channel and segment traits); among equally specific ones, the first listed. Applied when read.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from services.journey.maps.rules import SEGMENTS

HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
MAX_WINDOW_US = 400 * DAY_US
_WINDOW = re.compile(r"^([1-9][0-9]{0,4})([hd])$")
Text = Annotated[str, Field(min_length=1, max_length=128)]


def parse_window(text: str) -> int:
    """``12h``, ``7d``, ``35d`` → microseconds (1 hour to 400 days); ValueError otherwise."""
    match = _WINDOW.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a window: write hours or days, e.g. 12h, 7d, 35d")
    us = int(match[1]) * (HOUR_US if match[2] == "h" else DAY_US)
    if us > MAX_WINDOW_US:
        raise ValueError(f"{text!r} is longer than 400 days")
    return us


def _window(text: str) -> str:
    parse_window(text)
    return text.strip()


WindowText = Annotated[
    str,
    Field(
        min_length=2,
        max_length=8,
        pattern=r"^\s*[0-9]+[hd]\s*$",
        examples=["7d", "35d", "12h"],
        description="Hours or days, from 1 hour to 400 days.",
    ),
]


class Override(BaseModel):
    """A window for the contacts this selects (every field given must match)."""

    model_config = ConfigDict(extra="forbid")

    reason: Text | None = None
    channel: Text | None = None
    segment: dict[str, Text] = Field(
        default_factory=dict, description='Segment traits, e.g. {"tier": "gold"}.'
    )
    window: WindowText

    @field_validator("window")
    @classmethod
    def _window_text(cls, text: str) -> str:
        return _window(text)

    @field_validator("segment")
    @classmethod
    def _traits(cls, segment: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(segment) - set(SEGMENTS))
        if unknown:
            raise ValueError(f"unknown segment trait(s) {unknown}; known: {', '.join(SEGMENTS)}")
        return segment

    @model_validator(mode="after")
    def _selects(self) -> Override:
        if self.reason is None and self.channel is None and not self.segment:
            raise ValueError("an override selects by reason, channel or segment")
        return self

    @property
    def specificity(self) -> int:
        return (self.reason is not None) + (self.channel is not None) + len(self.segment)

    @property
    def selector(self) -> tuple[str | None, str | None, tuple[tuple[str, str], ...]]:
        return self.reason, self.channel, tuple(sorted(self.segment.items()))

    def matches(self, reason: str | None, channel: str, segment: dict[str, str | None]) -> bool:
        return (
            (self.reason is None or self.reason == reason)
            and (self.channel is None or self.channel == channel)
            and all(segment.get(k) == v for k, v in self.segment.items())
        )


class FcrPolicy(BaseModel):
    """``PUT /v1/fcr-policy`` body."""

    model_config = ConfigDict(extra="forbid")

    default_window: WindowText = Field("7d", description="Window when no override matches.")
    further_contact: Literal["any_reason", "same_reason"] = Field(
        "any_reason",
        description=(
            "What makes a contact a repeat: any further contact of the customer, or only one "
            "about the same reason (a contact without a reason matches every reason)."
        ),
    )
    reopen_counts: StrictBool = Field(
        True, description="A reopening of the contact's case is a further contact too."
    )
    overrides: list[Override] = Field(default_factory=list, max_length=200)

    @field_validator("default_window")
    @classmethod
    def _default_text(cls, text: str) -> str:
        return _window(text)

    @field_validator("overrides")
    @classmethod
    def _distinct(cls, overrides: list[Override]) -> list[Override]:
        seen = set()
        for o in overrides:
            if o.selector in seen:
                raise ValueError(f"two overrides select the same contacts: {o.selector}")
            seen.add(o.selector)
        return overrides

    @property
    def default_us(self) -> int:
        return parse_window(self.default_window)

    @property
    def same_reason(self) -> bool:
        return self.further_contact == "same_reason"

    def ranked(self) -> list[Override]:
        """Overrides in the order they are tried: most specific first, then as listed."""
        order = sorted(range(len(self.overrides)), key=lambda i: -self.overrides[i].specificity)
        return [self.overrides[i] for i in order]

    def window_for(self, reason: str | None, channel: str, segment: dict[str, str | None]) -> int:
        for o in self.ranked():
            if o.matches(reason, channel, segment):
                return parse_window(o.window)
        return self.default_us
