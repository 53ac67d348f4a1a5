"""Shared conventions: atomic outputs, seeds, the report, the training loop, the CLI shell."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from phenolens.core import atomic_output_dir, numpy_rng, write_json
from phenolens.report import Report, Section, figure
from phenolens.training import EarlyStopping, ReduceLROnPlateau, fit


def test_atomic_output_dir_leaves_nothing_on_failure_and_keeps_the_old_result(tmp_path):
    target = tmp_path / "out"
    with atomic_output_dir(target) as staging:
        (staging / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"
    with pytest.raises(RuntimeError), atomic_output_dir(target) as staging:
        (staging / "a.txt").write_text("half")
        raise RuntimeError("crash")
    assert (target / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_write_json_converts_numpy_and_non_finite(tmp_path):
    path = write_json(tmp_path / "m.json", {"a": np.float32(0.5), "b": np.arange(3), "c": float("nan")})
    assert json.loads(path.read_text()) == {"a": 0.5, "b": [0, 1, 2], "c": None}


def test_seeded_generators_repeat():
    assert np.array_equal(numpy_rng(3).normal(size=4), numpy_rng(3).normal(size=4))


def test_report_is_self_contained_and_escaped(tmp_path):
    report = Report("title", metrics={"accuracy": np.float64(0.9)})
    fig, axis = figure()
    axis.plot([0, 1], [1, 0])
    section = Section("<b>unsafe</b>").text("a < b & c").figure(fig, "a line", filename="line.png")
    section.table(pd.DataFrame({"x": [1.23456]}), "numbers")
    report.add(section)
    html = report.write(tmp_path).read_text()
    assert "&lt;b&gt;unsafe&lt;/b&gt;" in html and "a &lt; b &amp; c" in html
    assert "data:image/png;base64," in html and "1.23" in html and "&#34;accuracy&#34;: 0.9" in html
    assert (tmp_path / "figures" / "line.png").read_bytes()[:4] == b"\x89PNG"


def test_training_loop_early_stopping_restores_the_best_weights():
    torch.manual_seed(0)
    x = torch.randn(128, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    model = torch.nn.Linear(3, 1)

    def step(m, batch, epoch):
        return torch.nn.functional.mse_loss(m(batch[0]), batch[1])

    stopper = EarlyStopping(patience=3)
    history = fit(model, (x, y), step, val=(x[:32], y[:32]), epochs=200, lr=0.05, callbacks=[stopper, ReduceLROnPlateau(patience=1)], seed=1)
    assert history.epochs[-1]["val_loss"] < 1e-3
    assert history.best_epoch == stopper.best_epoch
    with torch.no_grad():
        assert torch.nn.functional.mse_loss(model(x[:32]), y[:32]).item() == pytest.approx(stopper.best, rel=1e-5)
    assert history.column("lr")[-1] < history.column("lr")[0]


def test_training_loop_is_reproducible():
    def train(seed):
        torch.manual_seed(0)
        model = torch.nn.Linear(2, 1)
        data = (torch.arange(40.0).reshape(20, 2) / 40, torch.arange(20.0)[:, None] / 20)
        fit(model, data, lambda m, b, e: ((m(b[0]) - b[1]) ** 2).mean(), epochs=3, batch_size=4, seed=seed)
        return model.weight.detach().clone()

    assert torch.equal(train(5), train(5)) and not torch.equal(train(5), train(6))


def test_cli_help_and_unknown_command(cli):
    status, out, _ = cli("--help")
    assert status == 0 and "data" in out and "demo" in out
    status, _, err = cli("no-such-command")
    assert status == 2
