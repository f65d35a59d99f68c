"""The set-based decay pass (SQL) scores exactly like ``scoring.score`` (Python)."""

from __future__ import annotations

import random
from datetime import timedelta

from sqlalchemy import text

from services.alerts.model import EngagementModel
from services.alerts.repository import put_model
from services.alerts.scheduler import rescore_due
from services.alerts.scoring import Aggregates, score
from services.alerts.state import CustomerState, save_states
from shared.db import Database, raw_connection
from tests.alerts.conftest import T0
from tests.support import TenantFactory

MODEL = EngagementModel.model_validate(
    {
        "weights": {"activity": 30, "utilisation": 20, "cases": 15, "friction": 5,
                    "satisfaction": 20, "sentiment": 10},
        "params": {"activity_half_life_days": 9, "friction_limit": 3},
        # thresholds at 0 and no rules: nobody is a candidate, so SQL writes every score
        "thresholds": {"alert_below": 0, "rules": []},
        "segments": {
            "tier:gold": {"weights": {"sentiment": 0, "activity": 50},
                          "params": {"activity_target": 4, "case_limit": 1}},
            "lifecycle_stage:trial": {"weights": {"utilisation": 0}},
        },
    }
)  # fmt: skip


def random_state(tenant: str, i: int, rnd: random.Random) -> CustomerState:
    segment = rnd.choice(["default", "tier:gold", "lifecycle_stage:trial", "tier:unknown"])
    return CustomerState(
        tenant_id=tenant,
        customer_id=f"p{i:04d}",
        segment=segment,
        agg=Aggregates(
            activity=rnd.uniform(0, 30),
            repeats=rnd.choice([0.0, rnd.uniform(0, 4)]),
            friction=rnd.choice([0.0, rnd.uniform(0, 8)]),
            decayed_at=rnd.choice([None, T0 - timedelta(hours=rnd.uniform(0, 2000))]),
            seats_active=rnd.choice([None, rnd.randint(0, 20)]),
            seats_purchased=rnd.choice([None, 0, rnd.randint(1, 20)]),
            open_cases=[f"k{j}" for j in range(rnd.choice([0, 0, 1, 3]))],
            satisfaction=rnd.choice([None, rnd.random()]),
            sentiment=rnd.choice([None, rnd.random()]),
        ),
        recorded_score=rnd.choice([None, rnd.uniform(0, 100)]),
        scored_at=T0 - timedelta(days=1),
    )


async def test_sql_decay_scores_match_the_python_model(db: Database, make_tenant: TenantFactory):
    tenant = (await make_tenant()).id
    rnd = random.Random(20261122)
    states = [random_state(tenant, i, rnd) for i in range(300)]
    async with db.session() as session:
        await put_model(session, tenant, MODEL, actor="test")
        await save_states(await raw_connection(session), states)
    assert await rescore_due(db, now=T0, stale_after=timedelta(hours=1), batch_size=128,
                             tenant_id=tenant) == 300  # fmt: skip
    async with db.session() as session:
        rows = {
            r.customer_id: r
            for r in await session.execute(
                text(
                    "SELECT customer_id, score, contributions, recorded_score FROM "
                    "alerts.customer_state WHERE tenant_id = :t"
                ),
                {"t": tenant},
            )
        }
        history = (
            await session.execute(
                text("SELECT count(*) FROM alerts.score_history WHERE tenant_id = :t"),
                {"t": tenant},
            )
        ).scalar_one()
    recorded = 0
    for state in states:
        resolved = MODEL.for_segment(state.segment)
        expected = score(state.agg, resolved.weights, resolved.params, T0)
        got = rows[state.customer_id]
        assert abs(got.score - expected.value) <= 0.011, state
        contributions = got.contributions
        assert set(contributions["points"]) == set(expected.contributions), state
        for factor, points in expected.contributions.items():
            assert abs(contributions["points"][factor] - points) <= 0.011, (state, factor)
            assert abs(contributions["max_points"][factor] - expected.max_points[factor]) <= 0.011
            assert abs(contributions["factors"][factor] - expected.factors[factor]) <= 0.00011
        if state.recorded_score is None or abs(expected.value - state.recorded_score) >= 1.0:
            recorded += 1
            assert got.recorded_score == got.score
        else:
            assert got.recorded_score == state.recorded_score
    assert history == recorded
