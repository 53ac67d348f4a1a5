"""Settings objects (validation, round trip, CLI derivation) and run folders (safety, provenance, load_run)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from phenolens.cli.options import settings_options
from phenolens.core.errors import PhenolensError
from phenolens.core.runs import RUN_RECORD, RunWriter, check_output_location, is_partial, load_run, remove_stale_partials
from phenolens.core.settings import Settings, setting


@dataclass(frozen=True)
class ExampleSettings(Settings):
    epochs: int = setting(30, "Epochs.", minimum=1)
    lr: float = setting(2e-3, "Learning rate.", minimum=0, exclusive_minimum=True)
    arch: str = setting("resnet18", "Backbone.", choices=("resnet18", "vgg"))
    blocks: tuple[int, ...] | None = setting(None, "Blocks per stage.", minimum=1)
    augment: bool = setting(True, "Augment.")
    size: int | None = setting(None, "Crop size.", minimum=1)
    seed: int = setting(0, "Seed.")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epochs": 0}, "ExampleSettings.epochs (--epochs) = 0: must be >= 1"),
        ({"lr": float("nan")}, "finite"),
        ({"lr": 0}, "must be > 0"),
        ({"arch": "alexnet"}, "choose one of resnet18, vgg"),
        ({"blocks": "1,x"}, "whole number"),
        ({"blocks": (2, 0)}, ">= 1"),
        ({"augment": "yes"}, "true or false"),
        ({"epochs": 2.5}, "whole number"),
    ],
)
def test_bad_values_raise_one_line_naming_field_and_option(changes, message):
    with pytest.raises(PhenolensError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        ExampleSettings(**changes)
    assert "\n" not in str(caught.value)


def test_values_are_coerced_and_round_trip():
    settings = ExampleSettings(epochs="12", lr="0.01", blocks="2,2,1", size=64)
    assert (settings.epochs, settings.lr, settings.blocks) == (12, 0.01, (2, 2, 1))
    assert ExampleSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    assert settings.replace(epochs=3).epochs == 3
    with pytest.raises(PhenolensError, match="no setting colour"):
        ExampleSettings.from_dict({"colour": 1})


def test_settings_are_frozen_and_names_unique():
    with pytest.raises(AttributeError):
        ExampleSettings().epochs = 3  # type: ignore[misc]
    with pytest.raises(TypeError, match="end in 'Settings'"):

        @dataclass(frozen=True)
        class ExampleConfig(Settings):
            x: int = setting(1, "x")


def _app():
    app = typer.Typer()

    @app.command()
    @settings_options()
    def train(out: str = typer.Option(..., "--out"), settings: ExampleSettings = None) -> None:
        print(repr(settings))

    @app.command()
    def other() -> None:
        """A second command keeps typer in group mode."""

    return app


def test_cli_options_come_from_the_settings_fields():
    runner = CliRunner()
    default = runner.invoke(_app(), ["train", "--out", "x"])
    assert default.exit_code == 0 and repr(ExampleSettings()) in default.output
    custom = runner.invoke(_app(), ["train", "--out", "x", "--epochs", "3", "--blocks", "1,2", "--no-augment", "--arch", "vgg", "--size", "8"])
    assert repr(ExampleSettings(epochs=3, blocks=(1, 2), augment=False, arch="vgg", size=8)) in custom.output
    bad = runner.invoke(_app(), ["train", "--out", "x", "--lr", "nan"])
    assert isinstance(bad.exception, PhenolensError) and "--lr" in str(bad.exception)


def _finished_run(path, settings=None, inputs=()):
    with RunWriter(path, command="test", settings=settings or ExampleSettings(seed=7), inputs=inputs) as run:
        run.write_metrics({"f1": 0.5})
    return path


def test_run_folder_round_trip(tmp_path):
    data = tmp_path / "input.csv"
    data.write_text("a,b\n1,2\n")
    out = _finished_run(tmp_path / "run", ExampleSettings(epochs=4, seed=7), [data])
    run = load_run(out)
    assert run.command == "test" and run.metrics == {"f1": 0.5}
    assert run.setting(ExampleSettings) == ExampleSettings(epochs=4, seed=7)
    record = run.record
    assert record["seed"] == 7 and record["host"]["cpus"] == os.cpu_count()
    assert record["inputs"][0]["sha256"] == hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert record["started"] <= record["finished"]


def test_existing_folders_are_refused_or_only_phenolens_runs_replaced(tmp_path):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(PhenolensError, match="not empty"):
        RunWriter(foreign, command="test")
    with pytest.raises(PhenolensError, match="not written by phenolens"):
        RunWriter(foreign, command="test", overwrite=True)
    assert (foreign / "holiday.jpg").read_bytes() == b"x"
    run = _finished_run(tmp_path / "run")
    with pytest.raises(PhenolensError, match="--overwrite"):
        RunWriter(run, command="test")
    _finished_run_overwrite = RunWriter(run, command="again", overwrite=True)
    with _finished_run_overwrite:
        pass
    assert load_run(run).command == "again"


@pytest.mark.parametrize("name", ["", ".", "..", "x" * 250])
def test_unusable_output_names_fail_before_work(tmp_path, name):
    with pytest.raises(PhenolensError, match="--out"):
        check_output_location(str(tmp_path / name) if name.startswith("x") else name)


def test_output_that_contains_an_input_is_refused(tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "a.txt").write_text("1\n")
    for out in (scans, tmp_path):
        with pytest.raises(PhenolensError, match="contains the input"):
            RunWriter(out, command="test", inputs=[scans / "a.txt"], overwrite=True)
    assert (scans / "a.txt").exists()


def test_output_under_a_file_or_unwritable_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PhenolensError, match="is a file"):
        check_output_location(blocker / "sub")
    with pytest.raises(PhenolensError, match="is a file"):
        check_output_location(blocker)


def test_a_failed_or_killed_run_leaves_nothing_finished_looking(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError), RunWriter(out, command="test") as run:
        run.write_metrics({"f1": 1.0})
        raise RuntimeError("crash")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    # A staging folder whose process is gone (as after SIGKILL) is refused by load_run and removed by the next run.
    stale = tmp_path / ".run.partial-999999999-abc"
    stale.mkdir()
    (stale / RUN_RECORD).write_text("{}")
    assert is_partial(stale)
    with pytest.raises(PhenolensError, match="interrupted run"):
        load_run(stale)
    assert remove_stale_partials(out) == [stale] and not stale.exists()


def test_load_run_refuses_folders_without_a_complete_record(tmp_path):
    with pytest.raises(PhenolensError, match="not a finished phenolens run"):
        load_run(tmp_path)
    (tmp_path / RUN_RECORD).write_text('{"command": "x"}')
    with pytest.raises(PhenolensError, match="incomplete run record"):
        load_run(tmp_path)
    (tmp_path / RUN_RECORD).write_text('{"command": "x", "finished": "now", "settings": [{"class": "os.system", "values": {}}]}')
    with pytest.raises(PhenolensError, match="not phenolens"):
        load_run(tmp_path)


def test_inputs_up_to_the_limit_get_a_full_sha256_and_larger_ones_a_sampled_fingerprint_that_says_so(tmp_path, monkeypatch):
    """A whole screen of hundreds of GB was re-read byte by byte after the work; above the limit run.json records size,
    modification time and the sha256 of evenly spread blocks, and names the kind of each fingerprint."""
    import phenolens.core.runs as runs

    block = 1 << 20
    monkeypatch.setattr(runs, "FULL_HASH_LIMIT", 3 * block)
    small, large = tmp_path / "small.bin", tmp_path / "large.bin"
    small.write_bytes(b"x" * (3 * block))
    payload = bytearray(np.random.default_rng(0).integers(0, 256, 200 * block, dtype=np.uint8).tobytes())
    large.write_bytes(payload)
    full = runs.describe_input(small)
    assert full["fingerprint"] == "sha256" and full["sha256"] == hashlib.sha256(small.read_bytes()).hexdigest()
    sampled = runs.describe_input(large)
    assert sampled["fingerprint"] == "sampled" and "sha256" not in sampled
    status = large.stat()
    assert sampled["bytes"] == status.st_size and sampled["modified_ns"] == status.st_mtime_ns
    # known answer: the size, then 64 blocks of 1 MiB from the first to the last, evenly spread
    offsets = [round(k * (len(payload) - block) / 63) for k in range(64)]
    expected = hashlib.sha256(str(len(payload)).encode())
    for offset in offsets:
        expected.update(payload[offset : offset + block])
    assert sampled["sampled_sha256"] == expected.hexdigest() and sampled["sampled_bytes"] == 64 * block
    assert "64 blocks" in sampled["sample"]
    payload[offsets[5] + 7] ^= 1  # a byte inside a sampled block changes the fingerprint
    large.write_bytes(payload)
    assert runs.describe_input(large)["sampled_sha256"] != sampled["sampled_sha256"]


def test_a_large_folder_gets_every_files_name_size_and_time_and_a_sample_of_their_content(tmp_path, monkeypatch):
    import phenolens.core.runs as runs

    monkeypatch.setattr(runs, "FULL_HASH_LIMIT", 1000)
    store = tmp_path / "screen.zarr"
    for index in range(300):
        (store / f"c{index // 100}").mkdir(parents=True, exist_ok=True)
        (store / f"c{index // 100}" / f"{index:03d}").write_bytes(bytes([index % 256]) * 10)
    record = runs.describe_input(store)
    assert record["fingerprint"] == "sampled" and record["files"] == 300 and record["bytes"] == 3000 and "sha256" not in record
    assert record["sampled_files"] == 64 and "64 of 300 files" in record["sample"]
    unsampled = store / "c0" / "001"  # every file's size and time are in the fingerprint, sampled or not
    os.utime(unsampled, ns=(unsampled.stat().st_atime_ns, unsampled.stat().st_mtime_ns + 10**9))
    again = runs.describe_input(store)
    assert again["metadata_sha256"] != record["metadata_sha256"] and again["sampled_sha256"] == record["sampled_sha256"]
    first = store / "c0" / "000"  # the first file is always sampled: same size and time, other content
    status = first.stat()
    first.write_bytes(b"\xff" * 10)
    os.utime(first, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert runs.describe_input(store)["sampled_sha256"] != again["sampled_sha256"]
    monkeypatch.setattr(runs, "FULL_HASH_LIMIT", 10**6)
    assert runs.describe_input(store)["fingerprint"] == "sha256"
