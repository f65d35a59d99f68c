"""Durations: a mergeable log-bucket histogram (pure).

Bucket ``b`` holds durations in [2^((b-1)/8), 2^(b/8)) milliseconds (8 buckets per doubling;
bucket 0 holds anything under 1 ms). Histograms add up bucket by bucket, so day, month,
segment and granularity totals merge exactly; a quantile is read as the bucket holding the
nearest-rank value and reported as that bucket's harmonic midpoint: within
``RELATIVE_ERROR`` (4.33 %) of the exact nearest-rank value, or 0 below 1 ms.
"""

from __future__ import annotations

import math

BUCKETS_PER_OCTAVE = 8
GAMMA = 2 ** (1 / BUCKETS_PER_OCTAVE)
RELATIVE_ERROR = (GAMMA - 1) / (GAMMA + 1)  # 4.33 %


def bucket(us: int) -> int:
    """0 for under 1 ms; else 1 + floor(8·log2(ms)): bucket b holds [2^((b-1)/8), 2^(b/8)) ms."""
    if us < 1000:
        return 0
    return 1 + math.floor(BUCKETS_PER_OCTAVE * math.log2(us / 1000))


def bucket_value_s(b: int) -> float:
    """The estimate for bucket ``b`` in seconds, within RELATIVE_ERROR of anything in it."""
    if b == 0:
        return 0.0
    low, high = GAMMA ** (b - 1), GAMMA**b
    return 2 * low * high / (low + high) / 1000


def quantile_s(histogram: dict[int, int], q: float) -> float | None:
    """Nearest-rank quantile (the ⌈q·n⌉-th smallest duration), estimated from buckets."""
    n = sum(histogram.values())
    if n <= 0:
        return None
    rank = max(1, math.ceil(q * n))
    seen = 0
    for b in sorted(histogram):
        seen += histogram[b]
        if seen >= rank:
            return bucket_value_s(b)
    return bucket_value_s(max(histogram))
