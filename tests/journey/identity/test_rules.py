"""Identity rules as pure functions (no database)."""

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.journey.identity.rules import (
    Claim,
    EventSide,
    Holder,
    Outcome,
    Rule,
    new_customer_id,
    resolve,
    split_attribution,
)
from shared.events import IdentifierType as T
from shared.events import Verification as V

NOW = datetime.now(UTC)  # holders' ages are relative to it; resolve() never reads the clock


def limit(_t: str) -> int:
    return 3


def holder(cid, *, link=60, strength=60, age_days=1, seen_days=0) -> Holder:
    return Holder(
        customer_id=cid,
        link_strength=link,
        customer_strength=strength,
        created_at=NOW - timedelta(days=age_days),
        last_seen_at=NOW - timedelta(days=seen_days),
    )


def test_unknown_identifiers_make_a_new_customer_linking_all_of_them():
    claims = [Claim(T.email, "a@x.io", V.login), Claim(T.phone, "+14155550100")]
    r = resolve(claims, {}, share_limit=limit)
    assert (r.outcome, r.rule, r.customer_id) == (Outcome.new, Rule.new_identifiers, None)
    assert {c.key for c in r.link} == {"email:a@x.io", "phone:+14155550100"}


def test_a_known_identifier_matches_and_new_ones_join_the_customer():
    a = uuid.uuid4()
    claims = [Claim(T.email, "a@x.io"), Claim(T.phone, "+14155550100", V.ivr_pin)]
    r = resolve(claims, {"email:a@x.io": [holder(a)]}, share_limit=limit)
    assert (r.outcome, r.customer_id, r.rule) == (Outcome.matched, a, Rule.known_identifier)
    assert "phone:+14155550100" in {c.key for c in r.link}


def test_junk_values_never_link():
    claims = [Claim(T.phone, "0000000000"), Claim(T.email, "b@x.io")]
    a = uuid.uuid4()
    r = resolve(claims, {"phone:0000000000": [holder(a)]}, share_limit=limit)
    assert r.outcome is Outcome.new
    assert ("phone:0000000000", Rule.junk_identifier) in r.ignored
    assert [c.key for c in r.link] == ["email:b@x.io"]


def test_only_junk_is_blocked():
    r = resolve([Claim(T.phone, "anonymous")], {}, share_limit=limit)
    assert (r.outcome, r.rule, r.customer_id) == (Outcome.blocked, Rule.junk_identifier, None)


def test_an_identifier_at_the_share_limit_is_ignored():
    holders = {"phone:+14155550100": [holder(uuid.uuid4()) for _ in range(3)]}
    r = resolve([Claim(T.phone, "+14155550100")], holders, share_limit=limit)
    assert (r.outcome, r.rule) == (Outcome.blocked, Rule.shared_identifier)
    r = resolve(
        [Claim(T.phone, "+14155550100", V.otp), Claim(T.email, "c@x.io")],
        holders,
        share_limit=limit,
    )
    assert r.outcome is Outcome.new
    assert [c.key for c in r.link] == ["email:c@x.io"]


def test_an_ambiguous_identifier_places_an_event_but_never_bridges():
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    holders = {
        "phone:+14155550100": [holder(a, link=30), holder(b, link=90)],
        "email:c@x.io": [holder(c)],
    }
    alone = resolve([Claim(T.phone, "+14155550100")], holders, share_limit=limit)
    assert (alone.outcome, alone.rule, alone.customer_id) == (
        Outcome.matched,
        Rule.ambiguous_best_holder,
        b,
    )
    with_email = resolve(
        [Claim(T.phone, "+14155550100", V.otp), Claim(T.email, "c@x.io")],
        holders,
        share_limit=limit,
    )
    assert (with_email.outcome, with_email.customer_id, with_email.merges) == (
        Outcome.matched,
        c,
        [],
    )


def test_a_strong_link_merges_two_customers():
    a, b = uuid.uuid4(), uuid.uuid4()
    holders = {
        "email:a@x.io": [holder(a, strength=100)],
        "phone:+14155550100": [holder(b, strength=90)],
    }
    claims = [Claim(T.email, "a@x.io", V.login), Claim(T.phone, "+14155550100", V.otp)]
    r = resolve(claims, holders, share_limit=limit)
    assert r.outcome is Outcome.merged
    assert r.rule is Rule.strong_link
    assert r.customer_id == a
    assert [m.merged_id for m in r.merges] == [b]


def test_a_weak_link_merges_when_at_most_one_side_is_strongly_identified():
    a, b = uuid.uuid4(), uuid.uuid4()
    holders = {
        "email:a@x.io": [holder(a, strength=100)],
        "chat_session:s1": [holder(b, strength=20)],
    }
    claims = [Claim(T.email, "a@x.io", V.login), Claim(T.chat_session, "s1", V.cookie)]
    r = resolve(claims, holders, share_limit=limit)
    assert (r.outcome, r.rule, r.customer_id) == (Outcome.merged, Rule.weak_link_single_strong, a)


def test_a_weak_link_between_two_strong_customers_stays_provisional():
    a, b = uuid.uuid4(), uuid.uuid4()
    holders = {
        "email:a@x.io": [holder(a, strength=100)],
        "phone:+14155550100": [holder(b, strength=90)],
    }
    claims = [
        Claim(T.email, "a@x.io", V.self_asserted),
        Claim(T.phone, "+14155550100", V.caller_id),
    ]
    r = resolve(claims, holders, share_limit=limit)
    assert (r.outcome, r.rule) == (Outcome.provisional, Rule.weak_link_between_strong)
    assert r.merges == []
    assert r.customer_id == b  # the caller ID (30) proves more than a typed e-mail (15)
    assert [(p.other_id, p.via) for p in r.provisional] == [(a, "email:a@x.io")]


def test_a_new_strong_identity_reaching_a_strong_customer_weakly_stays_apart():
    """A colleague logs in with her own e-mail from the shared office phone."""
    a = uuid.uuid4()
    holders = {
        "email:a@x.io": [holder(a, strength=100)],
        "phone:+14155550100": [holder(a, link=30, strength=100)],
    }
    claims = [Claim(T.email, "b@x.io", V.login), Claim(T.phone, "+14155550100", V.caller_id)]
    r = resolve(claims, holders, share_limit=limit)
    assert (r.outcome, r.customer_id) == (Outcome.provisional, None)
    assert {c.key for c in r.link} == {"email:b@x.io", "phone:+14155550100"}
    assert [p.other_id for p in r.provisional] == [a]


def test_a_new_strong_identifier_joins_a_weakly_known_customer():
    a = uuid.uuid4()
    holders = {"anonymous_id:c1": [holder(a, link=20, strength=20)]}
    claims = [Claim(T.anonymous_id, "c1", V.cookie), Claim(T.email, "a@x.io", V.login)]
    r = resolve(claims, holders, share_limit=limit)
    assert (r.outcome, r.customer_id) == (Outcome.matched, a)


def test_customer_ids_are_deterministic_per_event():
    assert new_customer_id("t", "e1") == new_customer_id("t", "e1") != new_customer_id("t", "e2")


def test_split_attribution_follows_the_identifiers_each_event_carried():
    events = [
        EventSide("e1", frozenset({"email:l@x.io"})),  # restored side only
        EventSide("e2", frozenset({"email:l@x.io", "phone:+1"})),  # + a new identifier
        EventSide("e3", frozenset({"phone:+1"})),  # new identifier, learnt on the restored side
        EventSide("e4", frozenset({"email:s@x.io"})),  # survivor
        EventSide("e5", frozenset({"email:s@x.io", "email:l@x.io"})),  # both: stays
    ]
    moved = split_attribution(
        events, restored_keys={"email:l@x.io"}, survivor_keys={"email:s@x.io"}
    )
    assert moved == ["e1", "e2", "e3"]


@given(
    claims=st.lists(
        st.tuples(
            st.sampled_from(list(T)), st.sampled_from(["v1", "v2"]), st.sampled_from(list(V))
        ),
        min_size=1,
        max_size=5,
    ),
    owners=st.lists(st.integers(0, 3), min_size=5, max_size=5),
)
def test_resolution_is_consistent(claims, owners):
    """Whatever the graph: merges only join holders, the target holds or gets the links."""
    ids = [uuid.UUID(int=i + 1) for i in range(4)]
    cs = [Claim(t, v, vb) for t, v, vb in claims]
    holders = {
        c.key: [holder(ids[owners[i]], strength=50 + 10 * owners[i])] for i, c in enumerate(cs)
    }
    r = resolve(cs, holders, share_limit=limit)
    merged = {m.merged_id for m in r.merges}
    assert r.customer_id not in merged
    assert merged <= {h.customer_id for hs in holders.values() for h in hs}
    if r.outcome is Outcome.blocked:  # junk only ("v1" is junk for a phone)
        assert r.customer_id is None
        assert not r.link
    else:
        assert r.outcome in (Outcome.matched, Outcome.merged, Outcome.provisional)
        assert r.customer_id in {h.customer_id for hs in holders.values() for h in hs}
