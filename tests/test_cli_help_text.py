"""`--help` shows each option's help as written: square brackets are text, not rich style tags that vanish."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from phenolens.cli.main import app


def rendered_help(*command: str) -> str:
    """The help of `phenolens COMMAND` as a wide terminal shows it, box drawing and runs of spaces removed."""
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"}, terminal_width=400)
    assert result.exit_code == 0, result.output
    return re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", result.output))


@pytest.mark.parametrize(
    ("command", "text"),
    [
        (("echoes", "simulate"), "Smallest echo amplitude (amplitudes are uniform in [this, 1])."),
    ],
)
def test_bracketed_help_is_shown_whole(command, text):
    assert text in rendered_help(*command)


def test_the_images_group_names_all_its_commands():
    group = typer.main.get_command(app).commands["images"]
    shown = rendered_help("images")
    assert all(name in shown.split("Commands")[0] for name in group.commands)


def every_command(group=None, path=()):
    """(path, command) of every command of `phenolens`, groups included."""
    group = typer.main.get_command(app) if group is None else group
    yield path, group
    for name, command in getattr(group, "commands", {}).items():
        yield from every_command(command, (*path, name))


COMMANDS = [path for path, _ in every_command()]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda path: " ".join(path) or "phenolens")
def test_help_shows_plain_metavars(command):
    """A flag shows no value (typer >= 0.26 labels it `<bool>`, as though `--overwrite` took one); values read PATH, TEXT."""
    shown = rendered_help(*command)
    options = shown.split(" Options ", 1)[-1]  # the arguments panel comes first and keeps typer's own labels
    assert not re.findall(r"<(?:bool|path|str|int|float)>", options)
    assert "--help Show this message and exit." in shown
    if command[-1:] in (("simulate",), ("combine",), ("graph",), ("train",)):
        assert "--overwrite Replace OUT" in shown
        assert "--out PATH" in shown


def test_demo_help_names_the_steps_only_accepts():
    from phenolens.cli.demo import DEMO_STEPS

    assert f"--only TEXT Comma-separated steps to run, of {', '.join(name for name, _ in DEMO_STEPS)} (default: all)." in rendered_help("demo")


def test_arguments_are_named_in_capitals_in_usage():
    assert "Usage: phenolens sign hmm [OPTIONS] {CHECKPOINT}" in rendered_help("sign", "hmm")
    assert "Usage: phenolens report combine [OPTIONS] {RUNS}..." in rendered_help("report", "combine")
