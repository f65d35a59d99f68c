"""Conformance of a real journey to a designed one (pure: values in, values out).

The designed journey is a sequence of activities at a granularity; some may be optional, and a
step may give the longest expected time since the previous step taken. A real journey is its
path at that granularity with its step times.

- **Alignment** with unit costs: matched steps (synchronous moves), real steps left unmatched
  (log moves: inserted steps) and designed steps left unmatched (model moves: skipped steps).
  Against a purely sequential model the optimal alignment is a longest common subsequence (LCS),
  and the alignment fitness is ``2·LCS(real, designed) / (|real| + |designed|)``.
- **Optional steps**: the designed journey stands for every sequence with or without each
  optional step; fitness is the best over them. Taking an optional step that the journey matches
  never lowers fitness, leaving out one it does not match never does either, so ``designed``
  counts the required steps plus the optional ones matched, and the alignment maximises
  ``2·(r + k) / (|real| + R + k)`` (``r`` required and ``k`` optional steps matched, ``R``
  required steps). Without optional steps that is exactly the LCS formula.
- **Deviations** (at most once each per journey; ``occurrences`` counts them all):
  ``skipped`` a required designed step whose activity the journey never visits;
  ``wrong_order`` a designed step whose activity the journey visits but not where it could be
  matched in order; ``inserted`` a real step left unmatched whose activity is not explained by
  a ``wrong_order`` (an extra activity, or a designed one repeated); ``too_slow`` a matched step
  reached later than its ``max_wait`` after the step matched to the closest earlier designed
  step the journey took.
- A journey **fully conforms** when it has no deviation (fitness 1 and nothing too slow).
- Ties between optimal alignments are broken the same way every time (match as early in the
  designed journey as possible), so a path always gives the same deviations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

SKIPPED, INSERTED, WRONG_ORDER, TOO_SLOW = "skipped", "inserted", "wrong_order", "too_slow"
KINDS = (SKIPPED, INSERTED, WRONG_ORDER, TOO_SLOW)


@dataclass(frozen=True, slots=True)
class Designed:
    """One designed step: activity at the design's granularity, optional, max wait in µs."""

    activity: str
    optional: bool = False
    max_wait_us: int | None = None


Model = tuple[Designed, ...]
Deviation = tuple[str, str]  # (kind, activity)


@dataclass(frozen=True, slots=True)
class Alignment:
    """The best alignment of one path (independent of times)."""

    fitness: float
    matched: tuple[tuple[int, int], ...]  # (path index, model index), increasing
    designed_length: int  # required steps + optional steps matched
    deviations: tuple[Deviation, ...]  # wrong_order / skipped (design order), then inserted


def fitness_of(lcs: int, real: int, designed: int) -> float:
    """``2·LCS / (|real| + |designed|)``; 1.0 for two empty sequences."""
    total = real + designed
    return 2 * lcs / total if total else 1.0


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of a longest common subsequence (plain dynamic programming)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def _table(path: Sequence[str], model: Model) -> list[list[dict[int, int]]]:
    """best[i][j]: for prefixes path[:i], model[:j], the most required matches ``r`` for each
    number ``k`` of optional matches (only the Pareto-useful entries are kept)."""
    n, m = len(path), len(model)
    best: list[list[dict[int, int]]] = [[{0: 0}] * (m + 1)]
    for i in range(1, n + 1):
        row: list[dict[int, int]] = [{0: 0}]
        up = best[i - 1]
        x = path[i - 1]
        for j in range(1, m + 1):
            cell = dict(up[j])
            for k, r in row[j - 1].items():
                if cell.get(k, -1) < r:
                    cell[k] = r
            step = model[j - 1]
            if step.activity == x:
                for k, r in up[j - 1].items():
                    kk, rr = (k + 1, r) if step.optional else (k, r + 1)
                    if cell.get(kk, -1) < rr:
                        cell[kk] = rr
            row.append(cell)
        best.append(row)
    return best


def align(path: Sequence[str], model: Model) -> Alignment:
    """The optimal alignment of ``path`` to ``model`` with its deviations (times aside)."""
    return _align(tuple(path), model)


@lru_cache(maxsize=262_144)
def _align(path: tuple[str, ...], model: Model) -> Alignment:
    n, m = len(path), len(model)
    required = sum(1 for s in model if not s.optional)
    best = _table(path, model)
    final = best[n][m]
    # Best fitness; ties: more steps matched, then fewer optional ones.
    k, r = max(final.items(), key=lambda kr: (_fit(kr, n, required), kr[0] + kr[1], -kr[0]))
    fitness = _fit((k, r), n, required)
    matched: list[tuple[int, int]] = []
    i, j = n, m
    while i > 0 and j > 0:
        step = model[j - 1]
        if step.activity == path[i - 1]:
            kk, rr = (k - 1, r) if step.optional else (k, r - 1)
            if kk >= 0 and rr >= 0 and best[i - 1][j - 1].get(kk) == rr:
                matched.append((i - 1, j - 1))
                i, j, k, r = i - 1, j - 1, kk, rr
                continue
        if best[i][j - 1].get(k) == r:
            j -= 1  # the designed step is not matched (prefer matching it earlier in the path)
        else:
            i -= 1
    matched.reverse()
    return Alignment(
        fitness=fitness,
        matched=tuple(matched),
        designed_length=required + sum(1 for _, j in matched if model[j].optional),
        deviations=_deviations(path, model, matched),
    )


def _fit(kr: tuple[int, int], n: int, required: int) -> float:
    k, r = kr
    return fitness_of(r + k, n, required + k)


def _deviations(
    path: tuple[str, ...], model: Model, matched: list[tuple[int, int]]
) -> tuple[Deviation, ...]:
    real_done = {i for i, _ in matched}
    model_done = {j for _, j in matched}
    visited = set(path)
    out: list[Deviation] = []
    misplaced: set[str] = set()
    for j, step in enumerate(model):
        if j in model_done:
            continue
        if step.activity in visited:
            misplaced.add(step.activity)
            out.append((WRONG_ORDER, step.activity))
        elif not step.optional:
            out.append((SKIPPED, step.activity))
    for i, activity in enumerate(path):
        if i not in real_done and activity not in misplaced:
            out.append((INSERTED, activity))
    return tuple(out)


TimedPair = tuple[int, int, int, str]  # (path index before, path index after, limit µs, step)


def timed_pairs(alignment: Alignment, model: Model) -> list[TimedPair]:
    """The matched steps that carry a ``max_wait``, each with the path index of the step matched
    to the closest earlier designed step the journey took."""
    out: list[TimedPair] = []
    for (i0, _j0), (i1, j1) in zip(alignment.matched, alignment.matched[1:], strict=False):
        limit = model[j1].max_wait_us
        if limit is not None:
            out.append((i0, i1, limit, model[j1].activity))
    return out


def too_slow(alignment: Alignment, model: Model, times_us: Sequence[int]) -> list[Deviation]:
    """Matched steps reached later than their ``max_wait`` after the previous matched one."""
    return [
        (TOO_SLOW, step)
        for i0, i1, limit, step in timed_pairs(alignment, model)
        if times_us[i1] - times_us[i0] > limit
    ]


@dataclass(frozen=True, slots=True)
class Verdict:
    """One real journey against the design."""

    fitness: float
    deviations: tuple[Deviation, ...]

    @property
    def conforms(self) -> bool:
        return not self.deviations


def judge(path: Sequence[str], times_us: Sequence[int], model: Model) -> Verdict:
    alignment = align(path, model)
    if not any(s.max_wait_us is not None for s in model):
        return Verdict(alignment.fitness, alignment.deviations)
    slow = too_slow(alignment, model, times_us)
    return Verdict(alignment.fitness, alignment.deviations + tuple(slow))


def in_scope(path: Sequence[str], model: Model, scope: str) -> bool:
    """``all`` journeys; ``touching``: those visiting a designed activity; ``starting``: those
    whose first step is the first designed step."""
    if scope == "all":
        return True
    if scope == "starting":
        return bool(path) and bool(model) and path[0] == model[0].activity
    designed = {s.activity for s in model}
    return any(a in designed for a in path)
