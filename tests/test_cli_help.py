"""``--help`` of every command: a one-line description, examples, and which options are required."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli

COMMANDS = ["train", "tune", "list", "show", "tensorboard"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_a_description_and_examples(command):
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0, result.output
    description = result.output.split("\n\n")[1].strip()
    assert description and not description.startswith("Examples"), result.output
    examples = re.search(r"Examples:\n((?:    .+\n)+)", result.output)
    assert examples, result.output
    lines = examples.group(1).splitlines()
    assert 2 <= len(lines) <= 3 and all(l.strip().startswith(f"orchestrator {command}") for l in lines), lines


def test_the_group_lists_every_command_with_its_whole_description():
    result = CliRunner().invoke(cli, ["--help"])
    for command in COMMANDS:
        line = next(l for l in result.output.splitlines() if l.strip().startswith(command + " "))
        assert not line.rstrip().endswith("..."), line


def test_tune_says_its_config_is_required_and_what_it_is():
    result = CliRunner().invoke(cli, ["tune", "--help"])
    config_help = re.search(r"--config FILE\s+(.+?)\n  --", result.output, re.S).group(1)
    config_help = " ".join(config_help.split())
    assert config_help.startswith("Required") and "tune config" in config_help, config_help
    assert "jobs/configs/tune_mnist.yaml" in config_help


def test_show_and_tensorboard_require_a_name():
    for command in ("show", "tensorboard"):
        assert re.search(rf"Usage: .*{command} \[OPTIONS\] NAME", CliRunner().invoke(cli, [command, "--help"]).output)
