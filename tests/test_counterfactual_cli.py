"""`phenolens counterfactual train | explain` end to end on real BBBC013 crops (tiny model, one epoch)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from phenolens.data.loaders import load
from phenolens.data.nuclei import nucleus_masks

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
        (["--target", "NuclearGFP", "--inverse-tolerance", "0"], "--inverse-tolerance 0.0 must lie in (0, 1)"),
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
        (["--dataset", "bbbc013", "--size", "30"], "divisible"),
        (["--dataset", "bbbc013", "--folder", "somewhere"], "exactly one image source"),
        (["--dataset", "bbbc013", "--blocks", "2,x"], "--blocks"),
        (["--dataset", "bbbc021-cells", "--group-by", "plate"], "'plate'"),
        (["--dataset", "bbbc013", "--centre-on", "Hoechst"], "no channel 'Hoechst' to centre the crops on"),
    ],
)
def test_train_rejects_bad_input_without_output(tmp_path, cli, arguments, message):
    out = tmp_path / "never"
    status, _, stderr = cli("counterfactual", "train", "--out", out, "--epochs", "1", *arguments)
    assert status == 2 and message in stderr
    assert not out.exists()


def test_explain_names_a_missing_checkpoint(tmp_path, cli):
    status, _, stderr = cli("counterfactual", "explain", tmp_path / "nothing", "--target", "NuclearGFP", "--out", tmp_path / "x")
    assert status == 2 and "model.json" in stderr


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
