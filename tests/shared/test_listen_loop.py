"""The backoff shared by the outbox relays and alerts' notifier keeps each one's schedule."""

from __future__ import annotations

import pytest

from shared.listen_loop import Backoff


def test_backoff_doubles_from_its_base_up_to_its_cap_without_jitter():
    steady = Backoff(base=1.0, cap=60.0, jitter=0.0)
    assert [steady.after(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_a_relay_retry_is_twice_the_poll_then_doubling_as_it_always_was():
    poll = 0.5
    relay = Backoff(base=2 * poll, cap=60.0, jitter=0.0)
    assert [relay.after(n) for n in range(1, 10)] == [min(poll * 2**n, 60.0) for n in range(1, 10)]


def test_a_cap_equal_to_the_base_is_a_constant_wait():
    assert {Backoff(base=2.0, cap=2.0, jitter=0.0).after(n) for n in range(1, 20)} == {2.0}


@pytest.mark.parametrize("failures", [1, 3, 12])
def test_jitter_spreads_each_wait_within_its_fraction(failures: int):
    backoff = Backoff(base=1.0, cap=300.0, jitter=0.2)
    nominal = min(300.0, 2.0 ** (failures - 1))
    waits = [backoff.after(failures) for _ in range(200)]
    assert all(0.8 * nominal <= w <= 1.2 * nominal for w in waits)
    assert len(set(waits)) > 1
