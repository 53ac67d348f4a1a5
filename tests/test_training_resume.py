"""Resuming training: a run SIGKILLed after k checkpoints, continued with --resume, ends with an uninterrupted run's weights, bitwise.

Every trainer goes through the one loop (`phenolens.training.loop.fit`), which checkpoints each epoch
into the run's staging folder; each test kills a small CLI run in a child process right after its
k-th checkpoint (a forked child wraps its own `Checkpoint.save`, so nothing in phenolens carries a test
hook), resumes it, and compares the weights with those of a run that was never interrupted.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from phenolens.core.errors import PhenolensError
from phenolens.core.runs import PARTIAL_MARK, RESUMABLE
from phenolens.core.seeding import seed_everything, torch_generator
from phenolens.training.checkpoint import CHECKPOINTS, Checkpoint, checkpointing, decode_state, encode_state, resumable
from phenolens.training.loop import CosineAnnealing, EarlyStopping, ReduceLROnPlateau, fit

pytestmark = pytest.mark.usefixtures("one_thread")


def _killed_child(argv: list[str], kill_after: int) -> None:
    """In a forked child: run the CLI and SIGKILL this process right after its `kill_after`-th checkpoint."""
    saves = []
    original = Checkpoint.save

    def save_then_maybe_die(self, state):
        original(self, state)
        saves.append(self.path)
        if len(saves) == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    Checkpoint.save = save_then_maybe_die
    from phenolens.cli.main import run

    os._exit(run(argv))


def killed_then_resumed(cli, argv: list, out: Path, kill_after: int) -> None:
    """Kill a run (in a forked child, so nothing is imported twice) after `kill_after` checkpoints, check what it left, and resume it."""
    argv = [str(a) for a in argv]
    child = multiprocessing.get_context("fork").Process(target=_killed_child, args=([*argv, "--out", str(out)], kill_after))
    child.start()
    child.join(timeout=300)
    if child.is_alive():
        child.kill()
    assert child.exitcode == -signal.SIGKILL, f"the run was not killed after {kill_after} checkpoints (exit {child.exitcode})"
    staging = list(out.parent.glob(f".{out.name}{PARTIAL_MARK}*"))
    assert len(staging) == 1 and (staging[0] / RESUMABLE).is_file() and any((staging[0] / CHECKPOINTS).iterdir())
    assert not out.exists()
    status, _, stderr = cli(*argv, "--out", out)
    assert status == 2 and "--resume" in stderr and "Traceback" not in stderr
    status, _, stderr = cli(*argv, "--out", out, "--resume")
    assert status == 0, stderr[-2000:]
    assert not list(out.parent.glob(f".{out.name}{PARTIAL_MARK}*")) and not (out / CHECKPOINTS).exists()


def assert_same_weights(reference: Path, resumed: Path, names: list[str]) -> None:
    """The safetensors files `names` of both runs hold bitwise equal tensors."""
    from safetensors.torch import load_file

    for name in names:
        expected, got = load_file(reference / name), load_file(resumed / name)
        assert expected.keys() == got.keys(), name
        for key in expected:
            assert torch.equal(expected[key], got[key]), f"{name}: {key} differs"


def _write_crops(root: Path, per_class: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for label in ("inside", "outside"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            image = rng.uniform(0, 20, size=(2, 16, 16)).astype(np.float32)
            image[0, (slice(4, 8) if label == "inside" else slice(0, 3)), 4:8] += 200
            np.save(root / label / f"{i}.npy", image)
    return root


IMAGES_TINY = ["--width", "0.125", "--blocks", "1,1", "--stem-stride", "1", "--batch-size", "8"]


# ------------------------------------------------------------------------------------- the loop itself


def test_state_codec_keeps_types_keys_and_non_finite_values():
    optimizer = torch.optim.Adam(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    optimizer.zero_grad()
    torch.nn.Linear(2, 1)(torch.ones(1, 2)).sum().backward()
    state = {
        "optimizer": optimizer.state_dict(),
        "numpy": np.random.get_state(),
        "values": [float("inf"), float("-inf"), 0.1, None, True, 3],
        "keys": {0: "a", 7: (1, 2)},
        "__odd": 1,
    }
    tree, tensors = encode_state(state)
    json.dumps(tree, allow_nan=False)  # strict JSON: non-finite floats are tagged
    back = decode_state(json.loads(json.dumps(tree)), tensors)
    assert back["values"] == state["values"] and back["keys"] == {0: "a", 7: (1, 2)} and back["__odd"] == 1
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999) and back["numpy"][0] == "MT19937"
    assert back["numpy"][1].dtype == np.uint32 and np.array_equal(back["numpy"][1], state["numpy"][1])


def _train_small(folder: Path | None, stop_at: int | None = None) -> tuple[torch.nn.Module, object]:
    """A dropout MLP with augmentation noise, early stopping and both schedules; optionally interrupted after epoch `stop_at`."""
    seed_everything(3)
    x, y = torch.randn(40, 4), torch.randn(40, 1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))
    noise = torch_generator(5)

    def step(net, batch, epoch):
        inputs, targets = batch
        return torch.nn.functional.mse_loss(net(inputs + 0.1 * torch.randn(inputs.shape, generator=noise)), targets)

    class Interrupt(EarlyStopping):
        def on_epoch_end(self, epoch, record, net):
            if epoch == stop_at:
                raise KeyboardInterrupt
            return False

    callbacks = [EarlyStopping(patience=50), ReduceLROnPlateau(0.5, 1), CosineAnnealing(8), Interrupt()]
    arguments = dict(val=(x[:10], y[:10]), epochs=8, batch_size=8, callbacks=callbacks, generators=[noise], seed=1)
    if folder is None:
        return model, fit(model, (x[10:], y[10:]), step, **arguments)
    with checkpointing(folder):
        return model, fit(model, (x[10:], y[10:]), step, **arguments)


def test_an_interrupted_fit_resumes_to_the_same_weights_history_and_random_state(tmp_path):
    reference, history = _train_small(None)
    after = torch.rand(3)
    with pytest.raises(KeyboardInterrupt):
        _train_small(tmp_path / "checkpoints", stop_at=4)
    assert (tmp_path / "checkpoints" / "0000.safetensors").is_file()
    resumed, resumed_history = _train_small(tmp_path / "checkpoints")
    assert torch.equal(torch.rand(3), after)  # the global generator is where the uninterrupted run left it
    for key, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key])
    assert resumed_history.epochs == history.epochs and resumed_history.best_epoch == history.best_epoch
    assert not (tmp_path / "checkpoints").exists()  # a finished block removes its checkpoints


def test_a_checkpoint_of_another_unit_or_a_damaged_one_is_one_line(tmp_path):
    checkpoint = Checkpoint(tmp_path / "0000.safetensors", "training US-CNN")
    checkpoint.save({"finished": True})
    with pytest.raises(PhenolensError, match="not 'training i-ResNet'; pass --overwrite"):
        Checkpoint(checkpoint.path, "training i-ResNet").load()
    checkpoint.path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(PhenolensError, match="unreadable checkpoint"):
        checkpoint.load()


def test_a_finished_unit_is_skipped_with_its_result_restored(tmp_path):
    module, calls = torch.nn.Linear(2, 2), []

    def work():
        calls.append(1)
        with torch.no_grad():
            module.weight.fill_(7.0)
        torch.rand(5)

    with pytest.raises(KeyboardInterrupt), checkpointing(tmp_path):
        resumable(module, "layer", work)
        after = torch.rand(1)
        raise KeyboardInterrupt
    fresh = torch.nn.Linear(2, 2)
    with checkpointing(tmp_path):
        resumable(fresh, "layer", work)
        assert torch.rand(1) == after
    assert calls == [1] and torch.all(fresh.weight == 7.0)


# ------------------------------------------------------------------------------------- the five trainers, killed and resumed


def test_images_train_resumes_inside_a_later_fold_and_member(cli, tmp_path):
    crops = _write_crops(tmp_path / "crops")
    argv = ["train", "--folder", crops, "--channels", "GFP,DNA", "--cv", "2", "--members", "2", "--epochs", "3", *IMAGES_TINY]
    assert cli(*argv, "--out", tmp_path / "reference")[0] == 0
    killed_then_resumed(cli, argv, tmp_path / "resumed", kill_after=6)  # fold 1 done (2 members x 4 saves); in fold 2's first member
    names = ["model.safetensors", "folds/fold-1/model.safetensors", "folds/fold-2/model.safetensors"]
    assert_same_weights(tmp_path / "reference", tmp_path / "resumed", names)
    reference, resumed = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("reference", "resumed"))
    assert reference["cv_macro_f1"] == resumed["cv_macro_f1"]


def test_counterfactual_train_resumes_in_the_autoencoder(cli, tmp_path):
    crops = _write_crops(tmp_path / "crops", per_class=10)
    argv = ["counterfactual", "train", "--folder", crops, "--channels", "GFP,DNA", "--size", "16", "--blocks", "1", "--hidden", "4"]
    argv += ["--epochs", "2", "--autoencoder-epochs", "2", "--batch-size", "8"]
    assert cli(*argv, "--out", tmp_path / "reference")[0] == 0
    killed_then_resumed(cli, argv, tmp_path / "resumed", kill_after=4)  # the i-ResNet finished (3 saves), the autoencoder's first epoch
    names = [p.name for p in (tmp_path / "reference").glob("*.safetensors")]
    assert len(names) >= 2
    assert_same_weights(tmp_path / "reference", tmp_path / "resumed", names)


def test_echoes_train_resumes_after_an_epoch(cli, tmp_path, isolated_cache):
    argv = ["echoes", "train", "--n-signals", "60", "--epochs", "3", "--batch-size", "16"]
    assert cli(*argv, "--out", tmp_path / "reference")[0] == 0
    killed_then_resumed(cli, argv, tmp_path / "resumed", kill_after=2)
    assert_same_weights(tmp_path / "reference", tmp_path / "resumed", ["model.safetensors"])


@pytest.mark.parametrize(("loss", "kill_after"), [("discriminative", 2), ("generative", 1)])
def test_sign_fit_resumes_after_an_epoch_or_a_layer(cli, tmp_path, loss, kill_after):
    crops = _write_crops(tmp_path / "crops")
    folder = ["--folder", crops, "--channels", "GFP,DNA"]
    assert cli("train", *folder, "--epochs", "2", *IMAGES_TINY, "--out", tmp_path / "model")[0] == 0
    argv = ["sign", "fit", tmp_path / "model", *folder, "--loss", loss, "--epochs", "3", "--validation-fraction", "0.5"]
    argv += ["--layers", "stage1,stage2", "--words", "4,3", "--updates", "5"]
    assert cli(*argv, "--out", tmp_path / "reference")[0] == 0
    killed_then_resumed(cli, argv, tmp_path / "resumed", kill_after=kill_after)
    names = [str(p.relative_to(tmp_path / "reference")) for p in (tmp_path / "reference").rglob("*.safetensors")]
    assert len(names) >= 2
    assert_same_weights(tmp_path / "reference", tmp_path / "resumed", names)


def test_profile_run_resumes_the_autoencoder(cli, tmp_path):
    from phenolens.profiling.synthetic import synthetic_screen

    table = tmp_path / "screen.csv"
    synthetic_screen(plates=6, controls_per_plate=8, moas=2, compounds_per_moa=3, doses=2, features=12, effect=8.0, seed=1).to_csv(table, index=False)
    argv = ["profile", "run", table, "--controls", "Metadata_PertType == 'control'", "--treatment-column", "Metadata_Treatment"]
    argv += ["--moa-column", "Metadata_MoA", "--max-epochs", "4", "--moa-repeats", "2", "--classifiers", "lr", "--jobs", "1", "--no-curve"]
    argv += ["--explain-features", "1"]
    assert cli(*argv, "--out", tmp_path / "reference")[0] == 0
    killed_then_resumed(cli, argv, tmp_path / "resumed", kill_after=3)
    assert_same_weights(tmp_path / "reference", tmp_path / "resumed", ["model/model.safetensors"])


def test_images_train_with_the_adversary_resumes_its_weights_optimiser_and_ramp(cli, tmp_path):
    """The adversary is no part of the saved model, but it shapes the network: its state travels in the checkpoints."""
    crops = _write_crops(tmp_path / "crops")
    argv = ["train", "--folder", crops, "--channels", "GFP,DNA", "--epochs", "3", "--validation-fraction", "0", *IMAGES_TINY]
    argv += ["--adversary-column", "source", "--no-adversary-baseline", "--adversary-reset", "2"]
    assert cli(*argv, "--out", tmp_path / "reference")[0] == 0
    killed_then_resumed(cli, argv, tmp_path / "resumed", kill_after=2)  # after epoch 2: the adversary was reset once and trained again
    assert_same_weights(tmp_path / "reference", tmp_path / "resumed", ["model.safetensors"])
