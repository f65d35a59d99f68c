"""Journey scripts: what one simulated person does, episode by episode (pure, seeded)."""

from __future__ import annotations

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

    # episodes --------------------------------------------------------------------------------
