"""benchmarks/images_adversary.py: seed ranges, reading finished runs back, and the ten-seed reading of its targets."""

import argparse
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import images_adversary as bench  # noqa: E402


def _probe(within: float) -> dict:
    figures = {"balanced_accuracy": 0.5, "chance": 0.25, "n_images": 8, "class_only_balanced_accuracy": 0.5}
    within_figures = {"within_class_balanced_accuracy": within, "within_class_chance": 1 / 3, "within_class_images": 4, "within_class_classes": [1]}
    return {**figures, **within_figures}


def _metrics(f1_with: float, f1_without: float, probe_with: float, probe_without: float) -> dict:
    """A metrics.json of `images train --adversary-column well` reduced to what the benchmark reads."""

    def model(probe: float) -> dict:
        return {**_probe(0.2), "ungrouped": _probe(probe), "trained_images": _probe(probe), "unseen_images": _probe(probe)}

    models = {"with_adversary": model(probe_with), "without_adversary": model(probe_without)}
    return {"macro_f1": f1_with, "adversary": {"transductive": False, "macro_f1_without_adversary": f1_without, **models}}


def _finished(folder: Path, options: list[str], metrics: dict) -> None:
    """A finished `images train` run in `folder` made with `options` (as run.json records them)."""
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"command": "images train", "argv": ["/x/phenolens/__main__.py", "images", "train", *options]}))
    (folder / "metrics.json").write_text(json.dumps(metrics))


def _options(seed: int, out: Path) -> list[str]:
    return [*bench.TRAIN, "--seed", str(seed), "--out", str(out), "--overwrite"]


def test_seeds_take_ranges_in_the_order_given():
    assert bench.parse_seeds("0-9") == list(range(10))
    assert bench.parse_seeds("0-4,7") == [0, 1, 2, 3, 4, 7]
    assert bench.parse_seeds("5,6,7,8,9") == [5, 6, 7, 8, 9]
    assert bench.parse_seeds(" 3 ") == [3]
    assert bench.parse_seeds("9,2-3") == [9, 2, 3]


@pytest.mark.parametrize("text", ["", "a", "5-3", "0-", "-1", "1,1", "0-4,3", "1.5"])
def test_bad_seeds_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        bench.parse_seeds(text)


def test_seed_spread_known_answer():
    # session 15's per-seed change of the probe, blur 1.0 minus no blur (docs/results.md): -0.016 +- 0.025
    mean, error, lower, upper = bench.seed_spread([0.043, 0.022, -0.012, -0.032, -0.101])
    assert mean == pytest.approx(-0.016)
    assert error == pytest.approx(0.024922, abs=1e-6)  # sqrt(0.012422 / 4 / 5)
    assert upper - mean == pytest.approx(1.533206 * error, rel=1e-6)  # t(0.90, 4 degrees of freedom)
    assert mean - lower == pytest.approx(upper - mean)
    mean, error, lower, upper = bench.seed_spread([1.0, 2.0, 3.0, 4.0])
    assert (mean, error) == pytest.approx((2.5, 0.6454972))
    assert upper == pytest.approx(2.5 + 1.637744 * 0.6454972, rel=1e-6)
    assert all(value != value for value in bench.seed_spread([0.4])[1:])  # one seed: no spread (NaN)


def test_verdict_reads_the_mean_and_its_one_sided_bound():
    assert bench.verdict([0.05, 0.06, 0.04, 0.05], 0.10) == "met, settled"
    assert bench.verdict([0.09, 0.20, -0.01, 0.08], 0.10) == "met by the mean, not settled"
    assert bench.verdict([0.11, 0.30, -0.01, 0.08], 0.10) == "missed by the mean, not settled"
    assert bench.verdict([0.20, 0.21, 0.19, 0.20], 0.10) == "missed, settled"
    assert bench.verdict([0.05], 0.10) == "met by the mean, not settled"
    assert bench.verdict([0.15], 0.10) == "missed by the mean, not settled"


def test_finished_run_is_read_only_with_the_same_options(tmp_path):
    metrics = _metrics(0.9, 0.95, 0.4, 0.45)
    _finished(tmp_path / "moved", _options(3, tmp_path / "elsewhere"), metrics)
    assert bench.finished_run(tmp_path / "moved", _options(3, tmp_path / "moved")) == metrics  # the folder may move
    assert bench.finished_run(tmp_path / "moved", _options(4, tmp_path / "moved")) is None  # another seed
    other = [*bench.TRAIN, "--blur-augmentation", "0", "--seed", "3", "--out", str(tmp_path / "moved"), "--overwrite"]
    assert bench.finished_run(tmp_path / "moved", other) is None  # another setting
    (tmp_path / "staging").mkdir()
    (tmp_path / "staging" / "metrics.json").write_text(json.dumps(metrics))
    assert bench.finished_run(tmp_path / "staging", _options(3, tmp_path / "staging")) is None  # no run.json: not finished


def _no_training(*args, **kwargs):
    raise AssertionError("trained although a finished run was there")


def test_reuse_reads_the_run_instead_of_training(tmp_path, monkeypatch):
    monkeypatch.setattr(bench.subprocess, "run", _no_training)
    _finished(tmp_path / "seed-2", _options(2, tmp_path / "seed-2"), _metrics(1.0, 1.0, 0.3, 0.3))
    assert bench.train(2, tmp_path / "seed-2", False, True, None, [], reuse=True)["macro_f1"] == 1.0
    with pytest.raises(AssertionError, match="trained"):
        bench.train(2, tmp_path / "seed-2", False, True, None, [], reuse=False)


def _run_main(monkeypatch, argv: list[str]) -> int:
    monkeypatch.setattr(sys, "argv", ["images_adversary.py", *argv])
    with pytest.raises(SystemExit) as stopped:
        bench.main()
    return stopped.value.code


def test_check_judges_the_mean_over_the_seeds_given(tmp_path, monkeypatch, capsys):
    # seed 0 alone misses the probe target (0.5 - 1/3 > 0.10); seeds 0-3 together meet it (mean 0.41)
    monkeypatch.setattr(bench.subprocess, "run", _no_training)
    for seed, probe in enumerate([0.50, 0.38, 0.38, 0.38]):
        _finished(tmp_path / "blur" / f"seed-{seed}", _options(seed, tmp_path / "blur" / f"seed-{seed}"), _metrics(0.98, 0.99, probe, 0.45))
        _finished(tmp_path / "other" / f"seed-{seed}", _options(seed, tmp_path / "other" / f"seed-{seed}"), _metrics(0.97, 0.99, 0.40, 0.45))
    assert _run_main(monkeypatch, ["--seeds", "0", "--reuse", "--out", str(tmp_path / "blur"), "--check"]) == 1
    capsys.readouterr()
    assert _run_main(monkeypatch, ["--seeds", "0-3", "--reuse", "--out", str(tmp_path / "blur"), "--check", "--paired", str(tmp_path / "other")]) == 0
    out = capsys.readouterr().out
    assert "within class 0.410 with / 0.450 without the adversary" in out
    assert "macro-F1 drop from the adversary (4 seeds): +0.0100 (standard error 0.0000" in out
    assert "mean  +0.010 (standard error 0.030)  +0.010 (standard error 0.000)" in out
    assert "   0  +0.100  +0.010" in out
    assert _run_main(monkeypatch, ["--seeds", "0-3", "--reuse", "--out", str(tmp_path / "blur"), "--paired", str(tmp_path / "none")]) != 0


def _probe_run(f1: float, probe: float, unseen: float | None) -> dict:
    """A metrics.json of `images train --probe-column well` (round 3's runs) reduced to what the benchmark reads; `unseen` None: no
    class spans two wells among the crops not trained on (the probe's figures are null there)."""
    missing = {"within_class_balanced_accuracy": None, "within_class_chance": None, "within_class_images": 0, "within_class_classes": []}
    embedding = {**_probe(0.2), "ungrouped": _probe(probe), "trained_images": _probe(probe), "unseen_images": _probe(unseen)}
    if unseen is None:
        embedding["unseen_images"] = {**_probe(0.0), **missing}
    return {"macro_f1": f1, "probe": {"column": "well", "embedding": embedding}}


def test_style_mixing_joins_each_seed_with_its_baseline_and_judges_the_unseen_crops_too(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench.subprocess, "run", _no_training)
    out = tmp_path / "mixing"
    # all crops: 0.40, 0.42 (mean chance + 0.077, met); unseen: 0.50 on seed 0, undefined on seed 1 (mean over the one seed: + 0.167)
    for seed, (probe, unseen) in enumerate([(0.40, 0.50), (0.42, None)]):
        options = [*bench.STYLE, "--seed", str(seed), "--out", str(out / f"seed-{seed}"), "--overwrite"]
        _finished(out / f"seed-{seed}", options, _probe_run(0.97, probe, unseen))
        base = out / "baseline" / f"seed-{seed}"
        _finished(base, [*bench.PROBED, "--seed", str(seed), "--out", str(base), "--overwrite"], _probe_run(0.98, 0.45, 0.55 if unseen else None))
        # round 2's run of the same seed: its network before erasure is this baseline (seed 1's differs in its macro-F1)
        erased = {
            "macro_f1": 0.9,
            "erasure": {"with_erasure": {}, "without_erasure": _probe_run(0.98, 0.45, 0.55 if unseen else None)["probe"]["embedding"]},
        }
        erased["erasure"]["macro_f1_without_erasure"] = 0.98 if seed == 0 else 0.97
        (tmp_path / "round2" / f"seed-{seed}").mkdir(parents=True)
        (tmp_path / "round2" / f"seed-{seed}" / "metrics.json").write_text(json.dumps(erased))
    argv = ["--style-mixing", "--seeds", "0-1", "--reuse", "--out", str(out), "--check", "--path-check", str(tmp_path / "round2")]
    assert _run_main(monkeypatch, argv) == 1  # (a) met, (b) missed
    text = capsys.readouterr().out
    assert "within class 0.410 with / 0.450 without style mixing" in text
    assert "macro-F1 drop from style mixing (2 seeds): +0.0100" in text
    assert "on the crops not trained on (validation and held-out fields) with style mixing, minus their chance (1 seeds): +0.1667" in text
    assert "round 3: the image target is not claimed" in text
    assert "   0     -0.0500     -0.0500     -0.0500     -0.0100" in text and "   1     -0.0300     -0.0300         n/a     -0.0100" in text
    assert "   0  identical" in text and "   1  DIFFERENT" in text
    # the runs read were those of STYLE and PROBED: the same training, the second without --style-mixing
    assert bench.STYLE[: len(bench.PROBED)] == bench.PROBED and bench.STYLE[len(bench.PROBED) :] == ["--style-mixing", "0.5"]
    assert "--adversary-column" not in bench.STYLE and "--erase-column" not in bench.STYLE and "--probe-column" in bench.PROBED
    assert bench.comparison(_probe_run(0.9, 0.4, 0.5))["without"] is None  # a lone probe run: nothing to compare with
    # checked against plain --probe-column runs (here the baselines themselves), each is the network without a method
    argv[-1] = str(out / "baseline")
    _run_main(monkeypatch, argv)
    assert "   0  identical" in capsys.readouterr().out


def test_style_mixing_refuses_the_adversary_options(monkeypatch, capsys):
    assert _run_main(monkeypatch, ["--style-mixing", "--weight", "5"]) == 2
    assert "--style-mixing trains without one" in capsys.readouterr().err
    assert _run_main(monkeypatch, ["--style-mixing", "--erasure"]) == 2
