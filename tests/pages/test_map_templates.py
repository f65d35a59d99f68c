"""The journey map's templates compile, and the journey-quality partials render the shapes
``map_quality.read_quality`` gives them (the browser tests check the figures). No browser
needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared.web.templating import make_templates

TEMPLATES = Path(__file__).resolve().parents[2] / "services/journey/pages/templates"
WINDOW = {
    "window": "7d",
    "judged": 40,
    "resolved": 30,
    "repeated": 10,
    "fcr_rate": 0.75,
    "repeat_rate": 0.25,
    "still_open": 10,
    "still_open_share": 0.2,
    "already_repeated": 1,
}
QUALITY: dict[str, Any] = {
    "pain_points": {
        "from": "2026-01-01", "to": "2026-01-29", "as_of": "2026-01-28T12:00:00+00:00",
        "total": 1, "coloured": 5,
        "rows": [{"kind": "abandon", "key": "ivr:billing_menu", "affected": 12, "base": 40,
                  "rate": 0.3, "severity": 1.0, "impact": 12.0,
                  "previous": {"affected": 8, "base": 40, "rate": 0.2},
                  "change": {"affected": 4, "rate": 0.1},
                  "example": {"customer_id": "c1", "journey_key": "j", "step_key": "s",
                              "at_us": 1, "timeline": "/v1/customers/c1/timeline"},
                  "drill_down": {}}],
    },
    "fcr": {"from": "2026-01-01", "to": "2026-01-29", "as_of": "2026-01-28T12:00:00+00:00",
            "by": "reason", "window": "30d", "windows": ["1d", "7d", "30d", "90d"],
            "policy_window": "7d",
            "total": {"key": None, "contacts": 50, "declared": {"rate": 0.7},
                      "windows": [WINDOW, WINDOW]},
            "groups": [{"key": "billing", "contacts": 50, "declared": {"rate": 0.7},
                        "windows": [WINDOW, WINDOW]}]},
    "experience": {"journeys": 30, "surveys": {"csat": 25}, "unattached": 0,
                   "touchpoints": [{"node": "phone", "responses": 25,
                                    "csat": {"n": 25, "mean": 3.1, "satisfied_share": 0.4}}],
                   "edges": [{"source": "web_chat", "target": "phone", "responses": 25,
                              "nps": {"n": 25, "score": -12.0}}],
                   "transfers_before": [], "repeats_before": [], "stages": [],
                   "moments_of_truth": [{"metric": "csat", "kind": "step", "node": "phone:billing",
                                         "with": {"n": 60, "mean": 2.9},
                                         "without": {"n": 80, "mean": 3.7}, "effect": -0.8,
                                         "ci95": [-1.2, -0.4], "direction": "worse"}],
                   "max_moments": 5, "min_sample": 30},
    "conformance": {"designs": ["refund"], "name": "refund", "version": 1,
                    "granularity": "touchpoint", "design": ["web_chat", "phone"],
                    "formula": "2·LCS/(|real|+|designed|)", "journeys": 20, "conforming": 8,
                    "conforming_share": 0.4, "out_of_scope": 3,
                    "fitness": {"mean": 0.82, "min": 0.5, "p50": 0.8, "histogram": {}},
                    "deviations": [{"kind": "skipped", "step": "email", "journeys": 9,
                                    "share": 0.45, "occurrences": 9, "examples": []}]},
    "health": {"period": {"from": "2026-01-01", "to": "2026-01-29"},
               "previous_period": {"from": "2025-12-04", "to": "2026-01-01"},
               "figures": [{"name": "FCR (policy window)", "kind": "rate", "value": 0.8,
                            "previous": 0.76, "change": 0.04}],
               "top_pain_points": [], "slots": {}, "missing": ["experience"]},
}  # fmt: skip


def test_every_map_template_compiles():
    env = make_templates(TEMPLATES).env
    for path in TEMPLATES.glob("*.html"):
        env.get_template(path.name)


@pytest.mark.parametrize("name", sorted(QUALITY))
def test_the_quality_partials_render_their_documented_shape(name: str):
    env = make_templates(TEMPLATES).env
    html = env.get_template(f"_quality_{name}.html").render(
        map={"quality": QUALITY}, query="granularity=touchpoint", can_see_customers=True
    )
    assert f'data-quality="{name}"' in html
