from services.journey.models import SCHEMA, metadata
from shared.migrations import run_env

run_env(SCHEMA, metadata)
