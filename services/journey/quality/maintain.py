"""Journey quality's part of the map compaction: the quality rows of a customer before and
after a change, and their difference (called from ``services.journey.maps.maintain``)."""

from __future__ import annotations

from services.journey.maps import rules as maps
from services.journey.maps.settings import MapConfig
from services.journey.quality.rules import (
    ExampleCell,
    FcrCell,
    PainCell,
    QRow,
    cells_difference,
    examples_difference,
    pain_difference,
    quality_rows,
    rows_difference,
)


def rows_of(
    steps: dict[str, maps.Step], profile: maps.Profile | None, config: MapConfig
) -> dict[str, QRow]:
    if profile is None:
        return {}
    return quality_rows(steps.values(), profile, window_us=config.window_us, bands=config.bands)


Examples = tuple[dict[ExampleCell, str], dict[ExampleCell, str]]  # (candidates, withdrawn)


def difference(
    old: dict[str, QRow], new: dict[str, QRow]
) -> tuple[list[tuple[str, QRow]], dict[FcrCell, int], dict[PainCell, int], Examples]:
    """(rows to save, changes of the FCR and pain-point day counts, the pain-point examples'
    candidates and withdrawn examples, without the customer). A deleted step's row goes with
    the step (``map_step`` holds both).

    The day counts are sums of one count per row, so the rows that did not change cancel out:
    only the changed rows' old and new versions are counted (a returning customer's visit
    counts its few new steps, not its whole history twice). The examples are the latest row
    per cell, which an unchanged row may hold: they are compared over all rows."""
    save, drop = rows_difference(old, new)
    if not (save or drop):
        return save, {}, {}, ({}, {})
    before = [old[k] for k, _ in save if k in old] + [old[k] for k in drop]
    after = [r for _, r in save]
    return (
        save,
        cells_difference(before, after),
        pain_difference(before, after),
        examples_difference(old, new),
    )
