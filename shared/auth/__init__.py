"""Tenants and API keys, used by every service: keys are stored hashed, bound to one tenant, scoped."""
