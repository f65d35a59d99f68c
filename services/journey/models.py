"""The ``journey`` schema. Tables are written by hand-tuned SQL (the worker's hot path uses
asyncpg batches), so the DDL lives in the migration and the SQL in each domain's
``repository.py``; this module only names the schema for Alembic."""

from __future__ import annotations

from shared.db import schema_metadata

SCHEMA = "journey"
metadata = schema_metadata(SCHEMA)
