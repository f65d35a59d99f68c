"""Every schema's migrations form one line: parallel branches must be re-chained on merge."""

from __future__ import annotations

import pytest
from alembic.script import ScriptDirectory

from shared.migrations import MIGRATION_PACKAGES, alembic_config


@pytest.mark.parametrize("name", sorted(MIGRATION_PACKAGES))
def test_each_schema_has_a_single_migration_head(name: str) -> None:
    scripts = ScriptDirectory.from_config(alembic_config(name))
    heads = scripts.get_heads()
    assert len(heads) == 1, f"{name} has several migration heads {heads}: chain them"
