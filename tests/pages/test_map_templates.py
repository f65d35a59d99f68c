"""The journey map's templates compile, and the issue-9 partials (not shown until the quality
module is read, PENDING(issue 9)) render the shape each one documents. No browser needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared.web.templating import make_templates

TEMPLATES = Path(__file__).resolve().parents[2] / "services/journey/pages/templates"
QUALITY: dict[str, Any] = {
    "pain_points": [
        {"kind": "abandon", "where": "ivr:billing_menu", "count": 12, "rate": 0.31,
         "change": 0.05, "impact": 3.7, "drill": {"node": "ivr:billing_menu"}},
    ],
    "fcr": {"by": "reason", "windows": ["7d", "35d"],
            "rows": [{"key": "billing", "judged": 40, "open_share": 0.1,
                      "rates": {"7d": 0.8, "35d": 0.6}, "repeat_rates": {}}]},
    "experience": {"rows": [{"where": "web_chat>phone", "csat": 3.1, "nps": -12, "ces": None,
                             "responses": 25}],
                   "moments_of_truth": [{"step": "phone:billing", "effect": -0.8,
                                         "ci": [-1.2, -0.4], "n": 60}]},
    "conformance": {"name": "refund", "mean_fitness": 0.82, "conforming_share": 0.4,
                    "deviations": [{"kind": "skipped", "step": "email", "count": 9}]},
    "health": {"figures": [{"name": "FCR 7d", "value": "80 %", "previous": "76 %"}]},
}  # fmt: skip


def test_every_map_template_compiles():
    env = make_templates(TEMPLATES).env
    for path in TEMPLATES.glob("*.html"):
        env.get_template(path.name)


@pytest.mark.parametrize("name", sorted(QUALITY))
def test_the_quality_partials_render_their_documented_shape(name: str):
    env = make_templates(TEMPLATES).env
    html = env.get_template(f"_quality_{name}.html").render(
        map={"quality": QUALITY}, query="granularity=touchpoint"
    )
    assert f'data-quality="{name}"' in html
    assert "PENDING" not in html  # the marker is a template comment, never shown
