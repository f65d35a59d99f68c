"""Tenants and API keys for every service: stored hashed, bound to one tenant, scoped."""
