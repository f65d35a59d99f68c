"""Journey's ``privacy`` process: applies erasure commands (services/journey/privacy/service.py)."""

from __future__ import annotations

import asyncio

from services.journey.config import JourneySettings
from services.journey.privacy.service import JourneyErasure
from shared.logging import configure_logging
from shared.privacy.crypto import Keyring
from shared.privacy.erasure import run_consumer


async def run(settings: JourneySettings, *, stop: asyncio.Event | None = None) -> None:
    """Apply erasure commands until stopped."""
    if stop is None:
        configure_logging("journey-privacy", level=settings.log_level, json=settings.log_json)
    await run_consumer(
        settings,
        service="journey",
        group_id=f"{settings.consumer_group}-privacy",
        apply=JourneyErasure(Keyring.from_setting(settings.sealing_keys), settings),
        stop=stop,
    )
