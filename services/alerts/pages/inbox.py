"""The alert inbox's view of alerts: severity, grouping by owner, and the geometry of the
server-rendered SVG charts (factor contributions, engagement history). Pure functions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

SEVERITIES = ("high", "medium", "low")
BAR_WIDTH = 180.0
BAR_ROW = 22
LINE_W, LINE_H, PAD = 320.0, 120.0, 24.0


def severity(alert: dict[str, Any]) -> str:
    """high: 15+ points under the threshold, or several rules fired at once; medium: 5+ points
    under; low: otherwise (just under, or a drop while still near the threshold)."""
    gap = float(alert["threshold"]) - float(alert["score"])
    if gap >= 15 or len(alert.get("rules") or []) >= 2:
        return "high"
    if gap >= 5:
        return "medium"
    return "low"


def by_owner(alerts: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Owners alphabetically; each owner's alerts most severe first, then newest."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for alert in alerts:
        groups.setdefault(alert["owner"], []).append(alert)
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    for items in groups.values():
        items.sort(key=lambda a: a["opened_at"], reverse=True)
        items.sort(key=lambda a: rank[a["severity"]])
    return sorted(groups.items())


def contribution_bars(explanation: dict[str, Any]) -> list[dict[str, Any]]:
    """One bar per factor: points earned out of the factor's maximum, weakest first."""
    points: dict[str, float] = explanation.get("contributions") or {}
    maxima: dict[str, float] = explanation.get("max_points") or {}
    bars: list[dict[str, Any]] = []
    for factor, top in maxima.items():
        got = float(points.get(factor, 0.0))
        share = got / top if top > 0 else 0.0
        bars.append({"factor": factor, "points": got, "max": float(top), "share": share})
    bars.sort(key=lambda b: b["share"])
    for i, bar in enumerate(bars):
        bar["y"] = i * BAR_ROW
        bar["width"] = round(BAR_WIDTH * min(max(bar["share"], 0.0), 1.0), 1)
        bar["low"] = bar["share"] < 0.5
    return bars


def history_chart(history: list[dict[str, Any]], threshold: float | None) -> dict[str, Any]:
    """Engagement over time (scores 0–100) as an SVG polyline, oldest left."""
    points = sorted(
        (
            (
                h["scored_at"]
                if isinstance(h["scored_at"], datetime)
                else datetime.fromisoformat(h["scored_at"]),
                float(h["score"]),
            )
            for h in history
        ),
        key=lambda p: p[0],
    )
    if len(points) < 2:
        return {"enough": False, "count": len(points)}
    t0, t1 = points[0][0].timestamp(), points[-1][0].timestamp()
    span = max(t1 - t0, 1.0)

    def x(at: datetime) -> float:
        return round(PAD + (LINE_W - 2 * PAD) * (at.timestamp() - t0) / span, 1)

    def y(score: float) -> float:
        return round(LINE_H - PAD - (LINE_H - 2 * PAD) * min(max(score, 0.0), 100.0) / 100.0, 1)

    coords = [(x(at), y(score)) for at, score in points]
    return {
        "enough": True,
        "count": len(points),
        "width": LINE_W,
        "height": LINE_H,
        "polyline": " ".join(f"{cx},{cy}" for cx, cy in coords),
        "last": coords[-1],
        "threshold_y": y(threshold) if threshold is not None else None,
        "first_at": points[0][0],
        "last_at": points[-1][0],
        "last_score": points[-1][1],
        "left": PAD,
        "right": LINE_W - PAD,
        "top": y(100.0),
        "bottom": y(0.0),
    }
