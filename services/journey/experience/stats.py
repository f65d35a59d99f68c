"""Score summaries and the two-group comparison behind moments of truth (pure).

A comparison is Welch's: the difference of the two means, its standard error
``sqrt(s1²/n1 + s2²/n2)``, a normal-approximation two-sided p-value and a 95 % confidence
interval (the groups are large: ``min_sample`` per side), and Cohen's d (difference over the
pooled standard deviation) as the effect size that ranks moments across metrics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

Z95 = NormalDist().inv_cdf(0.975)
SURVEYS = ("csat", "nps", "ces")


def nps_points(score: float) -> float:
    """A response's contribution to NPS: promoter (9–10) +100, detractor (0–6) −100."""
    return 100.0 if score >= 9 else -100.0 if score <= 6 else 0.0


def summary(kind: str, scores: Sequence[float]) -> dict[str, float | int | None]:
    """CSAT: mean and share satisfied (4–5); NPS: promoters − detractors (%); CES: mean."""
    n = len(scores)
    if kind == "nps":
        promoters = sum(1 for s in scores if s >= 9)
        detractors = sum(1 for s in scores if s <= 6)
        return {
            "n": n,
            "score": round(100 * (promoters - detractors) / n, 2) if n else None,
            "promoters": promoters,
            "detractors": detractors,
        }
    out: dict[str, float | int | None] = {
        "n": n,
        "mean": round(sum(scores) / n, 3) if n else None,
    }
    if kind == "csat":
        out["satisfied_share"] = round(sum(1 for s in scores if s >= 4) / n, 4) if n else None
    return out


@dataclass(frozen=True, slots=True)
class Comparison:
    n_with: int
    n_without: int
    mean_with: float
    mean_without: float
    effect: float  # mean_with − mean_without
    ci_low: float
    ci_high: float
    p_value: float
    cohens_d: float


def _mean_var(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, var


def compare(with_: Sequence[float], without: Sequence[float]) -> Comparison:
    """Welch comparison of two groups (each at least 2 values)."""
    n1, n2 = len(with_), len(without)
    m1, v1 = _mean_var(with_)
    m2, v2 = _mean_var(without)
    diff = m1 - m2
    se = math.sqrt(v1 / n1 + v2 / n2)
    if se == 0:
        p = 1.0 if diff == 0 else 0.0
    else:
        p = 2 * (1 - NormalDist().cdf(abs(diff) / se))
    pooled = math.sqrt(((n1 - 1) * v1 + (n2 - 1) * v2) / (n1 + n2 - 2)) if n1 + n2 > 2 else 0.0
    d = diff / pooled if pooled else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    return Comparison(n1, n2, m1, m2, diff, diff - Z95 * se, diff + Z95 * se, p, d)
