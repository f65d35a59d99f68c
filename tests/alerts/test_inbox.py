"""The inbox's pure helpers: severity, grouping by owner, the SVG charts' geometry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.alerts.pages.inbox import by_owner, contribution_bars, history_chart, severity


def alert(score: float, *, threshold: float = 40, rules=("below_threshold",), owner="cs", at=0):
    opened = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=at)
    return {"score": score, "threshold": threshold, "rules": list(rules), "owner": owner,
            "opened_at": opened}  # fmt: skip


def test_severity_grows_with_the_gap_under_the_threshold_and_with_rules():
    assert severity(alert(38)) == "low"
    assert severity(alert(35)) == "medium"
    assert severity(alert(25)) == "high"
    assert severity(alert(39, rules=("below_threshold", "score_drop"))) == "high"


def test_by_owner_puts_the_most_severe_and_newest_first():
    items = [alert(38, owner="b", at=1), alert(20, owner="b", at=0), alert(38, owner="a", at=2),
             alert(38, owner="b", at=3)]  # fmt: skip
    for a in items:
        a["severity"] = severity(a)
    groups = by_owner(items)
    assert [owner for owner, _ in groups] == ["a", "b"]
    b = groups[1][1]
    assert [x["severity"] for x in b] == ["high", "low", "low"]
    assert b[1]["opened_at"] > b[2]["opened_at"]


def test_contribution_bars_are_proportional_and_weakest_first():
    bars = contribution_bars(
        {
            "contributions": {"activity": 7.0, "cases": 15.0},
            "max_points": {"activity": 35.0, "cases": 15.0},
        }  # fmt: skip
    )
    assert [b["factor"] for b in bars] == ["activity", "cases"]
    assert bars[0]["width"] == 36.0
    assert bars[0]["low"] is True
    assert bars[1]["width"] == 180.0
    assert bars[1]["low"] is False
    assert bars[1]["y"] > bars[0]["y"]


def test_history_chart_maps_time_left_to_right_and_score_bottom_to_top():
    t = datetime(2026, 1, 1, tzinfo=UTC)
    chart = history_chart(
        [{"scored_at": t + timedelta(days=2), "score": 20.0},
         {"scored_at": t, "score": 80.0}],  # newest first, as the API returns it
        threshold=40.0,
    )  # fmt: skip
    (x0, y0), (x1, y1) = (tuple(map(float, p.split(","))) for p in chart["polyline"].split())
    assert x0 < x1
    assert y0 < y1
    assert chart["bottom"] > chart["threshold_y"] > chart["top"]
    assert history_chart([{"scored_at": t, "score": 50.0}], 40.0) == {"enough": False, "count": 1}
