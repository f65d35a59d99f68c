"""Experience by journey position and moments of truth (pure: values in, values out).

- A survey (``survey.responded``) is tied to the step of its ``about_interaction_id`` when the
  customer has that step, else to the customer's last step at or before the survey (steps made
  only of surveys or feedback do not count); without either it is ``unattached``.
- Its **position** in the journey holding that step: the node (activity at the granularity),
  the edge into it (``(start)`` for a journey's first step), the transfers in the journey up
  to and including that step, the repeats before it (earlier steps of the journey at the same
  node) and the node's stage.
- **Moments of truth** compare units with and without a feature: a step at a node, or an
  outcome (``transferred``, ``abandoned``, ``unresolved``) anywhere in the unit. Units are
  journeys with a CSAT or NPS response (their mean score; NPS as +100 / 0 / −100 per
  response) and customers for churn (1 when the customer churned, with the features of the
  steps before the churn). A feature is tested when both sides have ``min_sample`` units;
  Welch's difference with a 95 % interval; significant when p < 0.05 / (features tested for
  that metric) (Bonferroni). The largest by |Cohen's d| are reported, at most ``limit``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.journey.experience import stats
from services.journey.maps import rules as maps

NOT_A_STEP = frozenset({"survey.responded", "feedback.submitted"})
OUTCOME_TYPES = frozenset({"customer.churned", "customer.renewed"})
START = "(start)"
MAX_BUCKET = 3  # transfers / repeats: 0, 1, 2, 3+


@dataclass(frozen=True, slots=True)
class Survey:
    event_id: str
    time_us: int
    kind: str  # csat, nps, ces
    score: float
    about: str | None


def first_type(step: maps.Step) -> str:
    return str(step["f"]["type"][2])


def counts_as_step(step: maps.Step) -> bool:
    """False for steps made only of surveys or feedback (a survey's own session)."""
    c = step["c"]
    own = c.get("feedback", 0) + sum(c.get(f"{s}_n", 0) for s in stats.SURVEYS)
    return bool(step["n"] > own)


def attach(
    time_us: int,
    about: str | None,
    steps: dict[str, maps.Step],
    views: Sequence[maps.StepView],
) -> str | None:
    """The step key a survey (or feedback) is about: its interaction, else the last step at or
    before it."""
    if about and f"i:{about}" in steps:
        return f"i:{about}"
    found = None
    for view in views:
        if view.time_us > time_us:
            break
        if counts_as_step(steps[view.key]):
            found = view.key
    return found


def bucket(n: int) -> str:
    return f"{MAX_BUCKET}+" if n >= MAX_BUCKET else str(n)


@dataclass(frozen=True, slots=True)
class Position:
    node: str
    edge: tuple[str, str]
    transfers: int
    repeats: int
    stage: str


def position(
    journey: Sequence[maps.StepView],
    index: int,
    f: Callable[[str], str],
    stage: Callable[[str], str],
) -> Position:
    node = f(journey[index].activity)
    before = [f(v.activity) for v in journey[:index]]
    return Position(
        node=node,
        edge=(before[-1] if before else START, node),
        transfers=sum(v.stats.get("transfers", 0) for v in journey[: index + 1]),
        repeats=before.count(node),
        stage=stage(journey[index].activity),
    )


def features(
    journey: Sequence[maps.StepView],
    steps: dict[str, maps.Step],
    f: Callable[[str], str],
    *,
    before_us: int | None = None,
) -> set[str]:
    """What a unit went through: ``step:<node>`` and ``outcome:<name>``."""
    out: set[str] = set()
    for view in journey:
        if before_us is not None and view.time_us >= before_us:
            break
        step = steps[view.key]
        if first_type(step) in OUTCOME_TYPES or not counts_as_step(step):
            continue
        out.add(f"step:{f(view.activity)}")
        if view.stats.get("transfers"):
            out.add("outcome:transferred")
        if view.stats.get("abandoned"):
            out.add("outcome:abandoned")
        resolved = step["l"].get("resolved")
        if resolved is not None and resolved[2] is False:
            out.add("outcome:unresolved")
    return out


@dataclass
class Scores:
    """Scores per survey kind under one key of a dimension."""

    by_kind: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(self, survey: Survey) -> None:
        self.by_kind[survey.kind].append(survey.score)

    def body(self) -> dict[str, Any]:
        return {
            "responses": sum(len(v) for v in self.by_kind.values()),
            **{k: stats.summary(k, self.by_kind[k]) for k in stats.SURVEYS if self.by_kind[k]},
        }


@dataclass
class Experience:
    """Survey scores by position, and the units for moments of truth."""

    surveys: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    unattached: int = 0
    touchpoints: dict[str, Scores] = field(default_factory=lambda: defaultdict(Scores))
    edges: dict[tuple[str, str], Scores] = field(default_factory=lambda: defaultdict(Scores))
    transfers: dict[str, Scores] = field(default_factory=lambda: defaultdict(Scores))
    repeats: dict[str, Scores] = field(default_factory=lambda: defaultdict(Scores))
    stages: dict[str, Scores] = field(default_factory=lambda: defaultdict(Scores))
    units: dict[str, list[tuple[set[str], float]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def add(self, survey: Survey, where: Position) -> None:
        for dim, key in (
            (self.touchpoints, where.node),
            (self.edges, where.edge),
            (self.transfers, bucket(where.transfers)),
            (self.repeats, bucket(where.repeats)),
            (self.stages, where.stage),
        ):
            dim[key].add(survey)  # type: ignore[index]


def _rows(dim: dict[Any, Scores], name: str) -> list[dict[str, Any]]:
    ordered = sorted(dim.items(), key=lambda kv: (-kv[1].body()["responses"], str(kv[0])))
    out = []
    for key, scores in ordered:
        if isinstance(key, tuple):
            head: dict[str, Any] = {"source": key[0], "target": key[1]}
        else:
            head = {name: key}
        out.append({**head, **scores.body()})
    return out


def experience_body(exp: Experience) -> dict[str, Any]:
    return {
        "surveys": dict(sorted(exp.surveys.items())),
        "unattached": exp.unattached,
        "touchpoints": _rows(exp.touchpoints, "node"),
        "edges": _rows(exp.edges, "edge"),
        "transfers_before": sorted(_rows(exp.transfers, "transfers"), key=lambda r: r["transfers"]),
        "repeats_before": sorted(_rows(exp.repeats, "repeats"), key=lambda r: r["repeats"]),
        "stages": _rows(exp.stages, "stage"),
    }


ALPHA = 0.05
BETTER_WHEN_LOWER = frozenset({"churn"})


def moments_of_truth(
    units: dict[str, list[tuple[set[str], float]]], *, min_sample: int, limit: int
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The significant moments, largest |d| first (at most ``limit``), and how many features
    were tested per metric."""
    found: list[tuple[float, float, dict[str, Any]]] = []
    tested: dict[str, int] = {}
    for metric in sorted(units):
        rows = units[metric]
        candidates = sorted(set().union(*(f for f, _ in rows))) if rows else []
        comparisons = []
        for feature in candidates:
            with_ = [y for f, y in rows if feature in f]
            without = [y for f, y in rows if feature not in f]
            if len(with_) >= min_sample and len(without) >= min_sample:
                comparisons.append((feature, stats.compare(with_, without)))
        tested[metric] = len(comparisons)
        for feature, c in comparisons:
            adjusted = min(1.0, c.p_value * len(comparisons))
            if adjusted >= ALPHA:
                continue
            kind, _, name = feature.partition(":")
            lower_is_better = metric in BETTER_WHEN_LOWER
            moment = {
                "metric": metric,
                "kind": kind,
                ("node" if kind == "step" else "outcome"): name,
                "with": {"n": c.n_with, "mean": round(c.mean_with, 4)},
                "without": {"n": c.n_without, "mean": round(c.mean_without, 4)},
                "effect": round(c.effect, 4),
                "ci95": [round(c.ci_low, 4), round(c.ci_high, 4)],
                "cohens_d": round(c.cohens_d, 3) if abs(c.cohens_d) != float("inf") else None,
                "p_value": c.p_value,
                "adjusted_p": adjusted,
                "direction": "worse" if (c.effect > 0) == lower_is_better else "better",
            }
            found.append((-abs(c.cohens_d), c.p_value, moment))
    found.sort(key=lambda x: (x[0], x[1], x[2]["metric"], x[2].get("node") or x[2]["outcome"]))
    return [m for _, _, m in found[:limit]], tested
