"""B2B product usage: seats and features per account, declining for some, then the outcome."""

from __future__ import annotations

import random

from services.simulator.builder import Timeline, ident
from services.simulator.people import Account, Person
from services.simulator.state import DAY, FEATURES


def account_usage(account: Account, rng: random.Random, t: Timeline, days: float) -> None:
    """Every ~3 days: active vs purchased seats for the account; the churn or renewal at the end."""
    ids = [ident("account_id", account.account_id)]
    seats = account.purchased_seats
    steps = max(2, int(days // 3))
    for step in range(steps):
        progress = step / (steps - 1)
        if account.declining:
            share = 0.9 - 0.7 * progress  # 90 % of seats active at first, 20 % at the end
        else:
            share = 0.8 + 0.1 * rng.random()
        active = max(0, min(seats, round(seats * (share + rng.uniform(-0.05, 0.05)))))
        t.emit(
            "product.used",
            ids,
            "app",
            touchpoint="license_report",
            feature="seats",
            active_seats=active,
            purchased_seats=seats,
        )
        t.wait(days * DAY / steps)
    t.now = min(t.now, t.end - rng.uniform(0.5, 2) * DAY)
    if account.outcome == "churned":
        t.emit(
            "customer.churned",
            ids,
            "other",
            touchpoint="contract_cancelled",
            reason=rng.choice(("low_adoption", "price", "switched_competitor", "support")),
        )
        t.emit(
            "feedback.submitted",
            ids,
            "email",
            touchpoint="exit_survey",
            author="customer",
            about="contract_cancelled",  # the churn's touchpoint (a step of the map)
            comment="We did not get enough value for the seats we paid.",
        )
    elif account.outcome == "renewed":
        t.emit(
            "customer.renewed", ids, "other", touchpoint="contract_renewal", reason="annual_renewal"
        )


def user_usage(person: Person, rng: random.Random, t: Timeline, days: float) -> None:
    """A B2B contact logging in and using features; fewer sessions when the account declines."""
    account = person.account
    assert account is not None
    ids = [
        ident("user_id", f"{account.account_id}/{person.index}", "login"),
        ident("account_id", account.account_id),
    ]
    day = rng.uniform(0, 2)
    while day < days:
        progress = day / days
        t.now = t.start + day * DAY
        rate = 1.0 - 0.85 * progress if account.declining else 1.0
        if rng.random() < rate:
            t.emit(
                "product.used",
                ids,
                "app",
                touchpoint="product",
                feature=rng.choice(FEATURES),
                quantity=rng.randint(1, 40),
            )
        day += rng.uniform(1.5, 4.5)
