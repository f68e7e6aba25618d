"""The README's command lines are real: every command and option it shows exists."""

import re

import pytest
from typer.testing import CliRunner

from monkeyreport.cli import app

from conftest import REPO

USAGE = re.compile(r"^\s{4}monkeyreport (.+)$", re.MULTILINE)
README = (REPO / "README.md").read_text()


def usage_lines() -> list[str]:
    return USAGE.findall(README)


def command_of(line: str) -> list[str]:
    """`data check [--config F]` -> ['data', 'check']."""
    return line.split(" [")[0].split()


def test_readme_lists_every_command():
    commands = {" ".join(command_of(line)) for line in usage_lines()}
    assert {"build", "eda", "models", "train", "render", "status", "data check", "data download"} <= commands


@pytest.mark.parametrize("line", usage_lines())
def test_readme_options_exist(line):
    command = command_of(line)
    options = re.findall(r"\[(--[a-z-]+)", line)
    help_text = CliRunner().invoke(app, [*command, "--help"], terminal_width=200).output
    for option in options:
        assert option in help_text, f"{option} missing from `monkeyreport {' '.join(command)} --help`"


def test_make_targets_in_readme_exist():
    makefile = (REPO / "Makefile").read_text()
    for target in re.findall(r"make (\w+)", README):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), target
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci and "make test" in README
