"""The README stays true: its test command is what CI runs, and every command and config key is documented."""

from __future__ import annotations

import re
from pathlib import Path

from aggregator.cli import cli
from aggregator.config_model import (
    ConfigFile,
    DaemonSettings,
    Defaults,
    DigestSettings,
    EmailSettings,
    FeedEntry,
    FetchSettings,
    OutputSettings,
    TagSpec,
)

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")


def sh_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)\n```", README, flags=re.S)


def test_readme_has_two_one_line_setup_commands() -> None:
    blocks = sh_blocks()
    assert len(blocks) >= 2
    run_command, test_command = blocks[0], blocks[1]
    assert "\n" not in run_command and "\n" not in test_command
    assert "aggregator" in run_command
    assert "pytest" in test_command


def test_ci_runs_exactly_the_readme_test_command() -> None:
    test_command = sh_blocks()[1]
    ci_lines = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert test_command in ci_lines


def test_every_command_is_documented_with_help() -> None:
    for name, command in cli.commands.items():
        assert command.help, f"command {name} has no --help text"
        assert f"`{name}" in README, f"command {name} is not in the README"


def test_every_config_key_is_documented() -> None:
    sections = {
        "": ConfigFile,
        "defaults.": Defaults,
        "digest.": DigestSettings,
        "fetch.": FetchSettings,
        "daemon.": DaemonSettings,
        "output.": OutputSettings,
        "email.": EmailSettings,
        "feeds[].": FeedEntry,
        "tags.<path>.": TagSpec,
    }
    for prefix, model in sections.items():
        for name, field in model.model_fields.items():
            key = field.alias or name  # what the file says: `email.from`, not the attribute `sender`
            if prefix == "" and key in ("defaults", "digest", "fetch", "daemon", "output", "email", "feeds", "tags"):
                continue
            assert f"`{prefix}{key}" in README or (prefix == "feeds[]." and f".{key}`" in README), (
                f"config key {prefix}{key} is not in the README's feeds.yaml reference"
            )


def test_operator_files_are_documented() -> None:
    assert (REPO / "deploy" / "aggregator.service").exists() and "deploy/aggregator.service" in README
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert "Dockerfile" in README and '"run"' in dockerfile
