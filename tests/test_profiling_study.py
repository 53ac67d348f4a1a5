"""Issue 20: `profile run` streamed file by file equals the in-memory run; Dask, resume, the JUMP-pilot shape, bad input."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from phenolens.cli.main import run
from phenolens.core.executor import Executor
from phenolens.core.runs import OWNER, RunWriter
from phenolens.profiling import study
from phenolens.profiling.evaluate import treatment_level, wide_table
from phenolens.profiling.pipeline import run_profiling
from phenolens.profiling.plates import study_shards
from phenolens.profiling.settings import ProfilingSettings
from phenolens.profiling.synthetic import synthetic_screen, synthetic_study

SETTINGS = ProfilingSettings(
    controls="Metadata_PertType == 'control'",
    treatment="Metadata_Treatment",
    moa="Metadata_MoA",
    batch="Metadata_Batch",
    compound="Metadata_Compound",
    max_epochs=20,
    moa_repeats=1,
    classifiers=("lr",),
    jobs=1,
    explain_features=1,
    explain_nsamples=40,
)
PILOT = ["--controls", "Metadata_pert_type == 'negcon'", "--treatment-column", "Metadata_broad_sample", "--plate-column", "Metadata_Plate"]
FAST = ["--max-epochs", "3", "--moa-repeats", "1", "--classifiers", "lr", "--jobs", "1", "--no-curve", "--explain-features", "0"]


@pytest.fixture(scope="module")
def screen(tmp_path_factory):
    """A six-plate screen, in memory and as one parquet file per plate."""
    table = synthetic_screen(plates=6, controls_per_plate=8, features=20, seed=1)
    folder = tmp_path_factory.mktemp("plates")
    paths = []
    for plate, wells in table.groupby("Metadata_Plate", sort=False):
        paths.append(folder / f"{plate}.parquet")
        wells.to_parquet(paths[-1])
    return table, paths


def _stream(paths, settings, out, scheduler="serial", resume=False):
    with Executor.from_option(scheduler) as executor, RunWriter(out, command="profile run", settings=settings, inputs=paths, resume=resume) as folder:
        result = study.profile_study(study_shards(paths, []), settings, "screen", folder, executor)
    return result, pd.read_parquet(out / "profiles.parquet")


def _assert_same_metrics(expected: dict, got: dict) -> None:
    representations = [name for name, value in expected.items() if isinstance(value, dict) and "percent_replicating" in value]
    assert {"cellprofiler", "anomaly", "concatenation"} <= set(representations)
    assert [name for name, value in got.items() if isinstance(value, dict) and "percent_replicating" in value] == representations
    for representation in representations:
        for key, value in expected[representation].items():
            expected_value = value if value is None else pytest.approx(value, rel=1e-6, abs=1e-9, nan_ok=True)
            assert got[representation][key] == expected_value, (representation, key)
    for key in ("data", "reproducible_treatments", "explained_group", "autoencoder"):
        assert json.dumps(got[key], sort_keys=True) == json.dumps(expected[key], sort_keys=True), key


@pytest.mark.parametrize("map_negatives, consensus", [("all_wells", "mean"), ("plate_controls", "mean"), ("plate_controls", "modz")])
def test_streamed_run_equals_the_in_memory_run(screen, tmp_path, monkeypatch, map_negatives, consensus):
    """Also the treatment profiles the MoA evaluation reads: means from per-file sums, MODZ from the rows read back from disk."""
    table, paths = screen
    settings = SETTINGS.replace(map_negatives=map_negatives, consensus=consensus)
    expected = run_profiling(table, settings, "screen")
    streamed_profiles = []
    finish = study.finish_evaluation
    monkeypatch.setattr(
        study, "finish_evaluation", lambda scored, profiles, *rest: streamed_profiles.append(profiles) or finish(scored, profiles, *rest)
    )
    monkeypatch.setattr(study, "CONSENSUS_BLOCK_BYTES", 4000)  # several blocks of treatments
    result, profiles = _stream(paths, settings, tmp_path / "run")
    treated = ~table["Metadata_PertType"].eq("control").to_numpy()
    want_profiles, _ = treatment_level(expected.representations, settings, treated, consensus)
    assert list(streamed_profiles[0]) == list(want_profiles) and "concatenation" in want_profiles
    for name, frame in want_profiles.items():
        assert list(streamed_profiles[0][name].index) == list(frame.index)
        np.testing.assert_allclose(streamed_profiles[0][name].to_numpy(), frame.to_numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
    assert result.metrics["consensus"] == expected.metrics["consensus"] == consensus
    _assert_same_metrics(expected.metrics, result.metrics)
    curve = pd.DataFrame(result.metrics["control_curve"])
    assert np.allclose(curve.select_dtypes("number"), expected.curve.select_dtypes("number"), rtol=1e-6)
    want = wide_table({name: expected.representations[name] for name in ("cellprofiler", "anomaly")}, settings)
    features = [c for c in want.columns if "__" in c]
    assert profiles.shape == want.shape and list(profiles.columns) == list(want.columns)
    assert np.allclose(profiles[features].to_numpy(np.float64), want[features].to_numpy(), rtol=1e-6, atol=1e-6)
    assert (profiles["Metadata_ControlSplit"] == want["Metadata_ControlSplit"]).all()
    assert [e.feature for e in result.explanations] == [e.feature for e in expected.explanations]
    assert result.plates["wells"].sum() == len(table) and len(result.plates) == 6


@pytest.mark.parametrize(
    "options",
    [
        {"sphering": "global", "sphering_epsilon": 1.0},
        {"sphering": "batch", "sphering_epsilon": 1.0},
        {"sphering": "tvn", "sphering_epsilon": 1.0, "sphering_controls": "all"},
        {
            "sphering": "tvn",
            "sphering_epsilon": 1.0,
            "sphering_controls": "all",
            "sphering_plate_scaling": True,
            "sphering_yeo_johnson": True,
            "batch_icc_max": 0.5,
            "sphering_nuisance_components": 2,
            "sphering_batch_icc_weight": 1.0,
        },
        {"adversary": "plate", "max_epochs": 6},
    ],
    ids=["sphering", "sphering-per-batch", "sphering-tvn", "sphering-tvn-steps", "adversary"],
)
def test_streamed_sphering_and_adversary_equal_the_in_memory_run(screen, tmp_path, options):
    """The streamed run fits sphering and the adversarial autoencoder on the training controls, as the in-memory run does."""
    table, paths = screen
    settings = SETTINGS.replace(curve=False, explain_features=0, map_negatives="plate_controls", **options)
    expected = run_profiling(table, settings, "screen")
    result, profiles = _stream(paths, settings, tmp_path / "run")
    extra = {"adversary": ["anomaly_adversarial"]}.get(next(iter(options)), ["cellprofiler_sphered", "anomaly_sphered", "concatenation_sphered"])
    assert set(extra) <= set(result.metrics)
    _assert_same_metrics(expected.metrics, result.metrics)
    assert json.dumps(result.metrics["batch_correction"], sort_keys=True) == json.dumps(expected.metrics["batch_correction"], sort_keys=True)
    want = wide_table({name: frame for name, frame in expected.representations.items() if not name.startswith("concatenation")}, settings)
    features = [c for c in want.columns if "__" in c]
    assert list(profiles.columns) == list(want.columns)
    assert np.allclose(profiles[features].to_numpy(np.float64), want[features].to_numpy(), rtol=1e-6, atol=1e-6)


def test_a_file_whose_only_plate_is_left_out_streams_like_the_in_memory_run(screen, tmp_path):
    """A plate with one usable control is left out with its wells; as the only plate of its file, that file has no well to
    represent (it stopped the streamed run with a ValueError with --map-negatives plate_controls)."""
    table, _ = screen
    plate = table["Metadata_Plate"].unique()[2]
    controls = table.index[table["Metadata_Plate"].eq(plate) & table["Metadata_PertType"].eq("control")]
    table = table.drop(controls[1:]).reset_index(drop=True)
    paths = []
    for name, wells in table.groupby("Metadata_Plate", sort=False):
        paths.append(tmp_path / f"{name}.parquet")
        wells.to_parquet(paths[-1])
    settings = SETTINGS.replace(curve=False, explain_features=0, max_epochs=5, map_negatives="plate_controls", consensus="modz")
    expected = run_profiling(table, settings, "screen")
    result, profiles = _stream(paths, settings, tmp_path / "run")
    _assert_same_metrics(expected.metrics, result.metrics)
    assert len(profiles) == table["Metadata_Plate"].ne(plate).sum() and result.plates["wells"].tolist()[2] == 0


def test_a_metadata_column_empty_in_the_first_files_takes_the_later_files_text(screen, tmp_path, monkeypatch):
    """profiles.parquet is written in row groups (25,000 wells); a column without a value in the first group (an annotation
    the first plates lack) gave the file a null column, and the next group's text ended the run in an ArrowNotImplementedError."""
    table, _ = screen
    first = table["Metadata_Plate"].unique()[0]
    table = table.assign(Metadata_Note=np.where(table["Metadata_Plate"] == first, None, "re-imaged"))
    paths = []
    for plate, wells in table.groupby("Metadata_Plate", sort=False):
        paths.append(tmp_path / f"{plate}.parquet")
        wells.to_parquet(paths[-1])
    monkeypatch.setattr(study, "ROWS_PER_GROUP", 10)  # a row group per file
    _, profiles = _stream(paths, SETTINGS.replace(curve=False, explain_features=0, max_epochs=3), tmp_path / "run")
    assert profiles["Metadata_Note"].isna().tolist() == (profiles["Metadata_Plate"] == first).tolist()
    assert set(profiles["Metadata_Note"].dropna()) == {"re-imaged"}


def test_two_dask_workers_give_the_serial_results(screen, tmp_path):
    """With the MODZ consensus: the workers save where each treatment's wells are; the process reads them back."""
    _, paths = screen
    settings = SETTINGS.replace(curve=False, explain_features=0, max_epochs=5, map_negatives="plate_controls", consensus="modz")
    serial, serial_profiles = _stream(paths, settings, tmp_path / "serial")
    dask, dask_profiles = _stream(paths, settings, tmp_path / "dask", scheduler="local:2")
    assert dask.metrics["executor"].startswith("Dask LocalCluster of 2")
    _assert_same_metrics(serial.metrics, dask.metrics)
    pd.testing.assert_frame_equal(serial_profiles, dask_profiles)
    pd.testing.assert_frame_equal(serial.evaluation.treatment_profiles, dask.evaluation.treatment_profiles)


def test_a_killed_run_resumes_from_its_last_finished_file(screen, tmp_path, monkeypatch):
    _, paths = screen
    settings = SETTINGS.replace(curve=False, explain_features=0, max_epochs=5)
    expected, expected_profiles = _stream(paths, settings, tmp_path / "fresh")
    original, calls = study.represent_shard, []

    def dies_on_the_fourth_file(task):
        calls.append(task.shard.index)
        if task.shard.index == 3:
            raise SystemExit("killed")
        return original(task)

    monkeypatch.setattr(study, "represent_shard", dies_on_the_fourth_file)
    with pytest.raises(SystemExit):
        _stream(paths, settings, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    (staging,) = tmp_path.glob(".run.partial-*")
    _as_killed(staging)
    calls.clear()
    monkeypatch.setattr(study, "represent_shard", lambda task: calls.append(task.shard.index) or original(task))
    result, profiles = _stream(paths, settings, tmp_path / "run", resume=True)
    assert calls == [3, 4, 5]  # the three finished files were not redone
    _assert_same_metrics(expected.metrics, result.metrics)
    pd.testing.assert_frame_equal(profiles, expected_profiles)


def _as_killed(staging) -> None:
    """Give a staging folder the process id of a process that no longer exists, as a killed run leaves it."""
    pid = _dead_pid()
    owner = json.loads((staging / OWNER).read_text())
    (staging / OWNER).write_text(json.dumps({**owner, "pid": pid}))
    staging.rename(staging.with_name(f".run.partial-{pid}-killed"))


def _dead_pid() -> int:
    pid = 999_999
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def test_twelve_pilot_plates_with_different_features_report_every_representation(tmp_path, capsys):
    """Issue 20's known failure: 12 plates x (24 DMSO + 90 compounds x 4), same compounds everywhere, per-plate feature lists."""
    paths = synthetic_study(tmp_path / "pilot", plates=12, features=40, controls=24, replicates=4, layout="pilot", moas=6, dropped_features=2)
    out = tmp_path / "run"
    options = [*PILOT, "--moa-column", "Metadata_moa", "--map-negatives", "plate_controls"]
    assert run(["profile", "run", *map(str, paths), *options, *FAST, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for representation in ("cellprofiler", "anomaly", "concatenation"):
        assert 0 < metrics[representation]["percent_replicating"] <= 1 and 0 < metrics[representation]["map"] <= 1
    assert metrics["reproducible_treatments"]["treatments"] == 90
    assert len(metrics["data"]["plate_features"]) == 12 and metrics["data"]["features"] < 40
    assert len(metrics["plates"]) == 12 and all(plate["controls"] == 24 for plate in metrics["plates"])
    assert capsys.readouterr().err.count("plate P0") == 12  # one progress line per plate


def _fails_with_one_line(argv, out, capsys, *names):
    assert run(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("phenolens: error:") and all(name in error for name in names), error
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.partial-*"))


@pytest.fixture()
def plates(tmp_path):
    return synthetic_study(tmp_path / "plates", plates=4, wells=48, features=12, controls=6, replicates=4)


def test_a_file_with_other_metadata_columns_is_one_line(plates, tmp_path, capsys):
    pd.read_parquet(plates[2]).rename(columns={"Metadata_Well": "Metadata_WellName"}).to_parquet(plates[2])
    out = tmp_path / "run"
    _fails_with_one_line(["profile", "run", *map(str, plates), *PILOT, *FAST, "--out", str(out)], out, capsys, plates[2].name, "Metadata_Well")


def test_a_plate_without_controls_is_one_line(plates, tmp_path, capsys):
    table = pd.read_parquet(plates[1])
    table[table["Metadata_pert_type"] != "negcon"].to_parquet(plates[1])
    out = tmp_path / "run"
    _fails_with_one_line(["profile", "run", *map(str, plates), *PILOT, *FAST, "--out", str(out)], out, capsys, plates[1].name, "P00001")


def test_a_corrupt_parquet_partition_is_one_line(plates, tmp_path, capsys):
    plates[3].write_bytes(plates[3].read_bytes()[:300])
    out = tmp_path / "run"
    folder = plates[0].parent
    _fails_with_one_line(["profile", "run", str(folder), *PILOT, *FAST, "--out", str(out)], out, capsys, plates[3].name)


def test_a_plate_split_over_two_files_is_one_line(plates, tmp_path, capsys):
    """Each file's plates are normalised (whole-plate, own controls) on their own: a split plate gave other metrics than in memory."""
    table = pd.read_parquet(plates[1])
    table.iloc[0::2].to_parquet(plates[1])
    second = plates[1].with_name("P00001_second_half.parquet")
    table.iloc[1::2].to_parquet(second)
    out = tmp_path / "run"
    _fails_with_one_line(["profile", "run", *map(str, plates), str(second), *PILOT, *FAST, "--out", str(out)], out, capsys, "P00001", second.name)


def test_a_treatment_on_one_plate_only_is_profiled(plates, tmp_path):
    table = pd.read_parquet(plates[0])
    table.loc[table["Metadata_pert_type"] == "trt", "Metadata_broad_sample"] = "only-here"
    table.to_parquet(plates[0])
    out = tmp_path / "run"
    assert run(["profile", "run", str(plates[0].parent), *PILOT, *FAST, "--out", str(out)]) == 0
    replicates = pd.read_parquet(out / "profiles.parquet").query("Metadata_broad_sample == 'only-here'")
    assert replicates["Metadata_Plate"].nunique() == 1 and len(replicates) == 42


def test_a_killed_command_continues_with_resume_and_ends_as_a_fresh_run(tmp_path, capsys):
    """SIGKILL `phenolens profile run` once its second file is done; `--resume` continues and equals an uninterrupted run."""
    paths = synthetic_study(tmp_path / "plates", plates=12, wells=48, features=12, controls=6, replicates=4)
    argv = ["profile", "run", str(paths[0].parent), *PILOT, *FAST]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-m", "phenolens", *argv, "--out", str(tmp_path / "run")], stderr=subprocess.PIPE, text=True, env=env)
    for line in child.stderr:
        if "file 2/12" in line:
            child.send_signal(signal.SIGKILL)
            break
    child.wait()
    assert child.returncode == -signal.SIGKILL and not (tmp_path / "run").exists()
    assert run([*argv, "--out", str(tmp_path / "run")]) == 2  # the interrupted work is not silently lost
    assert "--resume" in capsys.readouterr().err
    assert run([*argv, "--out", str(tmp_path / "run"), "--resume"]) == 0
    assert "resuming: " in capsys.readouterr().err
    assert run([*argv, "--out", str(tmp_path / "fresh")]) == 0
    resumed, fresh = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("run", "fresh"))
    _assert_same_metrics(fresh, resumed)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "run" / "profiles.parquet"), pd.read_parquet(tmp_path / "fresh" / "profiles.parquet"))


def test_a_dask_worker_killed_mid_run_is_retried_and_the_run_equals_the_serial_one(tmp_path, monkeypatch):
    """`profile run --scheduler local:2` whose worker SIGKILLs itself on the third file (once, keyed by a marker file):
    Dask restarts the worker and runs the file again; the output equals the serial run's."""
    paths = synthetic_study(tmp_path / "plates", plates=6, wells=48, features=12, controls=6, replicates=4)
    argv = ["profile", "run", str(paths[0].parent), *PILOT, *FAST]
    assert run([*argv, "--out", str(tmp_path / "serial")]) == 0
    marker = tmp_path / "worker-killed"

    def dies_once_on_the_third_file(task):  # a local function: Dask's cloudpickle sends it by value, the worker needs no test module
        import os
        import signal

        from phenolens.profiling.study import represent_shard

        if task.shard.index == 2 and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return represent_shard(task)

    monkeypatch.setattr(study, "represent_shard", dies_once_on_the_third_file)
    assert run([*argv, "--scheduler", "local:2", "--out", str(tmp_path / "dask")]) == 0
    killed = int(marker.read_text())
    assert killed != os.getpid()  # a worker process died, not this one
    serial, dask = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("serial", "dask"))
    _assert_same_metrics(serial, dask)
    assert dask["executor"].startswith("Dask LocalCluster of 2")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "dask" / "profiles.parquet"), pd.read_parquet(tmp_path / "serial" / "profiles.parquet"))


def test_a_study_with_sphering_and_an_adversary_streams(plates, tmp_path, capsys):
    out = tmp_path / "run"
    options = ["--sphering", "global", "--sphering-epsilon", "1", "--adversary", "plate"]
    assert run(["profile", "run", str(plates[0].parent), *PILOT, *FAST, *options, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["plates"]) == 4 and capsys.readouterr().err.count("plate P0") == 4  # streamed: one progress line per plate
    for name in ("anomaly_adversarial", "cellprofiler_sphered", "anomaly_adversarial_sphered", "concatenation_sphered"):
        assert 0 <= metrics[name]["percent_replicating"] <= 1, name
    columns = pd.read_parquet(out / "profiles.parquet").columns
    assert {"anomaly_adversarial__", "anomaly_adversarial_sphered__"} <= {c.split("__")[0] + "__" for c in columns}


@pytest.mark.slow
def test_one_file_killed_on_a_cluster_and_resumed_serially_leaves_no_parts_in_the_run(tmp_path, monkeypatch):
    """One file runs in memory when serial and file by file on a cluster: resumed serially, the parts the cluster run
    left (every well's arrays) must not stay in the finished folder, which must equal an uninterrupted serial run's."""
    path = synthetic_study(tmp_path / "plates", plates=3, wells=48, features=12, controls=6, replicates=3)
    table = pd.concat([pd.read_parquet(p) for p in path], ignore_index=True)
    table.to_parquet(tmp_path / "study.parquet")
    argv = ["profile", "run", str(tmp_path / "study.parquet"), *PILOT, *FAST, "--out", str(tmp_path / "run")]

    def killed(*args, **kwargs):
        raise SystemExit("killed after the parts were written")

    monkeypatch.setattr(study, "_evaluate", killed)
    with pytest.raises(SystemExit):
        run([*argv, "--scheduler", "local:2"])
    monkeypatch.undo()
    (staging,) = tmp_path.glob(".run.partial-*")
    assert list((staging / study.PARTS).glob("part-*.parquet"))
    _as_killed(staging)
    assert run([*argv, "--resume"]) == 0
    assert not (tmp_path / "run" / study.PARTS).exists()
    assert run([*argv[:-1], str(tmp_path / "fresh")]) == 0
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted(p.name for p in (tmp_path / "fresh").iterdir())
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "run" / "profiles.parquet"), pd.read_parquet(tmp_path / "fresh" / "profiles.parquet"))


def test_a_hive_partitioned_study_folder_reads_its_partition_columns_from_the_folder_names(plates, tmp_path):
    """`df.to_parquet(folder, partition_cols=["Metadata_Plate"])` keeps the plate only in the folder names
    (``Metadata_Plate=P00000/``), as pandas and pyarrow read it back: it was refused as missing the plate column."""
    table = pd.concat([pd.read_parquet(path) for path in plates], ignore_index=True)
    hive = tmp_path / "hive"
    table.to_parquet(hive, partition_cols=["Metadata_Plate"])
    assert "Metadata_Plate" not in pd.read_parquet(next(hive.rglob("*.parquet"))).columns
    shards = study_shards([hive], [])
    assert [dict(shard.partitions) for shard in shards] == [{"Metadata_Plate": plate} for plate in sorted(table["Metadata_Plate"].unique())]
    outs = {name: tmp_path / f"run-{name}" for name in ("files", "hive")}
    assert run(["profile", "run", *map(str, plates), *PILOT, *FAST, "--out", str(outs["files"])]) == 0
    assert run(["profile", "run", str(hive), *PILOT, *FAST, "--out", str(outs["hive"])]) == 0
    files, partitioned = (pd.read_parquet(out / "profiles.parquet") for out in outs.values())
    pd.testing.assert_frame_equal(partitioned[files.columns], files)
    metrics = [json.loads((out / "metrics.json").read_text()) for out in outs.values()]
    for metric in metrics:
        metric["data"].pop("source")  # the files given, or the folder
    _assert_same_metrics(metrics[0], metrics[1])


def test_hive_partition_values_are_read_as_pyarrow_reads_them(tmp_path):
    """URI-encoded names and whole numbers, against pandas' own read of the same folder, and a missing value."""
    from phenolens.profiling.plates import hive_partitions

    table = pd.DataFrame({"Metadata_Batch": [3, 3, 12, 12], "Metadata_Plate": ["P 1/a", "P%2", "P 1/a", "P=4"], "x": [1.0, 2.0, 3.0, 4.0]})
    table.to_parquet(tmp_path / "hive", partition_cols=["Metadata_Batch", "Metadata_Plate"])
    got = pd.concat(
        [pd.read_parquet(file).assign(**hive_partitions(tmp_path / "hive", file)) for file in sorted((tmp_path / "hive").rglob("*.parquet"))]
    )
    want = pd.read_parquet(tmp_path / "hive")
    got, want = (frame.sort_values("x").reset_index(drop=True) for frame in (got, want))
    assert got["Metadata_Batch"].tolist() == want["Metadata_Batch"].astype(int).tolist() == [3, 3, 12, 12]
    assert got["Metadata_Plate"].tolist() == want["Metadata_Plate"].astype(object).tolist() == ["P 1/a", "P%2", "P 1/a", "P=4"]
    missing = tmp_path / "Metadata_Batch=__HIVE_DEFAULT_PARTITION__" / "part.parquet"  # how pyarrow names a missing value
    assert hive_partitions(tmp_path, missing) == {"Metadata_Batch": None}


def test_streamed_map_against_controls_ranks_a_replicate_tied_with_a_control_as_in_memory():
    """The streamed study keeps its treated unit rows in float32: the controls' similarities must come from the same
    rows, or a replicate whose profile equals a control's is ranked against it by float32 rounding (not as a tie)."""
    from phenolens.profiling.replicates import control_similarities, replicate_map_against_controls, row_standardize

    rng = np.random.default_rng(3)
    clean = pd.DataFrame([{"plate": f"P{p}", "treatment": "DMSO" if w < 3 else f"T{rng.integers(0, 4)}"} for p in range(3) for w in range(12)])
    is_control = (clean["treatment"] == "DMSO").to_numpy()
    values = np.round(rng.normal(size=(len(clean), 6)))
    for plate in clean["plate"].unique():  # the first treated well of each plate copies a control of its plate: exact ties
        on_plate = (clean["plate"] == plate).to_numpy()
        values[np.flatnonzero(on_plate & ~is_control)[0]] = values[np.flatnonzero(on_plate & is_control)[0]]
    settings = ProfilingSettings(plate="plate", treatment="treatment", controls="treatment == 'DMSO'", map_negatives="plate_controls")
    plates = clean["plate"].to_numpy()
    arrays = study._evaluation_arrays(clean, is_control, plates, {"x": values}, settings)
    streamed = replicate_map_against_controls(arrays["unit__x"], arrays["treatments"], arrays["negq__x"], arrays["negs__x"], null_size=50)
    unit = row_standardize(study.replicate_space(values, clean, settings, settings))
    queries, similarities = control_similarities(unit, plates, is_control)
    in_memory = replicate_map_against_controls(unit[~is_control], clean["treatment"].to_numpy()[~is_control], queries, similarities, null_size=50)
    pd.testing.assert_series_equal(
        streamed.treatments["mean_average_precision"], in_memory.treatments["mean_average_precision"], check_names=False, atol=1e-12
    )


def test_hive_partition_values_take_one_type_per_column_over_the_folder_as_pyarrow(tmp_path):
    """pyarrow infers one type per partition column over the whole dataset: plates 1 and P2 are both text ('1', 'P2').
    Typed file by file, plate 1 was an integer and P2 text, and the streamed run ended in an arrow type error."""
    table = pd.DataFrame({"Metadata_Plate": ["1", "1", "P2", "P2"], "Metadata_Batch": ["007", "007", "12", "12"], "x": [1.0, 2.0, 3.0, 4.0]})
    table.to_parquet(tmp_path / "hive", partition_cols=["Metadata_Batch", "Metadata_Plate"])
    want = pd.read_parquet(tmp_path / "hive")
    got = [dict(shard.partitions) for shard in study_shards([tmp_path / "hive"], [])]
    assert set(want["Metadata_Plate"].astype(object)) == {shard["Metadata_Plate"] for shard in got} == {"1", "P2"}
    assert set(want["Metadata_Batch"].astype(int)) == {shard["Metadata_Batch"] for shard in got} == {7, 12}
