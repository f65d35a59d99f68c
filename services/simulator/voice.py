"""Voice episodes: IVR, queue, abandons and repeat calls, transfers, callbacks."""

from __future__ import annotations

from services.simulator.builder import ident, iso
from services.simulator.state import (
    DAY,
    DEPARTMENT_QUEUE,
    HOUR,
    MINUTE,
    REASON_NAMES,
    REASONS,
    JourneyState,
)


class VoiceEpisodes(JourneyState):
    def _phone(self, reason: str, *, case_id: str | None, verify_email: bool) -> None:
        """A call through the IVR and queue, maybe abandoned and repeated, maybe transferred."""
        r, p, t = self.rng, self.p, self.t
        department, text, fact = REASONS[reason]
        caller = [ident("phone", p.phone_as_dialled, "caller_id")]
        for _attempt in range(3):
            call_id = self._interaction()
            t.emit(
                "contact.started",
                caller,
                "phone",
                interaction_id=call_id,
                touchpoint="inbound_call",
                contact_reason=reason,
            )
            t.wait(r.uniform(5, 20))
            t.emit(
                "ivr.step",
                caller,
                "ivr",
                interaction_id=call_id,
                touchpoint="ivr_main_menu",
                menu="main",
                node="main_menu",
                input=str(1 + REASON_NAMES.index(reason) % 5),
            )
            if r.random() < 0.12:  # gives up in the IVR
                t.wait(r.uniform(20, 90))
                t.emit(
                    "contact.abandoned",
                    caller,
                    "ivr",
                    interaction_id=call_id,
                    touchpoint="ivr_main_menu",
                    where="ivr",
                    node="main_menu",
                    wait_s=round(r.uniform(20, 90), 1),
                )
                t.wait(r.uniform(2 * MINUTE, 3 * HOUR))
                continue
            t.wait(r.uniform(10, 30))
            t.emit(
                "ivr.step",
                caller,
                "ivr",
                interaction_id=call_id,
                touchpoint="ivr_pin",
                menu="verify",
                node="pin_check",
                input="****",
            )
            verified = [ident("phone", p.phone, "ivr_pin")]
            if p.crm_id is not None:
                verified.append(ident("crm_id", p.crm_id, "ivr_pin"))
            if verify_email and self.email_known:
                verified.append(ident("email", p.email, "ivr_pin"))
            if len(verified) > 1:
                t.emit(
                    "identity.linked", verified, "ivr", interaction_id=call_id, touchpoint="ivr_pin"
                )
            queue = DEPARTMENT_QUEUE[department]
            t.emit(
                "contact.queued",
                verified,
                "phone",
                interaction_id=call_id,
                touchpoint=queue,
                department=department,
                queue=queue,
            )
            wait = r.expovariate(1 / 150)
            if wait > 420 and r.random() < 0.7:  # long wait: hangs up in the queue
                t.wait(wait)
                t.emit(
                    "contact.abandoned",
                    verified,
                    "phone",
                    interaction_id=call_id,
                    touchpoint=queue,
                    where="queue",
                    queue=queue,
                    wait_s=round(wait, 1),
                )
                t.wait(r.uniform(5 * MINUTE, 6 * HOUR))
                continue
            t.wait(wait)
            self._agent_call(call_id, verified, reason, department, text, fact, case_id)
            return
        # three failed attempts: asks for a callback through the web form
        self.callback(reason)

    def _agent_call(
        self,
        call_id: str,
        ids: list[dict[str, str]],
        reason: str,
        department: str,
        text: str,
        fact: str | None,
        case_id: str | None,
    ) -> None:
        r, p, t = self.rng, self.p, self.t
        agent = self._agent()
        t.emit(
            "agent.joined",
            ids,
            "phone",
            interaction_id=call_id,
            touchpoint="agent_call",
            agent_id=agent,
            team="voice-tier1",
            department="customer_care",
        )
        t.wait(r.uniform(60, 300))
        if case_id is None:
            if fact:  # asked only when nobody collected it before ("don't re-ask")
                t.emit(
                    "fact.collected",
                    ids,
                    "phone",
                    interaction_id=call_id,
                    agent_id=agent,
                    touchpoint="agent_call",
                    name="order_number",
                    value=f"{fact}-{p.index:06d}-{r.randint(100, 999)}",
                    verified_by="agent",
                )
            case_id = self._case()
            t.emit(
                "case.opened",
                ids,
                "phone",
                interaction_id=call_id,
                touchpoint="agent_call",
                agent_id=agent,
                department=department,
                case_id=case_id,
                reason=reason,
                status="open",
                priority="normal",
            )
            t.emit(
                "fact.collected",
                ids,
                "phone",
                interaction_id=call_id,
                agent_id=agent,
                touchpoint="agent_call",
                name="problem_description",
                value=text,
            )
        transfers = 0
        while r.random() < (0.35 if transfers == 0 else 0.15) and transfers < 2:
            transfers += 1
            to_agent = self._agent()
            t.emit(
                "contact.transferred",
                ids,
                "phone",
                interaction_id=call_id,
                touchpoint="agent_call",
                from_agent=agent,
                to_agent=to_agent,
                to_queue=DEPARTMENT_QUEUE[department],
                to_department=department,
                to_team=f"{department}-tier2",
                reason="needs_specialist",
            )
            t.wait(r.uniform(30, 400))
            agent = to_agent
            t.emit(
                "agent.joined",
                ids,
                "phone",
                interaction_id=call_id,
                touchpoint="agent_call",
                agent_id=agent,
                team=f"{department}-tier2",
                department=department,
            )
            t.wait(r.uniform(60, 600))
        if r.random() < 0.4:
            t.emit(
                "fact.collected",
                ids,
                "phone",
                interaction_id=call_id,
                agent_id=agent,
                touchpoint="agent_call",
                name="address",
                sensitive=True,
                verified_by="agent",
                value=f"{r.randint(1, 999)} Main St, Springfield",
            )
        if r.random() < 0.2:
            t.emit(
                "fact.collected",
                ids,
                "phone",
                interaction_id=call_id,
                agent_id=agent,
                touchpoint="agent_call",
                name="callback_number",
                value=p.phone,
                expires_at=iso(t.now + 7 * DAY),
            )
        resolved = r.random() < 0.75 - 0.2 * transfers
        if resolved:
            self.resolved_cases.append((case_id, t.now, ids))
            t.emit(
                "case.resolved",
                ids,
                "phone",
                interaction_id=call_id,
                agent_id=agent,
                department=department,
                touchpoint="agent_call",
                case_id=case_id,
                reason=reason,
                status="resolved",
            )
        else:
            t.emit(
                "case.updated",
                ids,
                "phone",
                interaction_id=call_id,
                agent_id=agent,
                department=department,
                touchpoint="agent_call",
                case_id=case_id,
                reason=reason,
                status="escalated",
                priority="high",
            )
        duration = r.uniform(180, 1500)
        t.wait(duration)
        t.emit(
            "contact.ended",
            ids,
            "phone",
            interaction_id=call_id,
            touchpoint="agent_call",
            agent_id=agent,
            department=department,
            disposition="resolved" if resolved else "follow_up",
            contact_reason=reason,
            resolved=resolved,
            duration_s=round(duration),
        )
        if transfers and r.random() < 0.3:
            t.emit(
                "feedback.submitted",
                ids,
                "phone",
                interaction_id=call_id,
                agent_id=agent,
                touchpoint="agent_call",
                author="agent",
                about=call_id,  # the transferred call (a step of the map)
                comment="Customer had to repeat the problem after the transfer.",
            )
        self._survey(ids, "phone", call_id, resolved, transfers)

    def phone_call(self, reason: str) -> None:
        self._phone(reason, case_id=None, verify_email=self.email_known)

    def callback(self, reason: str) -> None:
        r, p, t = self.rng, self.p, self.t
        ids = [ident("phone", p.phone, "caller_id")]
        if self.email_known:
            ids.append(self._email("login"))
        t.emit(
            "callback.requested",
            ids,
            "web",
            interaction_id=f"cbform-{t.key}-{self.interactions}",
            touchpoint="callback_form",
            number=p.phone,
            requested_for=iso(t.now + r.uniform(HOUR, DAY)),
            contact_reason=reason,
        )
        t.wait(r.uniform(HOUR, DAY))
        call_id = self._interaction()
        outcome = r.choices(("reached", "no_answer", "voicemail"), (7, 2, 1))[0]
        agent = self._agent()
        t.emit(
            "contact.started",
            ids,
            "phone",
            interaction_id=call_id,
            direction="outbound",
            touchpoint="callback",
            agent_id=agent,
            contact_reason=reason,
        )
        t.emit(
            "callback.completed",
            ids,
            "phone",
            interaction_id=call_id,
            touchpoint="callback",
            agent_id=agent,
            outcome=outcome,
        )
        t.wait(r.uniform(30, 900))
        t.emit(
            "contact.ended",
            ids,
            "phone",
            interaction_id=call_id,
            touchpoint="callback",
            agent_id=agent,
            contact_reason=reason,
            resolved=outcome == "reached",
            disposition=outcome,
        )
