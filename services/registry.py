"""What runs: each service's API (uvicorn app factory) and its background processes.

``waypoint run`` starts every entry here; ``waypoint serve NAME`` and ``waypoint worker NAME
PROCESS`` start one. A process target is ``module:function`` naming ``async def f(settings)``
that runs until cancelled or signalled.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    port: int
    app_factory: str  # "module:function" returning a FastAPI app
    settings: str  # "module:Class" of the service's settings
    processes: dict[str, str] = field(default_factory=dict)  # name -> "module:async_function"


SERVICES: dict[str, ServiceSpec] = {
    "ingest": ServiceSpec(
        name="ingest",
        port=8001,
        app_factory="services.ingest.app:create_app",
        settings="services.ingest.config:IngestSettings",
        processes={
            "worker": "services.ingest.worker:run",
            "privacy": "services.ingest.privacy:run",
        },
    ),
    "journey": ServiceSpec(
        name="journey",
        port=8002,
        app_factory="services.journey.app:create_app",
        settings="services.journey.config:JourneySettings",
        processes={
            "worker": "services.journey.worker:run",
            "engagement": "services.journey.context.engagement:run",
            "privacy": "services.journey.privacy.consumer:run",
            "maps": "services.journey.maps.compactor:run",
        },
    ),
    "alerts": ServiceSpec(
        name="alerts",
        port=8003,
        app_factory="services.alerts.app:create_app",
        settings="services.alerts.config:AlertsSettings",
        processes={
            "worker": "services.alerts.worker:run",
            "notifier": "services.alerts.notifier:run",
            "scheduler": "services.alerts.scheduler:run",
            "privacy": "services.alerts.privacy:run",
        },
    ),
}


def load(target: str) -> object:
    import importlib

    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def available() -> dict[str, ServiceSpec]:
    """Services whose code is present (a service is skipped until its package exists)."""
    import importlib.util

    def present(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            return False

    return {n: s for n, s in SERVICES.items() if present(s.app_factory.partition(":")[0])}
