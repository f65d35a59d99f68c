"""Activities at a granularity: touchpoint (as stored), channel, or the tenant's stages (pure).

Stored aggregates are by touchpoint activity (``channel:touchpoint`` or the channel alone);
the channel is the part before the first ``:``; a stage comes from the tenant's mapping by
exact activity, then by channel, then from ``default_stage``.
"""

from __future__ import annotations

from collections.abc import Callable

STAGES = ("awareness", "purchase", "onboarding", "usage", "support", "renewal", "exit")
GRANULARITIES = ("touchpoint", "channel", "stage")
_STAGE_WORDS = (
    (("cancel", "churn", "exit", "winback", "offboard"), "exit"),
    (("renew",), "renewal"),
    (("campaign", "promo", "newsletter", "advert", "ads", "landing", "webinar"), "awareness"),
    (("checkout", "purchase", "order", "cart", "pricing", "quote"), "purchase"),
    (("signup", "onboard", "welcome", "activation", "setup", "tutorial"), "onboarding"),
)
_CHANNEL_STAGES = {
    "marketing.touched": "awareness",
    "purchase.completed": "purchase",
    "customer.churned": "exit",
    "customer.renewed": "renewal",
    "app": "usage",
    "web": "usage",
}


def default_stage(activity: str) -> str:
    """The documented default: touchpoint words first, then the channel, else ``support``."""
    channel, _, touchpoint = activity.partition(":")
    words = touchpoint.lower()
    for keys, stage in _STAGE_WORDS:
        if any(k in words for k in keys):
            return stage
    return _CHANNEL_STAGES.get(channel, "support")


def stage_of(activity: str, mapping: dict[str, str]) -> str:
    """Tenant mapping by exact activity, then by channel, then ``default_stage``."""
    found = mapping.get(activity)
    if found is None:
        found = mapping.get(activity.partition(":")[0])
    return found if found is not None else default_stage(activity)


def mapper(granularity: str, mapping: dict[str, str]) -> Callable[[str], str]:
    """A function from touchpoint-level activity to the activity at ``granularity``."""
    if granularity == "touchpoint":
        return lambda a: a
    if granularity == "channel":
        return lambda a: a.partition(":")[0]
    cache: dict[str, str] = {}

    def stage(a: str) -> str:
        found = cache.get(a)
        if found is None:
            found = cache[a] = stage_of(a, mapping)
        return found

    return stage
