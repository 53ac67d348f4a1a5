"""`phenolens counterfactual train | explain` end to end on real BBBC013 crops (tiny model, one epoch)."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import typer
from PIL import Image

from phenolens.core.runs import PARTIAL_MARK, RunWriter, load_run
from phenolens.core.settings import option_name
from phenolens.data.loaders import load
from phenolens.data.nuclei import nucleus_masks
from phenolens.explain.counterfactual.settings import CounterfactualExplanationSettings, CounterfactualTrainingSettings

ISSUE_KEYS = (
    "test_accuracy",
    "reconstruction_mae",
    "flip_rate_alpha0",
    "flip_rate_alpha1",
    "evaluations_per_counterfactual",
    "seconds_per_counterfactual",
    "speedup_vs_gradient",
    "nuclear_gfp_increase_rate",
)
TINY = ["--size", "32", "--blocks", "1", "--hidden", "4", "--epochs", "1", "--autoencoder-epochs", "1"]
QUICK = ["--baseline-steps", "2", "--sweeps", "0", "--panels", "1", "--no-autoencoder"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from phenolens.cli.main import run

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("counterfactual") / "model"
    status = run(
        [
            "counterfactual",
            "train",
            "--dataset",
            "bbbc013",
            "--classes",
            "NuclearGFP,CytoplasmicGFP",
            "--centre-on",
            "DNA",
            "--out",
            str(folder),
            *TINY,
        ]
    )
    assert status == 0
    return folder


def test_train_writes_a_loadable_model(checkpoint):
    from phenolens.explain.counterfactual.model import CounterfactualModel

    metrics = json.loads((checkpoint / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["n_labelled"] == 35
    assert metrics["reconstruction_mae"] < 1 / 255
    assert (checkpoint / "report.html").is_file() and (checkpoint / "autoencoder" / "model.safetensors").is_file()
    model = CounterfactualModel.load(checkpoint)
    assert model.class_names == ["NuclearGFP", "CytoplasmicGFP"] and model.channel_names == ["FKHR-GFP", "DNA"]
    assert model.ecinn.means_true_.shape == (2, 2 * 32 * 32)  # no padding by default
    assert torch.equal(model.classifier.head.means, model.ecinn.means_true_)
    # --centre-on DNA travels with the weights: the network sees every crop registered on its nucleus
    assert model.settings.centre_on == "DNA"
    crops = model.to_raw(model.tensor(model.test_subset(load("bbbc013"))).numpy())
    masks = nucleus_masks(crops, 1)
    rows = (masks * np.arange(32)[None, :, None]).sum(axis=(1, 2)) / masks.sum(axis=(1, 2))
    columns = (masks * np.arange(32)[None, None, :]).sum(axis=(1, 2)) / masks.sum(axis=(1, 2))
    assert np.abs(rows - 15.5).max() <= 1.0 and np.abs(columns - 15.5).max() <= 1.0


def test_explain_writes_every_output(checkpoint, tmp_path, cli):
    out = tmp_path / "explained"
    status, stdout, _ = cli(
        "counterfactual",
        "explain",
        checkpoint,
        "--target",
        "NuclearGFP",
        "--nucleus-channel",
        "DNA",
        "--out",
        out,
        "--baseline-steps",
        "3",
        "--sweeps",
        "1",
        "--panels",
        "1",
        "--inverse-tolerance",
        "1e-5",
    )
    assert status == 0, stdout
    assert "--centre-on" not in stdout  # registered already: no suggestion
    metrics = json.loads((out / "metrics.json").read_text())
    assert all(key in metrics for key in ISSUE_KEYS)
    assert metrics["evaluations_per_counterfactual"] == 3 and metrics["n_images"] == 35
    assert metrics["inverse_relative_residual"] < 1e-5  # the --inverse-tolerance override reached the inverse
    assert 0.0 <= metrics["flip_rate_alpha1"] <= 1.0 and metrics["speedup_vs_gradient"] > 0
    assert metrics["crops_centred_on"] == "DNA" and -1.0 <= metrics["change_similarity_alpha1"] <= 1.0
    arrays = np.load(out / "counterfactuals.npz")
    count = metrics["n_images"]
    assert arrays["originals"].shape == arrays["counterfactual_alpha1"].shape == arrays["difference_alpha1"].shape == (count, 2, 32, 32)
    assert np.allclose(arrays["difference_alpha1"], arrays["counterfactual_alpha1"] - arrays["originals"])
    assert arrays["probabilities_alpha0"].shape == (count, 2) and arrays["autoencoder_full"].shape == (count, 2, 32, 32)
    assert int(arrays["valid"].sum()) == metrics["n_counterfactuals"]
    gifs = list((out / "gifs").glob("*.gif"))
    assert len(gifs) == 1
    with Image.open(gifs[0]) as animation:
        assert animation.n_frames == 16
    table = (out / "counterfactuals.csv").read_text().splitlines()
    assert len(table) == count + 1 and table[0].startswith("source,label,predicted")
    assert "Counterfactuals towards NuclearGFP" in (out / "report.html").read_text()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--target", "Mitotic"], "unknown target class 'Mitotic'"),
        (["--target", "NuclearGFP", "--nucleus-channel", "Hoechst"], "--nucleus-channel 'Hoechst'"),
        (["--target", "NuclearGFP", "--dataset", "mitocheck"], "channels"),
        (["--target", "NuclearGFP", "--inverse-tolerance", "0"], "(--inverse-tolerance) = 0.0: must be > 0"),
        (["--target", "NuclearGFP", "--inverse-tolerance", "1"], "(--inverse-tolerance) = 1.0: must lie in (0, 1)"),
        (["--target", "NuclearGFP", "--baseline-steps", "0"], "(--baseline-steps) = 0: must be >= 1"),
        (["--target", "NuclearGFP", "--sweep-steps", "nan"], "(--sweep-steps) = 'nan': must be a whole number"),
        ([], "no target class: pass --target, one of NuclearGFP, CytoplasmicGFP"),
        (["--target", "NuclearGFP", "--nucleus-channel", "DNA", "--signal-channel", "DNA"], "(--signal-channel) = 'DNA': must differ"),
        (["--target", "NuclearGFP", "--unknown-classes", "guess"], "(--unknown-classes) = 'guess': choose one of error, unlabelled"),
    ],
)
def test_explain_rejects_bad_input_without_output(checkpoint, tmp_path, cli, arguments, message):
    out = tmp_path / "never"
    status, _, stderr = cli("counterfactual", "explain", checkpoint, "--out", out, "--baseline-steps", "2", *arguments)
    assert status == 2 and message in stderr and len(stderr.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--dataset", "bbbc013", "--classes", "NuclearGFP,Apoptotic"], "['Apoptotic']"),
        (["--dataset", "bbbc013"], "the data has 3 (NoGFP, CytoplasmicGFP, NuclearGFP); choose two with --classes"),
        (["--dataset", "bbbc013", "--classes", "NoGFP,NuclearGFP,CytoplasmicGFP"], "'CytoplasmicGFP'): name exactly two"),
        (["--dataset", "bbbc013", "--classes", "NoGFP,NoGFP"], "name exactly two distinct classes"),
        (["--dataset", "bbbc013", "--size", "30"], "divisible"),
        (["--dataset", "bbbc013", "--size", "0"], "CounterfactualTrainingSettings.size (--size) = 0: must be >= 1"),
        (["--dataset", "bbbc013", "--lr", "inf"], "(--lr) = 'inf': must be a finite number"),
        (["--dataset", "bbbc013", "--epochs", "0"], "(--epochs) = 0: must be >= 1"),
        (["--dataset", "bbbc013", "--coeff", "1.5"], "(--coeff) = 1.5: must be below 1"),
        (["--dataset", "bbbc013", "--inverse-tolerance", "0"], "(--inverse-tolerance) = 0.0: must be > 0"),
        (["--dataset", "bbbc013", "--blocks", "1,1", "--hidden", "4"], "(--hidden) = (4,): give one entry per scale"),
        (["--dataset", "bbbc013", "--folder", "somewhere"], "exactly one image source"),
        (["--dataset", "bbbc013", "--blocks", "2,x"], "--blocks"),
        (["--dataset", "bbbc021-cells", "--group-by", "plate"], "'plate'"),
        (["--dataset", "bbbc013", "--classes", "NoGFP,NuclearGFP", "--centre-on", "Hoechst"], "no channel 'Hoechst' to centre the crops on"),
    ],
)
def test_train_rejects_bad_input_without_output(tmp_path, cli, arguments, message):
    out = tmp_path / "never"
    status, _, stderr = cli("counterfactual", "train", "--out", out, *arguments)
    assert status == 2 and message in stderr and len(stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_explain_names_a_missing_checkpoint(tmp_path, cli):
    status, _, stderr = cli("counterfactual", "explain", tmp_path / "nothing", "--target", "NuclearGFP", "--out", tmp_path / "x")
    assert status == 2 and "nothing: no such run folder" in stderr


def _copy_of(checkpoint, destination):
    shutil.copytree(checkpoint, destination)
    return destination


def test_explain_refuses_unfinished_and_foreign_folders(checkpoint, tmp_path, cli):
    arguments = ("--target", "NuclearGFP", "--out", tmp_path / "out")
    partial = _copy_of(checkpoint, tmp_path / f".model{PARTIAL_MARK}999999-x")
    status, _, stderr = cli("counterfactual", "explain", partial, *arguments)
    assert status == 2 and "staging folder of an interrupted run" in stderr
    unrecorded = _copy_of(checkpoint, tmp_path / "no-record")
    (unrecorded / "run.json").unlink()
    status, _, stderr = cli("counterfactual", "explain", unrecorded, *arguments)
    assert status == 2 and "no run.json, so not a finished phenolens run" in stderr
    with RunWriter(tmp_path / "other", command="echoes simulate"):
        pass
    status, _, stderr = cli("counterfactual", "explain", tmp_path / "other", *arguments)
    assert status == 2 and "a 'echoes simulate' run, not a counterfactual model" in stderr
    assert not (tmp_path / "out").exists()


def test_explain_refuses_more_class_names_than_outputs(checkpoint, tmp_path, cli):
    tampered = _copy_of(checkpoint, tmp_path / "tampered")
    card = json.loads((tampered / "model.json").read_text())
    card["class_names"].append("NoGFP")
    (tampered / "model.json").write_text(json.dumps(card))
    status, _, stderr = cli("counterfactual", "explain", tampered, "--target", "NuclearGFP", "--out", tmp_path / "out")
    assert status == 2 and "3 names for n_classes=2" in stderr
    assert len(stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_runs_carry_their_settings_and_are_never_silently_replaced(checkpoint, tmp_path, cli):
    trained = load_run(checkpoint)
    assert trained.command == "counterfactual train" and trained.record["datasets"] == ["bbbc013"]
    assert trained.setting(CounterfactualTrainingSettings) == CounterfactualTrainingSettings(
        classes=("NuclearGFP", "CytoplasmicGFP"), centre_on="DNA", size=32, blocks=(1,), hidden=(4,), epochs=1, autoencoder_epochs=1
    )
    out = tmp_path / "explained"
    arguments = ("counterfactual", "explain", checkpoint, "--target", "CytoplasmicGFP", "--out", out, *QUICK)
    assert cli(*arguments)[0] == 0
    explained = load_run(out)
    assert explained.setting(CounterfactualExplanationSettings) == CounterfactualExplanationSettings(
        target="CytoplasmicGFP", baseline_steps=2, sweeps=0, panels=1, autoencoder=False
    )
    assert [Path(entry["path"]) for entry in explained.record["inputs"]] == [checkpoint.resolve()]
    status, _, stderr = cli(*arguments)
    assert status == 2 and "pass --overwrite" in stderr
    assert cli(*arguments, "--overwrite")[0] == 0
    status, _, stderr = cli("counterfactual", "explain", checkpoint, "--target", "NuclearGFP", "--out", checkpoint, "--overwrite", *QUICK)
    assert status == 2 and "contains the input" in stderr and load_run(checkpoint).command == "counterfactual train"


def _class_folder(test_images, root, names: dict[str, str], channel_order: list[int]):
    """Write the test images as .npy files into one sub-folder per class, renamed by `names`, channels in `channel_order`."""
    for index, (image, label) in enumerate(zip(test_images.images, test_images.label_names())):
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"cell{index:03d}.npy", np.asarray(image)[channel_order])
    return root


def test_explain_matches_class_folders_and_channels_by_name(checkpoint, tmp_path, cli):
    from phenolens.explain.counterfactual.model import CounterfactualModel

    model = CounterfactualModel.load(checkpoint)
    test_images = model.test_subset(load("bbbc013"))
    reference = tmp_path / "reference"
    assert cli("counterfactual", "explain", checkpoint, "--target", "NuclearGFP", "--out", reference, *QUICK)[0] == 0
    expected = pd.read_csv(reference / "counterfactuals.csv")
    # Folder names sort as CytoplasmicGFP < NuclearGFP, the model's order is NuclearGFP, CytoplasmicGFP;
    # the channels are stored DNA first, the model's order is FKHR-GFP, DNA.
    folder = _class_folder(test_images, tmp_path / "cells", {"NuclearGFP": "NuclearGFP", "CytoplasmicGFP": "CytoplasmicGFP"}, [1, 0])
    out = tmp_path / "by-name"
    arguments = ("counterfactual", "explain", checkpoint, "--target", "NuclearGFP", "--folder", folder, "--channels", "DNA,FKHR-GFP")
    assert cli(*arguments, "--out", out, *QUICK)[0] == 0
    table = pd.read_csv(out / "counterfactuals.csv").sort_values("source", key=lambda s: s.str.extract(r"cell(\d+)")[0].astype(int))
    assert table["label"].tolist() == expected["label"].tolist() and table["predicted"].tolist() == expected["predicted"].tolist()
    assert np.allclose(table["p_target"], expected["p_target"], atol=1e-5)
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] == json.loads((reference / "metrics.json").read_text())["test_accuracy"]
    status, _, stderr = cli(*arguments[:-1], "DNA,Hoechst", "--out", tmp_path / "x", *QUICK)
    assert status == 2 and "the images' channels (DNA, Hoechst) are not the model's (FKHR-GFP, DNA)" in stderr
    strange = _class_folder(test_images, tmp_path / "strange", {"NuclearGFP": "AAA", "CytoplasmicGFP": "CytoplasmicGFP"}, [0, 1])
    status, _, stderr = cli("counterfactual", "explain", checkpoint, "--target", "NuclearGFP", "--folder", strange, "--channels", "FKHR-GFP,DNA",
                            "--out", tmp_path / "x", *QUICK)  # fmt: skip
    assert status == 2 and "class 'AAA' is not one of the model's classes (NuclearGFP, CytoplasmicGFP)" in stderr
    assert len(stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()
    unlabelled = tmp_path / "unlabelled"
    status, _, _ = cli("counterfactual", "explain", checkpoint, "--target", "NuclearGFP", "--folder", strange, "--channels", "FKHR-GFP,DNA",
                       "--unknown-classes", "unlabelled", "--out", unlabelled, *QUICK)  # fmt: skip
    labels = pd.read_csv(unlabelled / "counterfactuals.csv")["label"].fillna("")
    assert status == 0 and set(labels) == {"", "CytoplasmicGFP"} and (labels == "").sum() == (expected["label"] == "NuclearGFP").sum()


def _drift(command, settings_type) -> list[str]:
    """Every way the options of `command` differ from the fields of `settings_type`: a field without
    an option (every field is a command-line option here), or an option whose default does not
    build the field's default."""
    click_command = typer.main.get_command(command) if isinstance(command, typer.Typer) else command
    options = {option: parameter for parameter in click_command.params for option in parameter.opts}
    defaults = settings_type()
    problems = []
    for field in dataclasses.fields(settings_type):
        name = option_name(field)
        if name not in options:
            problems.append(f"{field.name}: no option {name}")
            continue
        built = settings_type(**{field.name: options[name].default if options[name].default != "" else field.default})
        if getattr(built, field.name) != getattr(defaults, field.name):
            problems.append(f"{field.name}: option default {options[name].default!r} != {getattr(defaults, field.name)!r}")
    return problems


def _group_command(name: str):
    from phenolens.cli.counterfactual import app

    return typer.main.get_group(app).commands[name]


@pytest.mark.parametrize(("command", "settings_type"), [("train", CounterfactualTrainingSettings), ("explain", CounterfactualExplanationSettings)])
def test_cli_options_and_settings_defaults_never_drift(command, settings_type):
    assert _drift(_group_command(command), settings_type) == []


def test_the_drift_check_catches_a_hand_written_option():
    drifted = typer.Typer()

    @drifted.command()
    def train(size: int = typer.Option(32, "--size"), seed: int = typer.Option(0, "--seed")) -> None:
        """A command that copies two settings by hand, one with the wrong default, and forgets the rest."""

    problems = _drift(typer.main.get_command(drifted), CounterfactualTrainingSettings)
    assert "size: option default 32 != 64" in problems and "epochs: no option --epochs" in problems
    assert not any(problem.startswith("seed") for problem in problems)


def test_explain_suggests_registration_for_a_model_trained_without_it(tmp_path, cli):
    model, out = tmp_path / "model", tmp_path / "explained"
    status, _, _ = cli(
        "counterfactual", "train", "--dataset", "bbbc013", "--classes", "NuclearGFP,CytoplasmicGFP", "--out", model, *TINY, "--no-autoencoder"
    )
    assert status == 0
    arguments = ("--target", "NuclearGFP", "--baseline-steps", "2", "--sweeps", "0", "--panels", "1", "--out", out)
    status, stdout, _ = cli("counterfactual", "explain", model, "--nucleus-channel", "DNA", *arguments)
    assert status == 0 and "train with --centre-on DNA" in stdout
    assert json.loads((out / "metrics.json").read_text())["crops_centred_on"] is None
