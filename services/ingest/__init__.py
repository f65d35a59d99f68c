"""Ingest: channel events from Kafka and HTTP, validated and deduplicated, into the store."""
