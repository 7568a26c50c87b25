"""The README teaches every setting and command (as datasette's docs test does)."""

from __future__ import annotations

from pathlib import Path

from runyard.cli.main import cli
from runyard.config import SETTINGS

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    missing = [s.key for s in SETTINGS if f"`{s.key}`" not in README or s.env not in README]
    assert missing == []


def test_every_command_is_documented_and_has_help() -> None:
    for name, command in cli.commands.items():
        assert f"runyard {name}" in README, name
        assert command.help and len(command.help) > 20, name
