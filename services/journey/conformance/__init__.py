"""Designed vs real journeys: a tenant declares how a journey is meant to go; real journeys
from the map's maintained step sequences are aligned against it (fitness, deviations)."""
