"""US-CNN module and training, EchoDetector, bad input, the CLI and the metrics.json schema."""

import json

import numpy as np
import pytest

from phenolens.cli.main import run
from phenolens.core.errors import PhenolensError
from phenolens.core.outputs import to_jsonable
from phenolens.echoes.detector import EchoDetector
from phenolens.echoes.pipeline import evaluate, load_uscnn, save_uscnn
from phenolens.echoes.settings import EchoEvaluationSettings, EchoSimulationSettings, EchoTrainingSettings
from phenolens.echoes.simulate import simulate


@pytest.fixture(scope="module")
def tiny_uscnn(tmp_path_factory):
    """A US-CNN trained for 2 epochs on 60 signals, saved and reloaded."""
    data = simulate(EchoSimulationSettings(n_signals=60, seed=5))
    detector = EchoDetector("uscnn", training=EchoTrainingSettings(epochs=2, batch_size=20)).fit(data.signals, data.heatmaps)
    folder = save_uscnn(detector, tmp_path_factory.mktemp("uscnn"))
    return detector, folder


def test_uscnn_keeps_the_signal_length_and_spans_six_sigma():
    import torch

    from phenolens.nn.uscnn import USCNN, wide_kernel_size

    assert wide_kernel_size(9.0) == 55
    model = USCNN(kernel_size=55)
    assert model(torch.zeros(3, 500)).shape == (3, 500)
    assert model(torch.zeros(2, 1, 437)).shape == (2, 437)
    # 1-D convolutions run as height-1 2-D convolutions
    assert model.body[0].out_channels == 30 and model.body[0].kernel_size == (1, 55) and model.body[0].padding == (0, 27)
    dilated = [m for m in model.body if isinstance(m, torch.nn.Conv2d) and m.dilation == (1, 2)]
    assert len(dilated) == 3 and all(m.kernel_size == (1, 5) and m.out_channels == 30 for m in dilated)
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.2 for m in model.body)


def test_training_runs_the_shared_loop_and_weights_round_trip(tiny_uscnn):
    detector, folder = tiny_uscnn
    history = detector.history_
    assert len(history.epochs) == 2 and history.best_epoch is not None
    assert all(np.isfinite(r["val_loss"]) and r["lr"] == 0.01 for r in history.epochs)
    loaded = load_uscnn(folder)
    signals = simulate(EchoSimulationSettings(n_signals=4, seed=6)).signals
    np.testing.assert_allclose(loaded.activation(signals), detector.activation(signals), atol=1e-6)
    assert loaded.pulse == detector.pulse


@pytest.mark.parametrize("method", ["uscnn", "omp"])
def test_bad_signals_raise_phenolens_error(tiny_uscnn, method):
    detector = tiny_uscnn[0] if method == "uscnn" else EchoDetector(method, distribution="none").fit()
    with pytest.raises(PhenolensError, match="NaN"):
        detector.predict(np.array([0.0, 1.0, np.nan] + [0.0] * 100), source="scan.txt")
    with pytest.raises(PhenolensError, match="shorter than the first-layer kernel"):
        detector.predict(np.zeros(40))
    with pytest.raises(PhenolensError, match="no samples"):
        detector.predict(np.zeros((1, 0)))
    with pytest.raises(PhenolensError, match="not fitted"):
        EchoDetector(method).predict(np.zeros(100))


def test_cli_detect_rejects_bad_files_with_one_line(tmp_path, tiny_uscnn, capsys):
    nan_file, empty_file, short_file = tmp_path / "nan.txt", tmp_path / "empty.txt", tmp_path / "short.txt"
    nan_file.write_text("0.1\nnan\n0.2\n" * 40)
    empty_file.write_text("")
    short_file.write_text("0.1\n" * 30)
    for path, message in [(nan_file, "NaN"), (empty_file, "empty"), (short_file, "shorter than the first-layer kernel")]:
        status = run(["echoes", "detect", str(path), "--model", str(tiny_uscnn[1]), "--out", str(tmp_path / "out")])
        error = capsys.readouterr().err
        assert status == 2 and message in error and path.name in error
    assert run(["echoes", "detect", "--methods", "uscnn", "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_cli_simulate_and_detect_write_their_outputs(tmp_path, tiny_uscnn):
    assert run(["echoes", "simulate", "--out", str(tmp_path / "sim"), "--n-signals", "20", "--seed", "3"]) == 0
    metrics = json.loads((tmp_path / "sim" / "metrics.json").read_text())
    assert metrics["settings"]["n_signals"] == 20 and abs(metrics["realised_snr_db"]["mean"] - 20) < 1.0
    assert (tmp_path / "sim" / "signals.npz").is_file() and (tmp_path / "sim" / "report.html").is_file()
    signal = tmp_path / "scan.npy"
    np.save(signal, simulate(EchoSimulationSettings(n_signals=1, seed=8)).signals[0].astype(np.float64))
    assert run(["echoes", "detect", str(signal), "--model", str(tiny_uscnn[1]), "--methods", "uscnn,ista", "--out", str(tmp_path / "det")]) == 0
    detected = json.loads((tmp_path / "det" / "metrics.json").read_text())
    assert set(detected["signals"]["scan"]) == {"uscnn", "ista"}
    assert (tmp_path / "det" / "detections.csv").read_text().startswith("signal,method,rank,position_samples")


def test_evaluation_metrics_follow_the_schema(tiny_uscnn):
    from phenolens.data.loaders import load

    settings = EchoEvaluationSettings(
        n_test=8,
        lambdas=(1.0, 3.0),
        epsilons=(0.1,),
        snrs=(20.0,),
        n_timing=4,
        scan_shape=(2, 8),
        test_distribution="none",
        seed=11,
        select_variants=False,
    )
    reference = [s for s in load("echo-pulses").signals if s.name == "reference_signal_ultem_water"]
    result = evaluate(tiny_uscnn[0], settings, real_signals=reference)
    metrics = result.metrics()
    assert set(metrics["methods"]) == {"uscnn", "omp", "ista", "smp"}
    for values in metrics["methods"].values():
        assert set(values) == {"auc", "f1", "seconds_per_signal"}
        assert set(values["auc"]) == set(values["f1"]) == {"1", "3"}
        assert all(0.0 <= v <= 1.0 for v in [*values["auc"].values(), *values["f1"].values()])
        assert values["seconds_per_signal"] > 0
    assert isinstance(metrics["real"]["reference_signal_ultem_water"], int)
    assert set(metrics["thickness"]["errors"]) == {"uscnn", "omp", "ista", "smp"}
    json.dumps(to_jsonable(metrics))  # what write_json writes


def test_training_pulse_is_fitted_to_the_real_reference_a_scan():
    from phenolens.echoes.pipeline import training_pulse

    measured = training_pulse("reference", None, None, 100.0)
    # the echo-pulses reference (5 MHz transducer, 100 MHz sampling) is wider than the paper's 9 samples
    assert 12.0 < measured.sigma < 13.5 and 4.8 < measured.freq_mhz < 5.2 and measured.fs_mhz == 100.0
    detector_rate = training_pulse("reference", None, None, None)  # the same pulse where it spans 9 samples
    assert detector_rate.sigma == pytest.approx(9.0) and detector_rate.freq_mhz == measured.freq_mhz
    assert detector_rate.sigma / detector_rate.fs_mhz == pytest.approx(measured.sigma / measured.fs_mhz)
    paper = training_pulse("paper", None, 5.0, 50.0)
    assert (paper.sigma, paper.freq_mhz, paper.fs_mhz) == (9.0, 5.0, 50.0)
    with pytest.raises(PhenolensError, match="--pulse-from"):
        training_pulse("gaussian", None, None, 100.0)


def test_real_a_scans_at_another_rate_are_resampled_and_positions_come_back_in_their_samples():
    from phenolens.data.containers import Signal
    from phenolens.echoes.real import detect_real, resample

    clean = simulate(EchoSimulationSettings(n_signals=1, seed=11, snr_db=60.0))
    ista = EchoDetector("ista").fit()
    at_100 = detect_real({"ista": ista}, [Signal("scan", clean.signals[0])], fs_mhz=100.0)[0]
    at_200 = detect_real({"ista": ista}, [Signal("scan", resample(clean.signals[0], 100.0, 200.0))], fs_mhz=200.0)[0]
    assert len(at_200.positions) == len(at_100.positions) > 0
    np.testing.assert_allclose(at_200.positions, 2 * at_100.positions, atol=2.0)
    assert at_200.fs_mhz == 200.0 and at_200.tofd_us == pytest.approx(at_100.tofd_us, abs=0.02)
