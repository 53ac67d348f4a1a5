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
