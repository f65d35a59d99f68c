"""Conformance rules: fitness against hand-computed LCS values with the deviations listed, and
properties (hypothesis) against a brute-force LCS over every choice of optional steps."""

from __future__ import annotations

from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.journey.conformance import rules
from services.journey.conformance.rules import Designed, align, fitness_of, judge, lcs_length

H = 3_600_000_000  # one hour in µs


def model(*names: str, optional: tuple[str, ...] = (), waits: dict[str, int] | None = None):
    waits = waits or {}
    return tuple(Designed(n, n in optional, waits.get(n)) for n in names)


ABCD = model("A", "B", "C", "D")


@pytest.mark.parametrize(
    ("path", "lcs", "fitness", "deviations"),
    [
        # identical: LCS 4, 2·4/(4+4)
        ("ABCD", 4, 1.0, []),
        # B skipped: LCS(ACD, ABCD) = 3, 2·3/(3+4) = 6/7
        ("ACD", 3, 6 / 7, [("skipped", "B")]),
        # X inserted: LCS 4, 2·4/(5+4) = 8/9
        ("ABXCD", 4, 8 / 9, [("inserted", "X")]),
        # C before B: LCS 3 (A B D), 2·3/(4+4) = 0.75; C visited out of order (not inserted too)
        ("ACBD", 3, 0.75, [("wrong_order", "C")]),
        # reversed: LCS 1, 2·1/8; ties go to the earliest designed step (A is matched)
        ("DCBA", 1, 0.25, [("wrong_order", "B"), ("wrong_order", "C"), ("wrong_order", "D")]),
        # a repeat of a designed step is an inserted step: LCS 4, 2·4/(5+4)
        ("ABBCD", 4, 8 / 9, [("inserted", "B")]),
        # two skipped, one inserted: LCS(AXD, ABCD) = 2, 2·2/(3+4) = 4/7
        ("AXD", 2, 4 / 7, [("skipped", "B"), ("skipped", "C"), ("inserted", "X")]),
    ],
)
def test_fitness_and_deviations_against_hand_computed_lcs(path, lcs, fitness, deviations):
    real = list(path)
    assert lcs_length(real, [s.activity for s in ABCD]) == lcs
    result = align(real, ABCD)
    assert result.fitness == pytest.approx(fitness)
    assert result.fitness == pytest.approx(fitness_of(lcs, len(real), 4))
    assert len(result.matched) == lcs
    assert list(result.deviations) == deviations


def test_optional_steps_count_only_when_taken():
    design = model("A", "B", "C", optional=("B",))
    assert align(list("AC"), design).fitness == 1.0  # B left out: 2·2/(2+2)
    assert align(list("ABC"), design).fitness == 1.0  # B taken: 2·3/(3+3)
    inserted = align(list("AXC"), design)
    assert inserted.fitness == pytest.approx(0.8)  # 2·2/(3+2)
    assert inserted.deviations == (("inserted", "X"),)
    # B after C: matching A C gives 2·2/(3+2) = 0.8, better than A B (2·2/(3+3)); B is out of
    # order (an optional step visited in the wrong place)
    late = align(list("ACB"), design)
    assert late.fitness == pytest.approx(0.8)
    assert late.deviations == (("wrong_order", "B"),)
    # a required step missing is skipped; an optional one missing is not a deviation
    assert align(list("AB"), design).deviations == (("skipped", "C"),)


def test_too_slow_measures_from_the_previous_step_taken():
    design = model("A", "B", "C", optional=("B",), waits={"B": H, "C": 2 * H})
    on_time = judge(list("ABC"), [0, H, 3 * H], design)
    assert on_time.conforms
    assert on_time.fitness == 1.0
    slow = judge(list("ABC"), [0, H + 1, 3 * H + 1], design)
    assert slow.fitness == 1.0
    assert slow.deviations == (("too_slow", "B"),)
    assert not slow.conforms
    # B left out: C's wait counts from A
    assert judge(list("AC"), [0, 2 * H], design).conforms
    assert judge(list("AC"), [0, 2 * H + 1], design).deviations == (("too_slow", "C"),)


def test_scope():
    assert rules.in_scope(["X", "B"], ABCD, "touching")
    assert not rules.in_scope(["X", "Y"], ABCD, "touching")
    assert rules.in_scope(["X", "Y"], ABCD, "all")
    assert rules.in_scope(["A", "Y"], ABCD, "starting")
    assert not rules.in_scope(["B", "A"], ABCD, "starting")


# --- properties ---------------------------------------------------------------------------------

letters = st.sampled_from("ABCDEF")
paths = st.lists(letters, max_size=12)


@st.composite
def designs(draw):
    names = draw(st.lists(letters, min_size=1, max_size=6, unique=True))
    flags = draw(st.lists(st.booleans(), min_size=len(names), max_size=len(names)))
    if all(flags):
        flags[0] = False
    return tuple(Designed(n, o) for n, o in zip(names, flags, strict=True))


def brute_force(path: list[str], design) -> float:
    """Best 2·LCS/(|real|+|designed|) over every choice of optional steps."""
    optional = [s.activity for s in design if s.optional]
    best = 0.0
    for k in range(len(optional) + 1):
        for taken in combinations(optional, k):
            seq = [s.activity for s in design if not s.optional or s.activity in taken]
            best = max(best, fitness_of(lcs_length(path, seq), len(path), len(seq)))
    return best


@settings(max_examples=300, deadline=None)
@given(path=paths, design=designs())
def test_fitness_is_the_best_lcs_fitness_over_optional_choices(path, design):
    result = align(path, design)
    assert 0.0 <= result.fitness <= 1.0
    assert result.fitness == pytest.approx(brute_force(path, design))
    # the alignment shown is one that reaches that fitness
    assert result.fitness == pytest.approx(
        fitness_of(len(result.matched), len(path), result.designed_length)
    )
    pairs = result.matched
    assert all(path[i] == design[j].activity for i, j in pairs)
    assert all(a[0] < b[0] and a[1] < b[1] for a, b in zip(pairs, pairs[1:], strict=False))


@settings(max_examples=300, deadline=None)
@given(path=paths, design=designs())
def test_every_unmatched_step_is_accounted_for_once(path, design):
    result = align(path, design)
    model_done = {j for _, j in result.matched}
    real_done = {i for i, _ in result.matched}
    kinds = {(k, s) for k, s in result.deviations}
    misplaced = {s for k, s in kinds if k == "wrong_order"}
    for j, step in enumerate(design):
        if j in model_done:
            assert ("skipped", step.activity) not in kinds
        elif step.activity in path:
            assert ("wrong_order", step.activity) in kinds
        elif not step.optional:
            assert ("skipped", step.activity) in kinds
    for i, activity in enumerate(path):
        if i not in real_done:
            assert activity in misplaced or ("inserted", activity) in kinds
    # no deviation exactly when the journey is one of the designed sequences
    assert (not result.deviations) == (result.fitness == 1.0)


@settings(max_examples=200, deadline=None)
@given(design=designs(), data=st.data())
def test_a_designed_sequence_fully_conforms(design, data):
    taken = [s.activity for s in design if not s.optional or data.draw(st.booleans())]
    result = judge(taken, list(range(len(taken))), design)
    assert result.conforms
    assert result.fitness == 1.0


@settings(max_examples=200, deadline=None)
@given(path=paths, names=st.lists(letters, min_size=1, max_size=6, unique=True))
def test_without_optional_steps_it_is_the_lcs_formula(path, names):
    design = tuple(Designed(n) for n in names)
    lcs = lcs_length(path, names)
    assert align(path, design).fitness == pytest.approx(fitness_of(lcs, len(path), len(names)))
    assert (align(path, design).fitness == 1.0) == (path == names)
