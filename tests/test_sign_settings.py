"""SIGN settings: validation on construction, and no drift between the CLI's options and the settings fields."""

from __future__ import annotations

import pytest
import typer
import typer.core
from typer.main import get_command

from phenolens.cli.options import cli_fields
from phenolens.cli.sign import app
from phenolens.core.errors import PhenolensError
from phenolens.core.settings import Settings, option_name, registered_settings
from phenolens.explain.sign.settings import MlpTrainingSettings, SignFitSettings, SignGraphSettings, SignHmmSettings, WatermarkSettings

COMMANDS = {
    "fit": SignFitSettings,
    "graph": SignGraphSettings,
    "train-mlp": MlpTrainingSettings,
    "hmm": SignHmmSettings,
    "watermark-experiment": WatermarkSettings,
}


def drift(command: typer.core.TyperCommand, settings_type: type[Settings]) -> list[str]:
    """Every way the command's options disagree with the settings fields: a field without its option,
    or an option whose default, read by the settings class, is not the field's default."""
    options = {name: parameter for parameter in command.params for name in parameter.opts}
    problems = []
    for field in cli_fields(settings_type):
        name = option_name(field)
        if name not in options:
            problems.append(f"{name}: no option for {settings_type.__name__}.{field.name}")
            continue
        parsed = getattr(settings_type(**{field.name: options[name].default}), field.name)
        if parsed != field.default:
            problems.append(f"{name}: the CLI default gives {parsed!r}, {settings_type.__name__}.{field.name} is {field.default!r}")
    return problems


@pytest.mark.parametrize(("name", "settings_type"), COMMANDS.items())
def test_every_sign_command_takes_its_defaults_from_its_settings(name, settings_type):
    command = get_command(app).commands[name]
    assert drift(command, settings_type) == []
    assert len(cli_fields(settings_type)) >= 2


def test_a_hand_written_option_that_drifts_is_caught():
    drifting = typer.Typer()

    @drifting.command()
    def fit(words: str = typer.Option("32", "--words"), loss: str = typer.Option("discriminative", "--loss")) -> None:
        """A command that copies two options by hand, one of them with another default, and forgets the rest."""

    @drifting.command()
    def other() -> None:
        """A second command keeps typer in group mode."""

    problems = drift(get_command(drifting).commands["fit"], SignFitSettings)
    assert "--words: the CLI default gives (32,), SignFitSettings.words is (64,)" in problems
    assert not any(problem.startswith("--loss") for problem in problems)
    assert "--nodes: no option for SignFitSettings.nodes_per_layer" in problems
    assert len(problems) == len(cli_fields(SignFitSettings)) - 1


def test_sign_settings_names_are_unique_and_registered():
    for settings_type in COMMANDS.values():
        assert registered_settings()[settings_type.__name__] is settings_type
    assert len({settings_type.step for settings_type in COMMANDS.values()}) == len(COMMANDS)


@pytest.mark.parametrize(
    ("settings_type", "values", "message"),
    [
        (SignFitSettings, {"words": (64, 1)}, r"SignFitSettings.words \(--words\) = 1: must be >= 2"),
        (SignFitSettings, {"validation_fraction": 0.0}, r"validation_fraction \(--validation-fraction\) = 0.0: must be > 0"),
        (SignFitSettings, {"validation_fraction": 0.95}, r"must be <= 0.9"),
        (SignFitSettings, {"loss": "contrastive"}, r"--loss\) = 'contrastive': choose one of discriminative, generative"),
        (SignFitSettings, {"lr": float("nan")}, r"--lr\) = nan: must be a finite number"),
        (SignFitSettings, {"layers": ("stage1", "stage2"), "words": (8, 8, 8)}, r"--words\) = \(8, 8, 8\): 3 word counts for 2 layers"),
        (SignFitSettings, {"receptive_method": "guess"}, r"choose one of trace, probe"),
        (SignGraphSettings, {"nodes_per_layer": -1}, r"SignGraphSettings.nodes_per_layer \(--nodes\) = -1: must be >= 0"),
        (MlpTrainingSettings, {"hidden": (16, 0)}, r"--hidden\) = 0: must be >= 1"),
        (SignHmmSettings, {"training_images": True, "images": 10}, r"--images\) = 10: --training-images models exactly"),
        (SignHmmSettings, {"states": "3,x"}, r"--states\) = 'x': must be a whole number"),
        (WatermarkSettings, {"letter": "AB"}, r"--letter\) = 'AB': give one visible character"),
        (WatermarkSettings, {"stamped": ("Shirt", "Shirt")}, r"--stamped\) = \('Shirt', 'Shirt'\): each class once"),
        (WatermarkSettings, {"test_images": 20000}, r"--test-images\) = 20000: must be <= 10000"),
    ],
)
def test_bad_values_are_refused_on_construction(settings_type, values, message):
    with pytest.raises(PhenolensError, match=message):
        settings_type(**values)


def test_lists_are_parsed_and_round_trip():
    settings = SignFitSettings(layers="stage1,stage2", words="6,5", validation_fraction="0.5")
    assert settings.layers == ("stage1", "stage2") and settings.words == (6, 5) and settings.validation_fraction == 0.5
    assert SignFitSettings.from_dict(settings.to_dict()) == settings
