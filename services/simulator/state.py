"""Shared state of one simulated person's journey: ids, agents, surveys (pure, seeded)."""

from __future__ import annotations

import random

from services.simulator.builder import Timeline, ident
from services.simulator.people import Person

MINUTE, HOUR, DAY = 60.0, 3_600.0, 86_400.0

REASONS = {
    "billing_dispute": ("billing", "I was charged twice this month", "ORD"),
    "delivery_delay": ("logistics", "My order has not arrived yet", "ORD"),
    "login_problem": ("tech_support", "I cannot log in to my account", None),
    "plan_change": ("sales", "I want to change my plan", None),
    "outage": ("tech_support", "The service is down for our team", None),
    "refund": ("billing", "I would like a refund for my last order", "ORD"),
    "cancel_request": ("retention", "I am thinking about cancelling", None),
}
REASON_NAMES = tuple(REASONS)
DEPARTMENT_QUEUE = {
    "billing": "billing_queue",
    "logistics": "logistics_queue",
    "tech_support": "tech_queue",
    "sales": "sales_queue",
    "retention": "retention_queue",
}
CAMPAIGNS = (("spring_sale", "email"), ("webinar_q3", "web"), ("retarget_ads", "social"))
FEATURES = ("dashboard", "reports", "api", "exports", "integrations", "mobile_app")
AGENTS = tuple(f"agent-{n:03d}" for n in range(1, 41))
# Events that are a step of the map on their own, without an interaction id (as journey's
# services/journey/maps/rules.py STEP_TYPES), and those that only comment on a step.
STEP_TYPES = frozenset(
    {"marketing.touched", "purchase.completed", "case.opened", "case.resolved",
     "customer.churned", "customer.renewed"}
)  # fmt: skip
FEEDBACK_TYPES = frozenset({"feedback.submitted", "survey.responded"})


class JourneyState:
    """What a person has done so far, and the helpers every episode uses."""

    def __init__(self, person: Person, rng: random.Random, timeline: Timeline, days: float):
        self.p = person
        self.rng = rng
        self.t = timeline
        self.days = days
        self.email_known = False  # has the person given an e-mail on some channel yet?
        self.interactions = 0
        self.cases = 0
        # (case id, when, identifiers) of cases resolved on a call: some are reopened later
        self.resolved_cases: list[tuple[str, float, list[dict[str, str]]]] = []

    # identifiers -----------------------------------------------------------------------------
    def _interaction(self) -> str:
        self.interactions += 1
        return f"int-{self.t.key}-{self.interactions}"

    def _case(self) -> str:
        self.cases += 1
        return f"case-{self.t.key}-{self.cases}"

    def _latest_step(self, ids: list[dict[str, str]]) -> str | None:
        """What a feedback given with ``ids`` can name as its ``about``: the person's latest
        step on the journey map made with one of those identifiers — its interaction id, or,
        for a step of one event (a purchase, a campaign), its touchpoint. None before any."""
        mine = {(i["type"], i["value"]) for i in ids}
        for event in reversed(self.t.events):
            data = event["data"]
            if event["type"] in FEEDBACK_TYPES or not mine & {
                (i["type"], i["value"]) for i in data["identifiers"]
            }:
                continue
            if "interaction_id" in data:
                return str(data["interaction_id"])
            if event["type"] in STEP_TYPES and "touchpoint" in data:
                return str(data["touchpoint"])
        return None

    def _agent(self) -> str:
        return self.rng.choice(AGENTS)

    def _email(self, verified_by: str | None = None) -> dict[str, str]:
        return ident("email", self.p.email_as_typed, verified_by)

    # the whole life --------------------------------------------------------------------------
    def _survey(
        self,
        ids: list[dict[str, str]],
        channel: str,
        interaction_id: str,
        resolved: bool,
        friction: int,
    ) -> None:
        r, t = self.rng, self.t
        if r.random() > 0.45:
            return
        t.wait(r.uniform(MINUTE, 2 * HOUR))
        kind = r.choices(("csat", "nps", "ces"), (6, 3, 1))[0]
        quality = (0.75 if resolved else 0.35) - 0.12 * friction + r.uniform(-0.2, 0.2)
        quality = min(1.0, max(0.0, quality))
        low, high = {"csat": (1, 5), "nps": (0, 10), "ces": (1, 7)}[kind]
        score = round(low + quality * (high - low))
        if kind == "ces":
            score = high + low - score  # effort: lower is better
        t.emit(
            "survey.responded",
            ids,
            channel,
            interaction_id=interaction_id,
            touchpoint="post_contact_survey",
            survey=kind,
            score=score,
            about_interaction_id=interaction_id,
            comment=None
            if r.random() < 0.6
            else ("Quick and helpful" if quality > 0.6 else "Had to explain everything twice"),
        )
