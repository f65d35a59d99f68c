"""Digital episodes: social to chat to phone hand-offs, chat, e-mail, messenger, app."""

from __future__ import annotations

from services.simulator.builder import ident
from services.simulator.state import DAY, HOUR, MINUTE, REASONS
from services.simulator.voice import VoiceEpisodes


class DigitalEpisodes(VoiceEpisodes):
    def social_chat_phone(self, reason: str) -> None:
        """Complains on social, moves to web chat (gives an e-mail), then calls; IVR links them."""
        r, p, t = self.rng, self.p, self.t
        department, text, fact = REASONS[reason]
        social = [ident("social", p.social)]
        thread = f"social-{t.key}-{self.interactions}"  # the platform's conversation id
        t.emit(
            "message.received",
            social,
            "social",
            interaction_id=thread,
            touchpoint="social_mention",
            text=f"@brand {text}!",
            sentiment=round(r.uniform(-0.9, -0.4), 2),
        )
        t.wait(r.uniform(5 * MINUTE, 2 * HOUR))
        t.emit(
            "message.sent",
            social,
            "social",
            interaction_id=thread,
            touchpoint="social_mention",
            agent_id="social-bot",
            text="Sorry to hear that, please open a chat on our site so we can help.",
        )
        t.wait(r.uniform(10 * MINUTE, 5 * HOUR))
        chat_id = self._interaction()
        session = [ident("chat_session", f"chat-{chat_id}"), ident("anonymous_id", p.device_id)]
        t.emit(
            "contact.started",
            session,
            "web_chat",
            interaction_id=chat_id,
            touchpoint="web_chat",
            contact_reason=reason,
        )
        # The reply's link opened the chat with the social handle attached (weak: not verified).
        t.emit(
            "identity.linked",
            [ident("chat_session", f"chat-{chat_id}"), ident("social", p.social, "self_asserted")],
            "web_chat",
            interaction_id=chat_id,
            touchpoint="social_deep_link",
        )
        for node in ("greeting", "intent", "collect_email"):
            t.wait(r.uniform(5, 40))
            t.emit(
                "bot.step",
                session,
                "bot",
                interaction_id=chat_id,
                touchpoint="chat_bot",
                node=node,
                input=reason if node == "intent" else None,
            )
        t.wait(r.uniform(10, 60))
        linked = [ident("chat_session", f"chat-{chat_id}"), self._email("self_asserted")]
        t.emit("identity.linked", linked, "web_chat", interaction_id=chat_id, touchpoint="chat_bot")
        self.email_known = True
        t.emit(
            "fact.collected",
            linked,
            "web_chat",
            interaction_id=chat_id,
            touchpoint="chat_bot",
            name="email",
            value=p.email,
            verified_by="self_asserted",
        )
        case_id = self._case()
        self._chat_with_agent(chat_id, linked, reason, department, text, fact, case_id)
        t.emit(
            "contact.ended",
            linked,
            "web_chat",
            interaction_id=chat_id,
            touchpoint="web_chat",
            disposition="escalated_to_phone",
            contact_reason=reason,
            resolved=False,
            duration_s=round(r.uniform(300, 1500)),
        )
        t.wait(r.uniform(20 * MINUTE, 2 * DAY))
        self._phone(reason, case_id=case_id, verify_email=True)

    def _chat_with_agent(
        self,
        chat_id: str,
        ids: list[dict[str, str]],
        reason: str,
        department: str,
        text: str,
        fact: str | None,
        case_id: str,
    ) -> None:
        r, p, t = self.rng, self.p, self.t
        agent = self._agent()
        t.wait(r.uniform(30, 600))
        t.emit(
            "agent.joined",
            ids,
            "web_chat",
            interaction_id=chat_id,
            touchpoint="web_chat",
            agent_id=agent,
            team="chat-tier1",
            department="customer_care",
        )
        t.emit(
            "message.received",
            ids,
            "web_chat",
            interaction_id=chat_id,
            touchpoint="web_chat",
            text=text,
            sentiment=round(r.uniform(-0.8, -0.1), 2),
        )
        t.emit(
            "case.opened",
            ids,
            "web_chat",
            interaction_id=chat_id,
            touchpoint="web_chat",
            agent_id=agent,
            department=department,
            case_id=case_id,
            reason=reason,
            status="open",
            priority=r.choice(("low", "normal", "normal", "high")),
        )
        t.wait(r.uniform(20, 120))
        if fact:
            t.emit(
                "fact.collected",
                ids,
                "web_chat",
                interaction_id=chat_id,
                agent_id=agent,
                touchpoint="web_chat",
                name="order_number",
                value=f"{fact}-{p.index:06d}-{r.randint(100, 999)}",
                verified_by="agent",
            )
        t.emit(
            "fact.collected",
            ids,
            "web_chat",
            interaction_id=chat_id,
            agent_id=agent,
            touchpoint="web_chat",
            name="problem_description",
            value=text,
        )
        t.emit(
            "message.sent",
            ids,
            "web_chat",
            interaction_id=chat_id,
            agent_id=agent,
            touchpoint="web_chat",
            text="Thanks, I have noted everything.",
            sentiment=0.3,
        )

    def chat(self, reason: str) -> None:
        r, t = self.rng, self.t
        department, text, fact = REASONS[reason]
        chat_id = self._interaction()
        ids = [ident("chat_session", f"chat-{chat_id}")]
        if self.email_known:
            ids.append(self._email("login"))
        t.emit(
            "contact.started",
            ids,
            "web_chat",
            interaction_id=chat_id,
            touchpoint="web_chat",
            contact_reason=reason,
        )
        t.emit(
            "bot.step", ids, "bot", interaction_id=chat_id, touchpoint="chat_bot", node="greeting"
        )
        if r.random() < 0.15:  # leaves while the bot is still asking
            t.wait(r.uniform(30, 240))
            t.emit(
                "contact.abandoned",
                ids,
                "web_chat",
                interaction_id=chat_id,
                touchpoint="chat_bot",
                where="bot",
                node="greeting",
            )
            return
        case_id = self._case()
        self._chat_with_agent(chat_id, ids, reason, department, text, fact, case_id)
        resolved = r.random() < 0.7
        t.wait(r.uniform(120, 900))
        if resolved:
            t.emit(
                "case.resolved",
                ids,
                "web_chat",
                interaction_id=chat_id,
                touchpoint="web_chat",
                case_id=case_id,
                reason=reason,
                status="resolved",
            )
        t.emit(
            "contact.ended",
            ids,
            "web_chat",
            interaction_id=chat_id,
            touchpoint="web_chat",
            disposition="resolved" if resolved else "follow_up",
            contact_reason=reason,
            resolved=resolved,
        )
        self._survey(ids, "web_chat", chat_id, resolved, 0)
        if not resolved:  # repeat contact on the phone about the same case
            t.wait(r.uniform(HOUR, 3 * DAY))
            self._phone(reason, case_id=case_id, verify_email=True)

    def email_thread(self, reason: str) -> None:
        r, t = self.rng, self.t
        department, text, _fact = REASONS[reason]
        ids = [self._email()]
        self.email_known = True
        thread = self._interaction()
        case_id = self._case()
        t.emit(
            "message.received",
            ids,
            "email",
            interaction_id=thread,
            touchpoint="email_support",
            text=text,
            sentiment=round(r.uniform(-0.6, 0.1), 2),
        )
        t.emit(
            "case.opened",
            ids,
            "email",
            interaction_id=thread,
            touchpoint="email_support",
            department=department,
            case_id=case_id,
            reason=reason,
            status="open",
        )
        t.wait(r.uniform(HOUR, DAY))
        agent = self._agent()
        t.emit(
            "message.sent",
            ids,
            "email",
            interaction_id=thread,
            touchpoint="email_support",
            agent_id=agent,
            text="We are looking into it.",
            sentiment=0.2,
        )
        t.wait(r.uniform(HOUR, 2 * DAY))
        t.emit(
            "case.resolved",
            ids,
            "email",
            interaction_id=thread,
            touchpoint="email_support",
            agent_id=agent,
            case_id=case_id,
            reason=reason,
            status="resolved",
        )
        self._survey(ids, "email", thread, True, 0)

    def messenger(self, reason: str) -> None:
        r, p, t = self.rng, self.p, self.t
        _department, text, fact = REASONS[reason]
        ids = [ident("messenger", p.messenger)]
        conv = self._interaction()
        t.emit(
            "contact.started",
            ids,
            "messenger",
            interaction_id=conv,
            touchpoint="whatsapp",
            contact_reason=reason,
        )
        t.emit(
            "message.received",
            ids,
            "messenger",
            interaction_id=conv,
            touchpoint="whatsapp",
            text=text,
            sentiment=round(r.uniform(-0.7, 0.0), 2),
        )
        agent = self._agent()
        t.wait(r.uniform(MINUTE, HOUR))
        t.emit(
            "agent.joined",
            ids,
            "messenger",
            interaction_id=conv,
            touchpoint="whatsapp",
            agent_id=agent,
            team="messaging",
            department="customer_care",
        )
        if fact:
            t.emit(
                "fact.collected",
                ids,
                "messenger",
                interaction_id=conv,
                agent_id=agent,
                touchpoint="whatsapp",
                name="order_number",
                value=f"{fact}-{p.index:06d}-{r.randint(100, 999)}",
                verified_by="none",
            )
        t.emit(
            "message.sent",
            ids,
            "messenger",
            interaction_id=conv,
            touchpoint="whatsapp",
            agent_id=agent,
            text="Done, anything else?",
            sentiment=0.4,
        )
        resolved = r.random() < 0.8
        t.wait(r.uniform(MINUTE, HOUR))
        t.emit(
            "contact.ended",
            ids,
            "messenger",
            interaction_id=conv,
            touchpoint="whatsapp",
            agent_id=agent,
            contact_reason=reason,
            resolved=resolved,
            disposition="resolved" if resolved else "follow_up",
        )
        self._survey(ids, "messenger", conv, resolved, 0)

    def app_feedback(self, _reason: str) -> None:
        """In-app feedback on the person's latest contact or purchase (any reason's episode)."""
        r, p, t = self.rng, self.p, self.t
        ids = [ident("device_id", p.device_id)]
        if self.email_known:
            ids.append(self._email("login"))
        t.emit(
            "feedback.submitted",
            ids,
            "app",
            touchpoint="in_app_feedback",
            author="customer",
            about=self._latest_step(ids),  # the contact (or purchase) it rates
            rating=r.randint(1, 5),
            comment=r.choice(
                (
                    "The menu is confusing",
                    "Love the new dashboard",
                    "Support took too long",
                    "Could not find the invoice",
                )
            ),
        )
