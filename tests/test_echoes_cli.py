"""The echoes commands: options derived from the settings (no drift), one-line errors, run folders, no data loss."""

import dataclasses
import json

import numpy as np
import pytest
import typer

from phenolens.cli.main import run
from phenolens.cli.options import cli_fields, settings_options
from phenolens.core.runs import RUN_RECORD, load_run
from phenolens.core.settings import Settings, option_name
from phenolens.echoes.settings import EchoDetectionSettings, EchoEvaluationSettings, EchoSimulationSettings, EchoTrainingSettings


def drift(command) -> list[str]:
    """Every way the options of a click command differ from the settings classes it takes: missing options, other defaults."""
    problems = []
    options = {name: param for param in command.params for name in param.opts}
    for settings_type in getattr(command.callback, "settings_parameters", {}).values():
        values = {}
        for field in cli_fields(settings_type):
            option = options.get(option_name(field))
            if option is None:
                problems.append(f"{command.name}: no option {option_name(field)} for {settings_type.__name__}.{field.name}")
                continue
            is_list = isinstance(field.default, tuple)
            values[field.name] = field.default if is_list and option.default == "" else option.default
        try:
            built = settings_type(**values)
        except Exception as error:  # noqa: BLE001 - a default the settings refuse is drift too
            problems.append(f"{command.name}: the option defaults do not build {settings_type.__name__} ({error})")
            continue
        for field in dataclasses.fields(settings_type):
            if getattr(built, field.name) != field.default:
                problems.append(f"{command.name}: {option_name(field)} defaults to {getattr(built, field.name)!r}, the settings to {field.default!r}")
    return problems


def click_commands(app: typer.Typer) -> dict:
    return typer.main.get_command(app).commands


EXPECTED = {"simulate": EchoSimulationSettings, "train": EchoTrainingSettings, "detect": EchoDetectionSettings, "evaluate": EchoEvaluationSettings}


def test_every_echoes_option_comes_from_its_settings_and_defaults_agree():
    from phenolens.cli.echoes import app

    commands = click_commands(app)
    for name, settings_type in EXPECTED.items():
        assert list(commands[name].callback.settings_parameters.values()) == [settings_type]
        assert drift(commands[name]) == []


def test_the_drift_check_fails_on_a_hand_written_option_that_drifts():
    app = typer.Typer()

    @app.command()
    @settings_options()
    def simulate(settings: EchoSimulationSettings = None) -> None:
        """Derived options."""

    @app.command()
    def train(epochs: int = typer.Option(10, "--epochs"), batch_size: int = typer.Option(150, "--batch-size")) -> None:
        """Hand-written options that copy EchoTrainingSettings (one default drifted, the rest missing)."""

    train_command = click_commands(app)["train"]
    train_command.callback.settings_parameters = {"settings": EchoTrainingSettings}
    problems = drift(train_command)
    assert any("--epochs defaults to 10, the settings to 80" in p for p in problems)
    assert any("no option --lr" in p for p in problems)
    assert drift(click_commands(app)["simulate"]) == []


def test_settings_names_are_unique_and_end_in_settings():
    for settings_type in EXPECTED.values():
        assert issubclass(settings_type, Settings) and settings_type.__name__.startswith("Echo") and settings_type.__name__.endswith("Settings")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["simulate", "--snr", "nan"], "EchoSimulationSettings.snr_db (--snr) = 'nan': must be a finite number"),
        (["simulate", "--fs", "0"], "(--fs) = 0.0: must be > 0"),
        (["simulate", "--mean-gap", "-1"], "(--mean-gap) = -1.0: must be > 0"),
        (["simulate", "--sigma0", "0"], "(--sigma0) = 0.0: must be > 0"),
        (["train", "--epochs", "0"], "(--epochs) = 0: must be >= 1"),
        (["train", "--batch-size", "0"], "(--batch-size) = 0: must be >= 1"),
        (["train", "--lr", "nan"], "(--lr) = 'nan': must be a finite number"),
        (["detect", "--fs", "0", "--methods", "omp"], "(--fs) = 0.0: must be > 0"),
        (["detect", "--methods", "omp,lasso"], "choose one of uscnn, omp, ista, smp"),
        (["evaluate", "--model", "m", "--default-lambda", "2.5"], "must be one of --lambdas"),
    ],
)
def test_bad_options_are_one_line_exit_2_and_nothing_written(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert run(["echoes", *argv, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_detect_never_deletes_its_input_scan(tmp_path, capsys):
    folder = tmp_path / "dz"
    folder.mkdir()
    scan = folder / "my_scan.txt"
    scan.write_text("\n".join(f"{v:.6f}" for v in np.sin(np.arange(600) / 3.0) * np.exp(-(((np.arange(600) - 300) / 20.0) ** 2))))
    before = scan.read_bytes()
    assert run(["echoes", "detect", str(scan), "--methods", "omp", "--out", str(folder)]) == 2
    assert "--out" in capsys.readouterr().err
    assert scan.read_bytes() == before
    # even with --overwrite: the folder holds an input and no phenolens run
    assert run(["echoes", "detect", str(scan), "--methods", "omp", "--out", str(folder), "--overwrite"]) == 2
    assert scan.read_bytes() == before


@pytest.mark.parametrize(
    ("name", "write", "message"),
    [
        ("two_columns.txt", lambda p: p.write_text("0.1 0.2\n" * 200), "2 columns, not one signal"),
        ("complex.npy", lambda p: np.save(p, np.ones(200, dtype=complex)), "complex numbers"),
        ("text.npy", lambda p: np.save(p, np.array(["0.5"] * 200)), "<U3 values"),
        ("matrix.npy", lambda p: np.save(p, np.ones((3, 200))), "3 x 200 values"),
    ],
)
def test_signal_files_that_are_not_one_real_signal_are_refused(tmp_path, capsys, name, write, message):
    path = tmp_path / name
    write(path)
    assert run(["echoes", "detect", str(path), "--methods", "ista", "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert message in error and name in error and error.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_one_column_file_is_one_signal(tmp_path):
    path = tmp_path / "column.npy"
    np.save(path, np.sin(np.arange(300) / 3.0)[:, None])
    assert run(["echoes", "detect", str(path), "--methods", "ista", "--out", str(tmp_path / "out")]) == 0


def test_simulate_writes_a_run_folder_and_refuses_to_overwrite_without_the_flag(tmp_path, capsys):
    out = tmp_path / "sim"
    assert run(["echoes", "simulate", "--out", str(out), "--n-signals", "12", "--seed", "4", "--snr", "15"]) == 0
    finished = load_run(out)
    assert finished.command == "echoes simulate" and finished.setting(EchoSimulationSettings) == EchoSimulationSettings(
        n_signals=12, seed=4, snr_db=15.0
    )
    assert finished.record["seed"] == 4 and finished.metrics["settings"]["n_signals"] == 12
    stamp = (out / RUN_RECORD).read_text()
    assert run(["echoes", "simulate", "--out", str(out), "--n-signals", "5"]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / RUN_RECORD).read_text() == stamp
    assert run(["echoes", "simulate", "--out", str(out), "--n-signals", "5", "--overwrite"]) == 0
    assert json.loads((out / "metrics.json").read_text())["settings"]["n_signals"] == 5


def test_detect_records_its_input_files_with_their_hashes(tmp_path):
    import hashlib

    path = tmp_path / "scan.npy"
    np.save(path, np.sin(np.arange(400) / 3.0))
    assert run(["echoes", "detect", str(path), "--methods", "ista,omp", "--out", str(tmp_path / "det")]) == 0
    finished = load_run(tmp_path / "det")
    assert finished.setting(EchoDetectionSettings).methods == ("ista", "omp")
    assert finished.record["inputs"][0]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert set(finished.table("detections.csv")["method"]) <= {"ista", "omp"}


def test_the_echoes_benchmark_does_not_import_the_cli():
    from pathlib import Path

    from test_core_layering import imported_packages

    source = (Path(__file__).resolve().parents[1] / "benchmarks" / "echoes_benchmark.py").read_text()
    assert "cli" not in {package for _, package in imported_packages(source)}
    assert "cli" in {package for _, package in imported_packages(source + "\nfrom phenolens.cli.echoes import app\n")}  # the check sees it


def test_train_writes_a_loadable_model_run_that_detect_reads_but_never_overwrites(tmp_path, capsys):
    from phenolens.echoes.pipeline import load_uscnn

    model = tmp_path / "model"
    argv = ["echoes", "train", "--out", str(model), "--n-signals", "40", "--epochs", "1", "--batch-size", "16", "--pulse-from", "paper"]
    assert run(argv) == 0
    finished = load_run(model)
    assert finished.setting(EchoTrainingSettings) == EchoTrainingSettings(n_signals=40, epochs=1, batch_size=16, pulse_from="paper")
    assert finished.metrics["epochs_run"] == 1 and finished.metrics["n_train"] + finished.metrics["n_val"] == 40
    assert load_uscnn(model).training == finished.setting(EchoTrainingSettings)
    scan = tmp_path / "scan.npy"
    np.save(scan, np.sin(np.arange(500) / 3.0))
    assert run(["echoes", "detect", str(scan), "--model", str(model), "--methods", "uscnn", "--out", str(tmp_path / "det")]) == 0
    assert [entry["path"] for entry in load_run(tmp_path / "det").record["inputs"]] == [str(scan.resolve()), str(model.resolve())]
    weights = (model / "model.safetensors").read_bytes()
    assert run(["echoes", "detect", str(scan), "--model", str(model), "--methods", "uscnn", "--out", str(model), "--overwrite"]) == 2
    assert "--out" in capsys.readouterr().err and (model / "model.safetensors").read_bytes() == weights


@pytest.mark.parametrize("method", ["omp", "ista", "smp"])
def test_detect_finds_the_same_echo_times_in_an_a_scan_recorded_at_twice_the_rate(tmp_path, method):
    """--fs says at which rate the files were recorded: the same physical A-scan sampled at 200 MHz (and said to be)
    has its echoes at the same microseconds as at 100 MHz. The baselines once took a pulse 9 SAMPLES wide at the
    files' rate, half as long in time at 200 MHz, so they found other echoes (OMP: three instead of two)."""
    import pandas as pd
    from scipy.signal import resample_poly

    from phenolens.echoes.simulate import simulate

    scan = simulate(EchoSimulationSettings(n_signals=2, seed=1)).signals[0]
    np.save(tmp_path / "at100.npy", scan)
    np.save(tmp_path / "at200.npy", resample_poly(scan, 2, 1))
    tables = {}
    for rate in (100, 200):
        out = tmp_path / f"det{rate}"
        assert run(["echoes", "detect", str(tmp_path / f"at{rate}.npy"), "--fs", str(rate), "--methods", method, "--out", str(out)]) == 0
        tables[rate] = pd.read_csv(out / "detections.csv").sort_values("time_us")
    assert len(tables[200]) == len(tables[100]) > 0
    np.testing.assert_allclose(tables[200]["time_us"], tables[100]["time_us"], atol=0.021)  # within two samples at 100 MHz
    np.testing.assert_allclose(tables[200]["amplitude"], tables[100]["amplitude"], rtol=0.05)
