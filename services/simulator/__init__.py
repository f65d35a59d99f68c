"""Simulated contact-center traffic: realistic multi-channel journeys for demos, tests, benchmarks.

``generate(customers=, seed=, tenant=)`` is pure and fast (no I/O); ``waypoint simulate``
sends its output to the raw topic through Kafka.
"""

from services.simulator.generator import generate, generate_keyed

__all__ = ["generate", "generate_keyed"]
