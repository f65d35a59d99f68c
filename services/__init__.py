"""Waypoint's services: ingest, journey, alerts."""
