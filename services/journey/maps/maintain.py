"""Keep the stored map exact as events arrive: fold, re-derive, apply the difference.

The worker's chunk transaction only enqueues (tenant, customer, event id) in
``journey.map_pending`` (merges and splits enqueue the customers to re-derive). A compactor
drains the queue in batches, one transaction each, customers locked (advisory, skip-locked):

1. load the customers' stored steps and profile — exactly what their current contribution to
   the aggregates was computed from;
2. fold the pending events into those steps (or, for a merge or split, rebuild the steps from
   all the customer's events; a customer merged away contributes nothing any more);
3. save the changed steps, journeys and profile, and add ``new − old`` contribution to the
   batch's aggregate changes.

Steps 1-3 run part by part (``map_batch_steps``: at most that many stored steps plus queued
events in a part), a part's rows written while the next part is folded (step 3 of one part
overlaps step 2 of the next: the backend writes while this process folds); then the batch's
aggregate changes, summed over all its customers, are applied: one sorted upsert per table.

Folding is order-independent and an event is enqueued once (the event table's primary key), so
late, out-of-order and replayed events end in the same map as in-order delivery; the rebuild
(``rebuild.py``) computes the same from the stored events.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from services.journey.config import JourneySettings
from services.journey.conformance import counts as conformance
from services.journey.maps import repository as repo
from services.journey.maps import rules
from services.journey.maps.metrics import (
    MAP_AGGREGATE_ROWS,
    MAP_BATCH,
    MAP_CUSTOMERS,
    MAP_DELAY,
    MAP_EVENTS,
    MAP_FAILURES,
    MAP_LAG,
    MAP_PARTS,
    MAP_ROWS,
)
from services.journey.maps.settings import MapConfig
from services.journey.quality import maintain as quality
from services.journey.quality import repository as quality_repo
from services.journey.quality.rules import ExampleCell, FcrCell, PainCell, QRow, with_customer
from shared.db import Database, raw_connection
from shared.logging import get_logger

log = get_logger("journey.maps")
Key = repo.Key


@dataclass
class Change:
    """What re-deriving one customer changes (pure result)."""

    # steps whose summary or quality facts changed, with their quality facts (one row each):
    # stored ones (``save_steps``) and new ones (``add_steps``: written without a conflict check)
    save_steps: list[tuple[rules.Step, QRow | None]] = field(default_factory=list)
    add_steps: list[tuple[rules.Step, QRow | None]] = field(default_factory=list)
    delete_steps: list[str] = field(default_factory=list)
    profile: rules.Profile | None = None  # None: forget the customer
    steps: int = 0
    save_journeys: list[tuple[tuple[int, str], rules.JourneyRow]] = field(default_factory=list)
    add_journeys: list[tuple[tuple[int, str], rules.JourneyRow]] = field(default_factory=list)
    delete_journeys: list[tuple[int, str]] = field(default_factory=list)
    parts: dict[rules.Group, rules.Part] = field(default_factory=dict)
    fcr_cells: dict[FcrCell, int] = field(default_factory=dict)
    pain_cells: dict[PainCell, int] = field(default_factory=dict)
    examples: tuple[dict[ExampleCell, str], dict[ExampleCell, str]] = field(
        default_factory=lambda: ({}, {})
    )
    # conformance counts: the stored rows of the journeys saved or deleted (None: new journey)
    old_journeys: dict[tuple[int, str], rules.JourneyRow] = field(default_factory=dict)


def recompute(
    steps: dict[str, rules.Step],
    profile: rules.Profile | None,
    facts: list[rules.Fact],
    *,
    config: MapConfig,
    mode: str,
    counted: bool = True,
) -> Change:
    """``mode``: ``fold`` the facts into the stored steps; ``fresh``: the facts are all of the
    customer's events; ``gone``: the customer was merged away. ``steps`` and ``profile`` are
    what the stored contribution was computed from (they may be mutated): exactly the stored
    steps, so a step not among them is new (``add_steps``); ``counted=False`` when that
    contribution is not in the aggregates and its journeys are not stored (a recomputation
    after clearing them): otherwise a journey not derived from them is new (``add_journeys``)."""
    window, bands = config.window_us, config.bands
    stored = set(steps)  # before folding into them
    old_profile = profile or rules.new_profile()
    old_parts: dict[rules.Group, rules.Part] = {}
    old_rows: dict[tuple[int, str], rules.JourneyRow] = {}
    if counted:
        old_parts, old_rows = rules.derive(
            steps.values(), old_profile, window_us=window, bands=bands
        )
    old_quality = quality.rows_of(steps, old_profile, config) if counted else {}
    change = Change()
    changed: set[str] = set()  # steps whose summary changed
    if mode == "gone":
        new_steps: dict[str, rules.Step] = {}
        new_profile = None
        change.delete_steps = list(steps)
    elif mode == "fresh":
        new_steps = rules.build_steps(facts)
        new_profile = rules.new_profile()
        for fact in facts:
            rules.fold_profile(new_profile, fact)
        changed = {k for k, s in new_steps.items() if steps.get(k) != s}
        change.delete_steps = [k for k in steps if k not in new_steps]
    else:
        new_steps = steps
        new_profile = old_profile
        touched: set[str] = set()
        for fact in facts:
            key = rules.step_key(fact)
            if key is not None:
                step = new_steps.get(key)
                if step is None:
                    step = new_steps[key] = rules.new_step(key, fact)
                rules.fold_step(step, fact)
                touched.add(key)
            rules.fold_profile(new_profile, fact)
        changed = touched
    change.profile = new_profile
    change.steps = len(new_steps)
    if new_profile is not None:
        new_parts, new_rows = rules.derive(
            new_steps.values(), new_profile, window_us=window, bands=bands
        )
    else:
        new_parts, new_rows = {}, {}
    change.parts = rules.difference(old_parts, new_parts)
    new_quality = quality.rows_of(new_steps, new_profile, config)
    (
        saved,
        change.fcr_cells,
        change.pain_cells,
        change.examples,
    ) = quality.difference(old_quality, new_quality)
    changed.update(k for k, _ in saved)
    for k in sorted(changed):
        (change.save_steps if k in stored else change.add_steps).append(
            (new_steps[k], new_quality.get(k))
        )
    for jk, row in new_rows.items():
        if jk not in old_rows:
            change.add_journeys.append((jk, row))
        elif old_rows[jk] != row:
            change.save_journeys.append((jk, row))
    change.delete_journeys = [k for k in old_rows if k not in new_rows]
    change.old_journeys = {  # conformance counts: what to take out
        k: old_rows[k] for k in (*(k for k, _ in change.save_journeys), *change.delete_journeys)
    }  # fmt: skip
    return change


@dataclass
class Outcome:
    customers: int = 0
    events: int = 0
    rows: int = 0
    deleted: int = 0
    parts: int = 0  # runs of customers read and folded one after another (``steps``)
    oldest_enqueued_at: datetime | None = None


class Rows:
    """One part's own rows (steps with their quality facts, profiles, journeys, the changed
    journeys to judge) and its queue entries to remove: written by ``write`` while the
    compactor folds the next part."""

    def __init__(self) -> None:
        self.steps: list[repo.StepRow] = []
        self.new_steps: list[repo.StepRow] = []
        self.drop_steps: list[tuple[str, uuid.UUID, str]] = []
        self.profiles: list[tuple[str, uuid.UUID, rules.Profile, int]] = []
        self.forget: list[Key] = []
        self.journeys: list[tuple[repo.JourneyKey, rules.JourneyRow]] = []
        self.new_journeys: list[tuple[repo.JourneyKey, rules.JourneyRow]] = []
        self.drop_journeys: list[repo.JourneyKey] = []
        self.judged: list[conformance.JourneyChange] = []  # conformance counts (hook)
        self.seqs: list[int] = []  # queue entries folded
        self.folded: list[tuple[str, uuid.UUID, str]] = []  # events a re-derivation read

    async def write(self, conn: asyncpg.Connection, counting: conformance.Counting) -> None:
        """Write them (the batch holds the customers' locks) and judge the changed journeys."""
        await repo.forget(conn, self.forget)
        await repo.delete_steps(conn, self.drop_steps)
        await repo.save_steps(conn, self.steps)
        await repo.save_steps(conn, self.new_steps, new=True)
        await repo.save_profiles(conn, self.profiles)
        await repo.delete_journeys(conn, self.drop_journeys)
        await repo.save_journeys(conn, self.journeys)
        await repo.save_journeys(conn, self.new_journeys, new=True)
        await counting.judge(conn, self.judged)  # conformance counts hook
        if self.seqs or self.folded:
            await repo.done(conn, self.seqs, self.folded)


class Writes:
    """One batch's writes, collected across customers. Each customer's own rows go to ``rows``
    (``Rows``), which the batch takes and writes after each part (``take_rows``,
    ``flush_rows``); the aggregate changes are summed over the whole batch and written once,
    by ``flush_aggregates``, each table in key order (two compactions never wait on each other
    in a cycle). ``flush`` does both."""

    def __init__(self) -> None:
        self.deltas: dict[str, rules.Deltas] = defaultdict(rules.Deltas)
        self.fcr_cells: dict[str, dict[FcrCell, int]] = defaultdict(dict)  # per tenant
        self.pain_cells: dict[str, dict[PainCell, int]] = defaultdict(dict)
        self.examples: dict[tuple[str, ExampleCell], str] = {}
        self.withdrawn: list[tuple[tuple[str, ExampleCell], str]] = []
        self.counting = conformance.Counting()  # conformance counts (hook)
        self.rows = Rows()

    def add(self, key: Key, change: Change) -> None:
        tenant, customer = key
        rows = self.rows
        # --- conformance counts hook: every journey changed, old row and new (a merged-away
        # customer's too: its journeys go with ``forget``) ---
        old = change.old_journeys
        rows.judged += [(tenant, k[0], old[k], r) for k, r in change.save_journeys]
        rows.judged += [(tenant, k[0], None, r) for k, r in change.add_journeys]
        rows.judged += [(tenant, k[0], old[k], None) for k in change.delete_journeys]
        # --- end of hook ---
        deltas = self.deltas[tenant]
        for group, part in change.parts.items():
            deltas.add(group, part)
        fcr = self.fcr_cells[tenant]
        for cell, n in change.fcr_cells.items():  # a merged-away customer's too
            fcr[cell] = fcr.get(cell, 0) + n
        pain = self.pain_cells[tenant]
        for pcell, n in change.pain_cells.items():
            pain[pcell] = pain.get(pcell, 0) + n
        added, withdrawn = change.examples
        if added or withdrawn:
            who = str(customer)
            for ecell, text in added.items():
                text = with_customer(text, who)
                if text > self.examples.get((tenant, ecell), ""):
                    self.examples[(tenant, ecell)] = text
            self.withdrawn += [((tenant, c), with_customer(t, who)) for c, t in withdrawn.items()]
        if change.profile is None:
            rows.forget.append(key)
            return
        rows.steps += [(tenant, customer, s, q) for s, q in change.save_steps]
        rows.new_steps += [(tenant, customer, s, q) for s, q in change.add_steps]
        rows.drop_steps += [(tenant, customer, k) for k in change.delete_steps]
        rows.profiles.append((tenant, customer, change.profile, change.steps))
        rows.journeys += [((tenant, customer, *k), r) for k, r in change.save_journeys]
        rows.new_journeys += [((tenant, customer, *k), r) for k, r in change.add_journeys]
        rows.drop_journeys += [(tenant, customer, *k) for k in change.delete_journeys]

    def take_rows(self) -> Rows:
        """The rows added so far, to write; later ones go to new rows."""
        rows, self.rows = self.rows, Rows()
        return rows

    async def flush_rows(self, conn: asyncpg.Connection) -> None:
        await self.take_rows().write(conn, self.counting)

    async def flush_aggregates(self, conn: asyncpg.Connection) -> tuple[int, int]:
        """Write the batch's aggregate changes; returns (rows upserted, rows deleted)."""
        await quality_repo.apply_fcr_deltas(
            conn, [(t, c, n) for t, cells in self.fcr_cells.items() for c, n in cells.items() if n]
        )
        await quality_repo.apply_pain_deltas(
            conn, [(t, c, n) for t, cells in self.pain_cells.items() for c, n in cells.items() if n]
        )
        await quality_repo.apply_examples(conn, self.examples, self.withdrawn)
        done = await repo.apply_deltas(conn, list(self.deltas.items()))
        await self.counting.apply(conn)  # conformance counts hook
        return done

    async def flush(self, conn: asyncpg.Connection) -> tuple[int, int]:
        await self.flush_rows(conn)
        return await self.flush_aggregates(conn)


def parts_within(keys: Sequence[Key], sizes: Sequence[int], budget: int) -> list[list[Key]]:
    """``keys`` cut, in order, into runs whose sizes (stored steps plus queued events) add up
    to at most ``budget``; a customer larger than the budget is a run of its own."""
    parts: list[list[Key]] = []
    total = budget + 1  # the first key opens a run
    for key, size in zip(keys, sizes, strict=True):
        if total + size > budget:
            parts.append([])
            total = 0
        parts[-1].append(key)
        total += size
    return parts


async def drain_once(
    conn: asyncpg.Connection,
    *,
    limit: int,
    settle: float = 0.0,
    cap: float = 0.0,
    steps: int | None = None,
) -> Outcome:
    """Fold up to ``limit`` waiting customers into the map, in the caller's transaction
    (``fold_batch``, then its aggregate changes written)."""
    batch = await fold_batch(conn, limit=limit, settle=settle, cap=cap, steps=steps)
    await batch.flush(conn)
    return batch.outcome


@dataclass
class Batch:
    """The customers a batch claimed, with their own rows written and their aggregate changes
    (``writes``) still to write (``flush``)."""

    keys: list[Key]
    writes: Writes
    outcome: Outcome

    async def flush(self, conn: asyncpg.Connection) -> None:
        if self.keys:
            self.outcome.rows, self.outcome.deleted = await self.writes.flush_aggregates(conn)


async def fold_batch(
    conn: asyncpg.Connection,
    *,
    limit: int,
    settle: float = 0.0,
    cap: float = 0.0,
    steps: int | None = None,
    busy: Sequence[uuid.UUID] = (),
) -> Batch:
    """Claim up to ``limit`` waiting customers (none of ``busy``) and fold them: their own rows
    written, their aggregate changes summed in the result. ``settle`` > 0: only customers with
    no entry younger than that (in seconds) or with one older than ``cap``
    (``repository.claim``); 0 (``drain``): everything waiting. ``steps``: the most stored steps
    plus queued events in one part (None: no bound); the claimed customers are read and folded
    part by part, each part's own rows written while the next part is folded (so at most two
    parts are held at once, and the connection's PostgreSQL backend writes while this process
    folds)."""
    keys = await repo.claim(conn, limit, settle=settle, cap=cap, busy=busy)
    writes = Writes()
    outcome = Outcome(customers=len(keys))
    if not keys:
        return Batch(keys, writes, outcome)
    configs = await repo.configs(conn, (t for t, _ in keys))
    if steps is None:
        parts = [list(keys)]
    else:
        parts = parts_within(keys, await repo.sizes(conn, keys), steps)
    folded: Rows | None = None  # the last part folded: its rows still to write
    for part in parts:
        read = await _read(conn, part)
        fold = _fold(read, configs, writes, outcome)
        if folded is None:
            await fold
        else:
            await _while_writing(folded.write(conn, writes.counting), fold)
        folded = writes.take_rows()
    if folded is not None:
        await folded.write(conn, writes.counting)
    outcome.parts = len(parts)
    return Batch(keys, writes, outcome)


async def _while_writing(write: Coroutine[Any, Any, None], fold: Coroutine[Any, Any, None]) -> None:
    """Run ``fold`` (which yields to the event loop as it goes) while ``write`` uses the
    connection; return once both are done, raising the first error. The write is always
    awaited to its end, so nothing else uses the connection while it runs."""
    writing = asyncio.ensure_future(write)
    try:
        await fold
    except BaseException:
        await asyncio.wait({writing})
        if not writing.cancelled():
            writing.exception()  # retrieved: the fold's error is the one raised
        raise
    await writing


@dataclass
class _Part:
    """One part's customers as stored (read under the batch's locks) and their queue entries."""

    keys: Sequence[Key]
    pending: list[asyncpg.Record]
    waiting: dict[Key, list[asyncpg.Record]]
    gone: set[Key]  # merged away
    everything: dict[Key, list[rules.Fact]]  # queued whole (a merge, a split): all their events
    queued: dict[Key, list[rules.Fact]]  # the others: their queued events
    unchanged: set[Key]  # queued events that change no step and not the profile
    profiles: dict[Key, rules.Profile]
    stored: dict[Key, dict[str, rules.Step]]


async def _read(conn: asyncpg.Connection, keys: Sequence[Key]) -> _Part:
    """Read these claimed customers' queue entries, stored steps and profiles."""
    pending = await repo.pending_of(conn, keys)
    roots = await repo.roots(conn, keys)
    waiting: dict[Key, list[asyncpg.Record]] = defaultdict(list)
    whole: set[Key] = set()  # customers queued whole (a merge, a split): re-derived
    for row in pending:
        key = (row[1], row[2])  # tenant_id, customer_id
        waiting[key].append(row)
        if row[3] is None:  # event_id
            whole.add(key)
    gone = {k for k in keys if roots.get(k) != k[1]}
    fresh = [k for k in keys if k not in gone and k in whole]
    everything = await repo.member_facts(conn, fresh)
    profiles = await repo.profiles_of(conn, keys)
    # (A split drops the entries of events it moves: the other side re-derives them.)
    queued = {
        k: [
            rules.Fact(r["event_id"], r["type"], r["time_us"], orjson.loads(r["body"])["data"])
            for r in waiting[k]
        ]
        for k in keys
        if k not in gone and k not in everything
    }
    unchanged = {k for k, facts in queued.items() if rules.changes_nothing(profiles.get(k), facts)}
    stored = await repo.steps_of(conn, [k for k in keys if k not in unchanged])
    return _Part(keys, pending, waiting, gone, everything, queued, unchanged, profiles, stored)


# How long a fold runs between two yields to the event loop, which meanwhile lets the previous
# part's write send its next statement (a statement's reply waits at most about this long).
_FOLD_SLICE_SECONDS = 0.001


async def _fold(
    part: _Part, configs: dict[str, MapConfig], writes: Writes, outcome: Outcome
) -> None:
    """Add these customers' changes to ``writes``, and their queue entries to its rows to
    remove. No I/O: it yields to the event loop every ``_FOLD_SLICE_SECONDS``."""
    folded: list[tuple[str, uuid.UUID, str]] = []
    stored, profiles, waiting = part.stored, part.profiles, part.waiting
    sliced = time.perf_counter()
    for key in part.keys:
        if time.perf_counter() - sliced > _FOLD_SLICE_SECONDS:
            await asyncio.sleep(0)
            sliced = time.perf_counter()
        config = configs[key[0]]
        outcome.events += len(waiting[key])
        if key in part.gone:
            change = recompute(stored[key], profiles.get(key), [], config=config, mode="gone")
            MAP_CUSTOMERS.labels("removed").inc()
            MAP_EVENTS.labels("superseded").inc(sum(1 for r in waiting[key] if r["event_id"]))
        elif key in part.everything:
            facts = part.everything[key]
            change = recompute(stored[key], profiles.get(key), facts, config=config, mode="fresh")
            folded += [(key[0], key[1], f.event_id) for f in facts]
            MAP_CUSTOMERS.labels("rederived").inc()
        else:
            MAP_EVENTS.labels("folded").inc(len(part.queued[key]))
            if key in part.unchanged:
                MAP_CUSTOMERS.labels("unchanged").inc()
                continue
            change = recompute(
                stored[key], profiles.get(key), part.queued[key], config=config, mode="fold"
            )
            MAP_CUSTOMERS.labels("incremental").inc()
        writes.add(key, change)
    writes.rows.seqs += [r["seq"] for r in part.pending]
    writes.rows.folded += folded
    times = [r["enqueued_at"] for r in part.pending]
    if outcome.oldest_enqueued_at is not None:
        times.append(outcome.oldest_enqueued_at)
    outcome.oldest_enqueued_at = min(times, default=None)


async def drain(
    db: Database, *, limit: int = 500, steps: int | None = None, timeout: float = 600.0
) -> int:
    """Fold everything waiting when called (tests, start-up); returns customers this call
    folded. Entries another compactor holds (a worker on the same database, mid-batch) are
    waited for, not skipped: on return every entry queued before the call is in the map,
    whoever folded it. (``drain_once`` finding nothing to claim does not mean nothing waits.)"""
    async with db.session() as session:
        conn = await raw_connection(session)
        last = await conn.fetchval("SELECT max(seq) FROM journey.map_pending")
    total = 0
    deadline = time.monotonic() + timeout
    while True:
        async with db.session() as session:
            outcome = await drain_once(await raw_connection(session), limit=limit, steps=steps)
        total += outcome.customers
        if outcome.customers:
            continue
        if last is None:
            return total
        async with db.session() as session:
            conn = await raw_connection(session)
            waiting = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM journey.map_pending WHERE seq <= $1)", last
            )
        if not waiting:
            return total
        if time.monotonic() > deadline:
            raise TimeoutError(f"map entries up to seq {last} still wait after {timeout} s")
        await asyncio.sleep(0.05)  # another compactor holds them: its commit is the condition


def pause_after(claimed: int, *, limit: int, elapsed: float, poll: float, interval: float) -> float:
    """Seconds the compactor waits before its next claim, after a batch that claimed
    ``claimed`` customers (of at most ``limit``) and took ``elapsed`` seconds: ``poll`` when it
    found nothing; none after a full batch (a backlog: fold on); else what is left of
    ``interval`` since the batch started, so the next batch gathers what arrives meanwhile."""
    if not claimed:
        return poll
    if claimed >= limit:
        return 0.0
    return max(0.0, interval - elapsed)


class Compactor:
    """Drains the map's queue: batch after batch while it is backlogged (the next batch claims
    and folds while a full one writes its aggregate changes and commits), a batch at most every
    ``map_batch_interval_seconds`` while it keeps up, a poll every ``map_poll_seconds`` when
    idle (``pause_after``); a batch takes only customers whose queued events have settled
    (``map_settle_seconds``, or waited ``map_settle_cap_seconds``), so a burst is folded in one
    visit. A failed batch rolls back and is retried."""

    def __init__(self, db: Database, settings: JourneySettings):
        self.db = db
        self.settings = settings
        self._stats_at = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        settings = self.settings
        flushing: asyncio.Task[Outcome] | None = None  # a full batch: aggregates, commit
        busy: list[uuid.UUID] = []  # its customers
        batch: asyncio.Task[Outcome] | None = None
        try:
            while not stop.is_set():
                started = time.monotonic()
                folded: asyncio.Future[list[Key]] = asyncio.get_running_loop().create_future()
                batch = asyncio.create_task(self.step(folded, before=flushing, busy=busy))
                either: set[asyncio.Future[Any]] = {batch, folded}
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                failed = flushing is not None and await self._ended(flushing) is None
                flushing, busy = None, []
                keys = folded.result() if folded.done() else []
                if not failed and not batch.done() and len(keys) >= settings.map_batch_customers:
                    # a backlog: the next batch claims and folds while this one flushes
                    flushing, busy = batch, [c for _, c in keys]
                    failures = 0
                    continue
                outcome = await self._ended(batch)
                if failed or outcome is None:  # retried, counted: a stuck map shows as map lag
                    failures += 1
                    await _wait(stop, min(30.0, 0.1 * 2**failures))
                    continue
                failures = 0
                pause = pause_after(
                    outcome.customers,
                    limit=settings.map_batch_customers,
                    elapsed=time.monotonic() - started,
                    poll=settings.map_poll_seconds,
                    interval=settings.map_batch_interval_seconds,
                )
                if pause > 0:
                    await _wait(stop, pause)
        finally:  # the batches in hand end (commit or roll back) before the compactor does
            if flushing is not None:
                await self._ended(flushing)
            if batch is not None and not batch.done():  # (cancelled while it ran)
                await self._ended(batch)

    async def _ended(self, batch: asyncio.Task[Outcome]) -> Outcome | None:
        """The batch's outcome, or None when it failed (rolled back: counted and logged)."""
        try:
            return await batch
        except Exception as exc:
            MAP_FAILURES.labels(type(exc).__name__).inc()
            log.warning("map.compaction_failed", error=f"{type(exc).__name__}: {exc}")
            return None

    async def step(
        self,
        folded: asyncio.Future[list[Key]] | None = None,
        *,
        before: asyncio.Future[Any] | None = None,
        busy: Sequence[uuid.UUID] = (),
    ) -> Outcome:
        """One batch in one transaction. ``folded`` is given the claimed customers once their
        own rows are written; the aggregate changes are written only after ``before`` (the
        batch before, still flushing) has ended, so the two never wait on each other's rows."""
        started = time.perf_counter()
        settings = self.settings
        async with self.db.session() as session:
            conn = await raw_connection(session)
            batch = await fold_batch(
                conn,
                limit=settings.map_batch_customers,
                steps=settings.map_batch_steps,
                settle=settings.map_settle_seconds,
                cap=settings.map_settle_cap_seconds,
                busy=busy,
            )
            if folded is not None:
                folded.set_result(batch.keys)
            waited = 0.0  # for the batch before: not this batch's own time
            if before is not None:
                waiting = time.perf_counter()
                await asyncio.wait({before})
                waited = time.perf_counter() - waiting
            await batch.flush(conn)
            outcome = batch.outcome
            oldest = await repo.oldest_pending_at(conn)
            if time.monotonic() - self._stats_at > 30:
                self._stats_at = time.monotonic()
                for table, rows in await repo.table_sizes(conn):
                    MAP_AGGREGATE_ROWS.labels(table).set(rows)
        now = datetime.now(UTC)
        if outcome.customers:
            MAP_BATCH.observe(time.perf_counter() - started - waited)
            MAP_PARTS.observe(outcome.parts)
            MAP_ROWS.labels("upserted").inc(outcome.rows)
            MAP_ROWS.labels("deleted").inc(outcome.deleted)
            if outcome.oldest_enqueued_at is not None:
                MAP_DELAY.observe((now - outcome.oldest_enqueued_at).total_seconds())
        MAP_LAG.set((now - oldest).total_seconds() if oldest is not None else 0.0)
        return outcome


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass


def start_compactor(
    db: Database, settings: JourneySettings
) -> tuple[asyncio.Event, asyncio.Task[None]] | None:
    """The worker's background compactor (None when map maintenance is off)."""
    if not settings.map_maintenance:
        return None
    stop = asyncio.Event()
    return stop, asyncio.create_task(Compactor(db, settings).run(stop))


async def stop_compactor(handle: tuple[asyncio.Event, asyncio.Task[None]] | None) -> None:
    if handle is not None:
        handle[0].set()
        await asyncio.gather(handle[1], return_exceptions=True)
