"""The README's test command is exactly what CI runs, so a newcomer runs what CI runs."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


def shell_blocks(text):
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", text, re.S)]


def test_ci_runs_the_readme_test_command():
    blocks = shell_blocks((ROOT / "README.md").read_text())
    test_commands = [b for b in blocks if "pytest" in b]
    assert len(test_commands) == 1, test_commands
    ci_lines = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    assert test_commands[0] in ci_lines


def test_readme_has_a_command_that_starts_the_main_job():
    blocks = shell_blocks((ROOT / "README.md").read_text())
    main_command = blocks[0]
    assert "pytest" not in main_command and "dynamo cluster up" in main_command, main_command
