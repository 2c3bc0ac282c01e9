"""Every CLI command and every setting is documented in the README (commands: or in docs/*.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from metering.cli import build_parser
from metering.settings import ENVIRONMENT

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
DOCS = README + "".join(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")))  # README and docs/*.md


def commands(parser: argparse.ArgumentParser, prefix: str = "metering") -> list[str]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = commands(sub, f"{prefix} {name}")
                found += nested or [f"{prefix} {name}"]
    return found


def test_every_command_is_in_the_readme():
    names = commands(build_parser())
    assert "metering keys add" in names and "metering serve" in names
    for name in names:
        assert f"`{name}" in DOCS, f"{name} is not documented in README.md (or docs/*.md)"


def test_every_setting_is_in_the_readme():
    for variable in ENVIRONMENT:
        assert f"`{variable}`" in README, f"{variable} is not documented in README.md"


def test_quick_start_has_the_two_commands_and_ci_runs_the_test_one():
    assert "make run" in README and "make test" in README
    assert "make test" in (Path(__file__).parents[1] / ".ci" / "run").read_text()
