"""README and docs/operations.md stay true to the code: commands, settings, endpoints."""

from __future__ import annotations

import re
from pathlib import Path

from services.cli import settings_rows
from services.registry import available, load

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_quick_start_is_make_run_then_a_cli_call_then_make_test_as_separate_steps() -> None:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = [b.strip().splitlines() for b in section.split("```")[1::2]]
    assert blocks[0] == ["make run"]  # it blocks the terminal: alone in its block
    assert any(line.startswith(".venv/bin/waypoint keys") for line in blocks[1])
    assert blocks[-1] == ["make test"]


def test_every_documented_setting_exists_with_its_default() -> None:
    table = README.split("<!-- settings table", 1)[1].split("<!-- end of settings table", 1)[0]
    documented = re.findall(r"^\| (\w+) \| `([A-Z0-9_]+)` \| (?:`([^`]*)`)? \|", table, re.M)
    assert len(documented) > 20
    actual = {env: (scope, default) for scope, env, default, _ in settings_rows()}
    for scope, env, default in documented:
        assert env in actual, f"README documents {env}, which no settings class reads"
        assert actual[env] == (scope, default), f"README's default of {env} is out of date"


def test_every_documented_endpoint_exists() -> None:
    for name, spec in available().items():
        section = README.split(f"**{name}** — port {spec.port}", 1)[1].split("**", 1)[0]
        paths = load(spec.app_factory)().openapi()["paths"]  # type: ignore[operator]
        routes = {(method.upper(), path) for path, ops in paths.items() for method in ops}
        cells = re.findall(r"^\| ([^|]+) \|", section, re.M)
        documented = []
        for cell in cells:
            method = None
            for part in re.findall(r"`([^`]+)`", cell):
                words = part.split()
                if len(words) == 2:
                    method, path = words
                else:
                    path = words[0]
                documented.append((method, path))
        assert documented, f"no endpoints documented for {name}"
        for method, path in documented:
            assert (method, path) in routes, f"README lists {method} {path} on {name}; no route"


def test_operations_guide_names_real_commands() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    from typer.main import get_command

    from services.cli import app

    commands = get_command(app).commands  # type: ignore[attr-defined]
    used = set(re.findall(r"waypoint ([a-z][a-z-]+)", guide))
    assert used, "the guide shows no waypoint command"
    assert used <= set(commands), f"unknown commands: {used - set(commands)}"


def test_links_to_repository_files_resolve() -> None:
    for doc in (ROOT / "README.md", ROOT / "docs" / "operations.md"):
        for target in re.findall(r"\]\(([^)#:]+)\)", doc.read_text()):
            assert (doc.parent / target).resolve().exists(), f"{doc.name} links to {target}"
