"""Journey quality's definitions, as pure functions (values in, values out; no I/O).

Each step of a customer gets one **quality row** (``QRow``): what pain-point and FCR queries
need of it, as narrow values. A row depends only on the customer's stored steps and profile
(the map's, see ``services.journey.maps.rules``), so the map compactor derives the rows before
and after a change and writes the difference: late events, replays, merges and splits end in
the same rows as a rebuild from the stored events.

Per-contact FCR facts are **gaps** (microseconds) to the customer's next contact (any reason),
to the next contact about the same reason, and to the next reopening of one of the contact's
cases. Whether a contact was resolved at first contact within a window ``W`` is decided when
read (``judge``), so windows and the tenant's policy change without recomputing anything.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from services.journey.maps import rules as maps
from services.journey.maps.histogram import bucket

# Assisted and conversational channels: an interaction (a step of events sharing an
# interaction_id) on one is a contact; self-service web and app steps, and steps of their own
# (campaign touches, purchases, case outcomes recorded outside a contact) are not.
CONTACT_CHANNELS = frozenset(
    {"phone", "ivr", "web_chat", "email", "social", "messenger", "sms", "video", "in_person", "bot"}
)
NEGATIVE_SENTIMENT_MILLI = -300  # a step's mean message sentiment at or below -0.3
CALLBACK_WITHIN_US = 48 * 3_600_000_000  # a requested callback must be completed within 48 h
COMPLETED_OUTCOMES = frozenset({"reached", "completed", "connected", "answered"})
# callback: 0 none requested, 1 requested and completed in time, 2 requested, not completed
CALLBACK_NONE, CALLBACK_DONE, CALLBACK_MISSED = 0, 1, 2


class QRow(NamedTuple):
    """One step's quality facts (stored as ``journey.map_step``)."""

    at_us: int
    activity: str
    prev_activity: str | None  # the step before it in its episode (edge prev > activity)
    channel: str
    contact: bool
    reason: str | None
    team: str | None  # the team that had the contact at the end
    segment: maps.SegValues  # the episode's segment (as the map's)
    resolved: bool | None  # agent-declared (latest contact.ended.resolved)
    transfers: int
    abandon_at: str | None  # where:node-or-queue of the first abandon
    abandon_wait_ms: int
    queue_wait_ms: int | None  # queued and answered: wait until an agent joined
    sentiment_milli: int | None  # mean sentiment of its received messages × 1000
    callback: int
    next_any_us: int | None  # contacts only: gap to the next contact
    next_same_us: int | None  # … to the next contact about the same reason
    reopen_us: int | None  # … to the first reopening of one of its cases
    episode: str  # the episode's key (its first step's key)
    episode_end: bool
    cross_unresolved: bool  # last step of an episode over 2+ contact channels, none resolved


def is_contact(step: maps.Step) -> bool:
    return step["k"].startswith("i:") and maps.channel_of(step) in CONTACT_CHANNELS


def _value(step: maps.Step, kind: str, name: str) -> Any:
    found = step[kind].get(name)
    return found[2] if found else None


def is_resolved(step: maps.Step) -> bool:
    """Agent-declared resolved, or a case resolved as a step of its own."""
    return _value(step, "l", "resolved") is True or step["f"]["type"][2] == "case.resolved"


def same_reason(a: str | None, b: str | None) -> bool:
    """A contact without a reason could be about anything: it matches every reason."""
    return a is None or b is None or a == b


def _callback(ordered: Sequence[maps.Step], i: int) -> int:
    step = ordered[i]
    if not step["c"].get("callbacks_requested"):
        return CALLBACK_NONE
    for other in ordered[i:]:
        if other["t"] - step["t"] > CALLBACK_WITHIN_US:
            break
        if other["c"].get("callbacks_completed"):
            outcome = _value(other, "l", "callback_outcome")
            if outcome is None or str(outcome).lower() in COMPLETED_OUTCOMES:
                return CALLBACK_DONE
    return CALLBACK_MISSED


def _queue_wait_ms(step: maps.Step) -> int | None:
    """As the map's ``step_stats``: queued, then answered no earlier; None otherwise."""
    queued, answered = step["f"].get("queued"), step["f"].get("answered")
    if queued is None or answered is None or answered[2] < queued[2]:
        return None
    return int((answered[2] - queued[2]) // 1000)


def quality_rows(
    steps: Iterable[maps.Step], profile: maps.Profile, *, window_us: int, bands: Sequence[int]
) -> dict[str, QRow]:
    """Every step's quality row, by step key. Steps in journey order (time, then the step's
    earliest event id); episodes split where the gap exceeds ``window_us``, as the map's."""
    ordered = sorted(steps, key=lambda s: (s["t"], s["e"]))
    if not ordered:
        return {}
    n = len(ordered)
    channels = [maps.channel_of(s) for s in ordered]
    activities = [maps.activity_of(s) for s in ordered]
    contact = [
        s["k"].startswith("i:") and c in CONTACT_CHANNELS
        for s, c in zip(ordered, channels, strict=True)
    ]
    # episodes: [first, last] index ranges
    bounds: list[tuple[int, int]] = []
    first = 0
    for i in range(1, n):
        if ordered[i]["t"] - ordered[i - 1]["t"] > window_us:
            bounds.append((first, i - 1))
            first = i
    bounds.append((first, n - 1))
    episode_of: list[tuple[str, maps.SegValues, bool]] = [("", (), False)] * n
    ends: set[int] = set()
    for lo, hi in bounds:
        values = maps.seg_values(profile, ordered[lo]["t"], bands)
        members = range(lo, hi + 1)
        crossed = len({channels[i] for i in members if contact[i]}) >= 2
        cross = crossed and not any(is_resolved(ordered[i]) for i in members)
        for i in members:
            episode_of[i] = (ordered[lo]["k"], values, cross)
        ends.add(hi)
    contacts = [i for i in range(n) if contact[i]]
    reasons = {i: _value(ordered[i], "f", "contact_reason") for i in contacts}
    gaps: dict[int, tuple[int | None, int | None]] = {}
    for m, i in enumerate(contacts):
        t = ordered[i]["t"]
        later = contacts[m + 1 :]
        next_any = ordered[later[0]]["t"] - t if later else None
        next_same = next(
            (ordered[j]["t"] - t for j in later if same_reason(reasons[i], reasons[j])), None
        )
        gaps[i] = (next_any, next_same)
    reopens: list[list[Any]] = profile.get("reopens", [])
    out: dict[str, QRow] = {}
    for i, step in enumerate(ordered):
        episode, values, cross = episode_of[i]
        counters, t = step["c"], step["t"]
        reopen = None
        cases = step.get("s", {}).get("cases") if contact[i] else None
        if cases and reopens:
            reopen = next((rt - t for rt, case in reopens if rt > t and case in cases), None)
        n_sentiment = counters.get("sentiment_n", 0)
        gap = gaps.get(i, (None, None))
        out[step["k"]] = QRow(
            at_us=t,
            activity=activities[i],
            prev_activity=None if i == 0 or episode_of[i - 1][0] != episode else activities[i - 1],
            channel=channels[i],
            contact=contact[i],
            reason=reasons.get(i),
            team=_value(step, "l", "team"),
            segment=values,
            resolved=_value(step, "l", "resolved") if contact[i] else None,
            transfers=counters.get("transfers", 0),
            abandon_at=_value(step, "f", "abandon_at") if counters.get("abandons") else None,
            abandon_wait_ms=counters.get("abandon_wait_ms", 0),
            queue_wait_ms=_queue_wait_ms(step),
            sentiment_milli=(
                round(counters.get("sentiment_milli", 0) / n_sentiment) if n_sentiment else None
            ),
            callback=_callback(ordered, i),
            next_any_us=gap[0],
            next_same_us=gap[1],
            reopen_us=reopen,
            episode=episode,
            episode_end=i in ends,
            cross_unresolved=cross and i in ends,
        )
    return out


def rows_difference(
    old: dict[str, QRow], new: dict[str, QRow]
) -> tuple[list[tuple[str, QRow]], list[str]]:
    """(rows to save, step keys to delete) turning ``old`` into ``new``."""
    save = [(k, r) for k, r in sorted(new.items()) if old.get(k) != r]
    drop = sorted(k for k in old if k not in new)
    return save, drop


# --- FCR ----------------------------------------------------------------------------------------

RESOLVED, REPEATED, OPEN, OPEN_REPEATED = "resolved", "repeated", "open", "open_repeated"


def further_gap(row: QRow, *, same: bool, reopen_counts: bool) -> int | None:
    """Time to the further contact that makes this contact a repeat (None: none yet)."""
    gap = row.next_same_us if same else row.next_any_us
    if reopen_counts and row.reopen_us is not None:
        gap = row.reopen_us if gap is None else min(gap, row.reopen_us)
    return gap


def judge(at_us: int, gap_us: int | None, window_us: int, as_of_us: int) -> str:
    """A contact at ``at_us`` seen at ``as_of_us``: judged once its window has elapsed before
    ``as_of`` (``at + W < as_of``) — ``resolved`` (no further contact within the window) or
    ``repeated``; before that ``open``, or ``open_repeated`` when a further contact has already
    come."""
    repeat = gap_us is not None and gap_us <= window_us and at_us + gap_us <= as_of_us
    if at_us + window_us < as_of_us:
        return REPEATED if repeat else RESOLVED
    return OPEN_REPEATED if repeat else OPEN


# --- FCR counts by day (what the FCR report reads when it can; see ``fcr.py``) ---------------

DAY_US = 86_400_000_000
# Windows (days) counted exactly by the day counts; others are read from the quality rows.
LADDER_DAYS = (1, 2, 3, 5, 7, 10, 14, 21, 28, 30, 35, 42, 45, 60, 90, 120, 180, 270, 365, 400)
# (same reason, reopens count) of each stored mode
MODES = ((False, False), (True, False), (False, True), (True, True))
# day, mode, reason, activity, team ('' when none), declared (0 unknown, 1 yes, 2 no), threshold
FcrCell = tuple[int, int, str, str, str, int, int]


def mode_of(same: bool, reopen_counts: bool) -> int:
    return MODES.index((same, reopen_counts))


_LADDER_US = [days * DAY_US for days in LADDER_DAYS]


def threshold(gap_us: int | None) -> int:
    """The index of the smallest ladder window holding the gap; ``len(LADDER_DAYS)``: none."""
    if gap_us is None:
        return len(LADDER_DAYS)
    return bisect_left(_LADDER_US, gap_us)


def thresholds(r: QRow) -> list[int]:
    """A contact's ``threshold`` under each FCR mode, in ``MODES`` order (what FCR cells and
    repeat-contact examples count it under)."""
    return [threshold(further_gap(r, same=s, reopen_counts=o)) for s, o in MODES]


def _count_fcr(out: dict[FcrCell, int], rows: Iterable[QRow], sign: int) -> None:
    for r in rows:
        if not r.contact:
            continue
        declared = 0 if r.resolved is None else (1 if r.resolved else 2)
        day, reason, team = r.at_us // DAY_US, r.reason or "", r.team or ""
        for mode, t in enumerate(thresholds(r)):
            cell = (day, mode, reason, r.activity, team, declared, t)
            out[cell] = out.get(cell, 0) + sign


def fcr_cells(rows: Iterable[QRow]) -> Counter[FcrCell]:
    """Contacts counted by (day, mode, reason, activity, team, declared, threshold)."""
    out: dict[FcrCell, int] = {}
    _count_fcr(out, rows, 1)
    return Counter(out)


def cells_difference(old: Iterable[QRow], new: Iterable[QRow]) -> dict[FcrCell, int]:
    delta: dict[FcrCell, int] = {}
    _count_fcr(delta, new, 1)
    _count_fcr(delta, old, -1)
    return {k: v for k, v in delta.items() if v}


# --- pain-point counts by day (what pain points and health read when they can; ``pain.py``) --

LONG_WAIT_MS = 300_000  # the default long-wait threshold, the one the day counts hold
# day, activity, prev_activity ('' when none), channel, contact, stat, value ('' when none)
PainCell = tuple[int, str, str, str, bool, str, str]


def _count_pain(out: dict[PainCell, int], rows: Iterable[QRow], sign: int) -> None:
    for r in rows:
        base = (r.at_us // DAY_US, r.activity, r.prev_activity or "", r.channel, r.contact)
        stats = [("rows", "")]
        if r.abandon_at is not None:
            stats.append(("abandon", r.abandon_at))
            if r.abandon_wait_ms:
                waited: PainCell = (*base, "abandon_wait", "")
                out[waited] = out.get(waited, 0) + sign * r.abandon_wait_ms
        if r.transfers >= 1:
            stats.append(("transfer", "1"))
            if r.transfers >= 2:
                stats.append(("transfer", "2"))
        if r.sentiment_milli is not None:
            stats.append(("sentiment", ""))
            if r.sentiment_milli <= NEGATIVE_SENTIMENT_MILLI:
                stats.append(("negative", ""))
        if r.queue_wait_ms is not None:
            wait = str(bucket(r.queue_wait_ms * 1000))
            narrow: PainCell = (base[0], r.activity, "", r.channel, r.contact, "wait", wait)
            out[narrow] = out.get(narrow, 0) + sign
            if r.queue_wait_ms > LONG_WAIT_MS:
                stats.append(("long", ""))
        if r.callback != CALLBACK_NONE:
            stats.append(("callback", ""))
            if r.callback == CALLBACK_MISSED:
                stats.append(("callback_missed", ""))
        if r.episode_end:
            stats.append(("episode_end", ""))
        if r.cross_unresolved:
            stats.append(("cross_unresolved", ""))
        for stat, value in stats:
            cell: PainCell = (*base, stat, value)
            out[cell] = out.get(cell, 0) + sign


def pain_cells(rows: Iterable[QRow]) -> Counter[PainCell]:
    """Steps counted by (day, activity, edge source, channel, contact, stat, value): every
    figure a pain-point row or the health summary needs that does not depend on ``as_of``
    beyond the day (``abandon_wait`` sums milliseconds; ``wait`` is the map's log bucket,
    counted without the edge source: the queue-wait histogram is most of the cells, and only
    touchpoint and channel read it)."""
    out: dict[PainCell, int] = {}
    _count_pain(out, rows, 1)
    return Counter(out)


def pain_difference(old: Iterable[QRow], new: Iterable[QRow]) -> dict[PainCell, int]:
    delta: dict[PainCell, int] = {}
    _count_pain(delta, new, 1)
    _count_pain(delta, old, -1)
    return {k: v for k, v in delta.items() if v}


# --- pain-point examples by day (the latest affected step a pain-point row shows) -------------

EXAMPLE_SEP = "\x1f"
# day, activity, channel, kind: a pain-point kind counted by ``pain_cells`` (callbacks: missed,
# judged at read), or ``r:<mode>:<threshold>:<reason>`` for contacts that a further contact
# followed within ladder window ``threshold`` under FCR mode ``mode`` (repeat contacts)
ExampleCell = tuple[int, str, str, str]


def example_text(at_us: int, customer: str, episode: str, step_key: str) -> str:
    """A step as its example text, ordered (in the C collation) as the row scan's ``max``:
    time (zero-padded as SQL's ``lpad``), customer, episode, step key."""
    sep = EXAMPLE_SEP
    return f"{str(at_us).rjust(20, '0')[:20]}{sep}{customer}{sep}{episode}{sep}{step_key}"


def with_customer(text: str, customer: str) -> str:
    """An example text derived without its customer (``examples(..., customer="")``) with it."""
    at, _none, rest = text.split(EXAMPLE_SEP, 2)
    return f"{at}{EXAMPLE_SEP}{customer}{EXAMPLE_SEP}{rest}"


def example_kinds(r: QRow) -> list[str]:
    """The example cells' kinds a step is an affected step of (see ``ExampleCell``)."""
    kinds = []
    if r.abandon_at is not None:
        kinds.append("abandon")
    if r.callback == CALLBACK_MISSED:
        kinds.append("callback_not_completed")
    if r.cross_unresolved:
        kinds.append("cross_channel_unresolved")
    if r.transfers >= 2:
        kinds.append("transfer_chain")
    if r.sentiment_milli is not None and r.sentiment_milli <= NEGATIVE_SENTIMENT_MILLI:
        kinds.append("negative_sentiment")
    if r.queue_wait_ms is not None and r.queue_wait_ms > LONG_WAIT_MS:
        kinds.append("long_wait")
    if r.transfers >= 1:
        kinds.append("transfer")
    if r.contact:
        reason = r.reason or ""
        for mode, t in enumerate(thresholds(r)):
            if t < len(LADDER_DAYS):
                kinds.append(f"r:{mode}:{t}:{reason}")
    return kinds


def examples(rows: Iterable[tuple[str, str, QRow]]) -> dict[ExampleCell, str]:
    """The latest affected step (its ``example_text``) per example cell, of (customer, step
    key, row) triples."""
    out: dict[ExampleCell, str] = {}
    for customer, key, r in rows:
        kinds = example_kinds(r)
        if not kinds:
            continue
        text = example_text(r.at_us, customer, r.episode, key)
        day = r.at_us // DAY_US
        for kind in kinds:
            cell = (day, r.activity, r.channel, kind)
            if cell not in out or text > out[cell]:
                out[cell] = text
    return out


def examples_difference(
    old: dict[str, QRow], new: dict[str, QRow]
) -> tuple[dict[ExampleCell, str], dict[ExampleCell, str]]:
    """One customer's (candidates, withdrawn) example texts, without the customer: the new
    latest step of each cell whose latest changed, and the old one it replaces (to recompute
    the cell if that was the cell's example)."""
    before = examples(("", k, r) for k, r in old.items())
    after = examples(("", k, r) for k, r in new.items())
    added = {c: t for c, t in after.items() if before.get(c) != t}
    withdrawn = {c: t for c, t in before.items() if after.get(c) != t}
    return added, withdrawn
