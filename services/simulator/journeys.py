"""Journey scripts: what one simulated person does, episode by episode (pure, seeded)."""

from __future__ import annotations

import random

from services.simulator.builder import ident
from services.simulator.digital import DigitalEpisodes
from services.simulator.state import CAMPAIGNS, DAY, HOUR, REASON_NAMES


class Journey(DigitalEpisodes):
    """Plays one person's life over the window: pre-sales, then episodes of contact."""

    def play(self) -> None:
        r, p, t = self.rng, self.p, self.t
        if p.crm_id is not None:
            ids = [ident("crm_id", p.crm_id), self._email("login")]
            if p.account is not None:
                ids.append(ident("account_id", p.account.account_id))
            t.emit("identity.linked", ids, "web", touchpoint="signup", traits=dict(p.traits))
            self.email_known = True
        for _ in range(r.randint(0, 2)):
            t.wait(r.uniform(2 * HOUR, 3 * DAY))
            campaign, medium = r.choice(CAMPAIGNS)
            t.emit(
                "marketing.touched",
                [self._email()] if self.email_known else [ident("device_id", p.device_id)],
                "email" if medium == "email" else "web",
                touchpoint=f"campaign_{campaign}",
                campaign=campaign,
                medium=medium,
            )
        if r.random() < 0.6:
            t.wait(r.uniform(HOUR, 2 * DAY))
            t.emit(
                "purchase.completed",
                [self._email("login")] if self.email_known else [ident("device_id", p.device_id)],
                "web",
                touchpoint="checkout",
                order_id=f"ORD-{p.index:06d}-{r.randint(100, 999)}",
                amount=round(r.uniform(9, 400), 2),
                currency="USD",
            )
        episodes = (
            self.social_chat_phone,
            self.phone_call,
            self.chat,
            self.email_thread,
            self.messenger,
            self.callback,
            self.app_feedback,
        )
        weights = (25, 25, 15, 10, 10, 10, 5)
        for _ in range(1 + min(3, int(r.expovariate(1.2)))):
            t.wait(r.uniform(6 * HOUR, self.days * DAY / 4))
            if t.over:
                break
            r.choices(episodes, weights)[0](r.choice(REASON_NAMES))
        self.reopen_some()

    def reopen_some(self) -> None:
        """Some cases resolved on a call come back: the CRM reopens them days later (FCR with
        reopens counted). A random stream of its own, and ids after every other event's, so
        the rest of the person's events are unchanged; events stay in time order."""
        t = self.t
        rng = random.Random(f"reopen-{t.key}")
        reopened = False
        end_of_play = t.now
        for case_id, at, ids in self.resolved_cases:
            if rng.random() < 0.15:
                t.now = at + rng.uniform(2 * DAY, 20 * DAY)
                t.emit("case.updated", ids, case_id=case_id, status="reopened",
                       reason="not_fixed")  # fmt: skip
                reopened = True
        t.now = end_of_play
        if reopened:
            t.events.sort(key=lambda e: str(e["time"]))

    # episodes --------------------------------------------------------------------------------
