"""Threshold backtesting against real churn: for a candidate threshold, how many customers who
churned had fallen below it beforehand (and how early), and how many who fell below it churned."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_BACKTEST = text(
    """
WITH churned AS (
    SELECT customer_id, min(occurred_at) AS at FROM alerts.churn_outcome
    WHERE tenant_id = :t AND outcome = 'churned' AND occurred_at >= :since
    GROUP BY customer_id
),
caught AS (
    SELECT c.customer_id, c.at - min(h.scored_at) AS lead
    FROM churned c JOIN alerts.score_history h
      ON h.tenant_id = :t AND h.customer_id = c.customer_id
     AND h.scored_at < c.at AND h.scored_at >= c.at - CAST(:horizon AS interval)
     AND h.score < :threshold
    GROUP BY c.customer_id, c.at
),
flagged AS (
    SELECT customer_id, min(scored_at) AS first_below FROM alerts.score_history
    WHERE tenant_id = :t AND score < :threshold AND scored_at >= :since
    GROUP BY customer_id
)
SELECT
    (SELECT count(*) FROM churned) AS churned,
    (SELECT count(*) FROM caught) AS churned_flagged_before,
    (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM lead))
       FROM caught) / 86400.0 AS median_lead_time_days,
    (SELECT count(*) FROM flagged) AS flagged,
    (SELECT count(*) FROM flagged f JOIN churned c USING (customer_id)
      WHERE c.at >= f.first_below AND c.at < f.first_below + CAST(:horizon AS interval))
      AS flagged_then_churned
"""
)


async def backtest(
    session: AsyncSession,
    tenant_id: str,
    *,
    thresholds: list[float],
    since: datetime,
    horizon: timedelta,
) -> list[dict[str, Any]]:
    """One row per threshold: recall (share of churners flagged within ``horizon`` before they
    churned), precision (share of flagged customers who churned within ``horizon``), lead time."""
    results = []
    for threshold in thresholds:
        row = (
            await session.execute(
                _BACKTEST,
                {"t": tenant_id, "since": since, "horizon": horizon, "threshold": threshold},
            )
        ).one()
        results.append(
            {
                "threshold": threshold,
                "churned": row.churned,
                "churned_flagged_before": row.churned_flagged_before,
                "recall": row.churned_flagged_before / row.churned if row.churned else None,
                "flagged": row.flagged,
                "flagged_then_churned": row.flagged_then_churned,
                "precision": row.flagged_then_churned / row.flagged if row.flagged else None,
                "median_lead_time_days": row.median_lead_time_days,
            }
        )
    return results
