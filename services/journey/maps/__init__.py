"""The journey map: steps, journeys, directly-follows aggregates, maintained incrementally.

``rules`` holds the definitions (pure); ``maintain`` keeps the stored map exact as events arrive;
``rebuild`` recomputes it from stored events; ``service`` and ``endpoints`` answer queries.
See docs/journey-map.md.
"""
