"""`phenolens profile run | evaluate | explain` end to end, and every bad input the issue lists."""

import json
import logging

import numpy as np
import pandas as pd
import pytest

from phenolens.cli.main import run
from phenolens.core.errors import PhenolensError
from phenolens.profiling.evaluate import evaluate
from phenolens.profiling.inputs import ProfileColumns, prepare_profiles
from phenolens.profiling.settings import ProfileEvaluationSettings
from phenolens.profiling.synthetic import synthetic_screen

OPTIONS = ["--controls", "Metadata_PertType == 'control'", "--treatment-column", "Metadata_Treatment", "--moa-column", "Metadata_MoA"]
FAST = ["--max-epochs", "4", "--moa-repeats", "2", "--classifiers", "lr", "--jobs", "1", "--no-curve", "--explain-features", "1"]
COLUMNS = ProfileColumns(controls="Metadata_PertType == 'control'", treatment="Metadata_Treatment", moa="Metadata_MoA", compound="Metadata_Compound")
HEADLINE = ("percent_replicating", "map", "nsc_accuracy", "nscb_accuracy", "moa_f1_lr", "moa_f1_mlp")


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("screen") / "screen.csv"
    synthetic_screen(plates=6, controls_per_plate=8, moas=2, compounds_per_moa=5, doses=2, features=16, effect=8.0, seed=1).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def run_dir(table_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    extra = ["--compound-column", "Metadata_Compound", "--batch-column", "Metadata_Batch"]
    assert run(["profile", "run", str(table_path), *OPTIONS, *extra, *FAST, "--out", str(out)]) == 0
    return out


def test_run_writes_every_output_with_the_promised_keys(run_dir):
    for name in (
        "profiles.parquet",
        "metrics.json",
        "report.html",
        "hits.csv",
        "explanations.parquet",
        "model/model.safetensors",
        "model/model.json",
    ):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    venn = metrics["reproducible_treatments"]
    assert venn["all"] <= min(venn["cellprofiler"], venn["anomaly"]) <= venn["union"] <= venn["treatments"]
    for representation in ("cellprofiler", "anomaly", "concatenation"):
        assert set(HEADLINE) <= set(metrics[representation])
        assert 0 <= metrics[representation]["percent_replicating"] <= 1
        assert metrics[representation]["moa_f1_lr"] is not None and metrics[representation]["nscb_accuracy"] is not None
        assert metrics[representation]["moa_f1_mlp"] is None  # not asked for
    assert metrics["seconds"] > 0
    record = json.loads((run_dir / "run.json").read_text())
    assert record["command"] == "profile run" and record["seed"] == 0 and record["inputs"][0]["path"].endswith("screen.csv")
    assert len(list((run_dir / "figures").glob("*.png"))) >= 6
    profiles = pd.read_parquet(run_dir / "profiles.parquet")
    assert any(c.startswith("cellprofiler__") for c in profiles) and any(c.startswith("anomaly__") for c in profiles)


def test_report_speaks_to_people_while_the_files_keep_machine_names(run_dir):
    page = (run_dir / "report.html").read_text()
    assert "hyper-parameters {" not in page and "{&#39;" not in page  # no Python dict in the prose
    assert "learning rate 0.001, output L2 penalty 0.0001, dropout 0.1 (as set; no search)" in page
    for machine in ("n_wells", "p_value", "q_value", "representation_a", "mean_a"):
        assert f"<th>{machine}</th>" not in page, machine
    assert "<th>wells</th>" in page and "<th>q-value (Benjamini-Hochberg)</th>" in page
    assert '"wells":3,"p-value":' in page and '"n_wells"' not in page  # the explorer's hits table too
    assert "reconstructed from the other inputs" in page and "from a control&#39;s inputs" in page  # what the SHAP values sum to
    assert {"n_wells", "p_value", "q_value"} <= set(pd.read_csv(run_dir / "hits.csv").columns)


def test_same_seed_same_metrics(run_dir, table_path, tmp_path):
    extra = ["--compound-column", "Metadata_Compound", "--batch-column", "Metadata_Batch"]
    assert run(["profile", "run", str(table_path), *OPTIONS, *extra, *FAST, "--out", str(tmp_path / "again")]) == 0
    first = json.loads((run_dir / "metrics.json").read_text())
    second = json.loads((tmp_path / "again" / "metrics.json").read_text())
    first.pop("seconds"), second.pop("seconds")
    assert first == second


def test_evaluate_and_explain_reuse_a_run(run_dir, tmp_path):
    evaluated = tmp_path / "evaluated"
    assert (
        run(
            [
                "profile",
                "evaluate",
                str(run_dir / "profiles.parquet"),
                *OPTIONS,
                "--moa-repeats",
                "1",
                "--classifiers",
                "lr",
                "--jobs",
                "1",
                "--out",
                str(evaluated),
            ]
        )
        == 0
    )
    metrics = json.loads((evaluated / "metrics.json").read_text())
    ran = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["anomaly"]["percent_replicating"] == ran["anomaly"]["percent_replicating"]
    explained = tmp_path / "explained"
    group = ["--group", "Metadata_Treatment == 'cpd0@2'", "--features", "1", "--nsamples", "60", "--background-size", "5"]
    assert run(["profile", "explain", str(run_dir), *group, "--out", str(explained)]) == 0
    summary = json.loads((explained / "metrics.json").read_text())
    assert summary["wells"] == 3 and len(summary["explained"]) == 1
    assert run(["profile", "explain", str(run_dir), "--group", "Metadata_Treatment == 'nothing'", "--out", str(tmp_path / "no")]) == 2


def test_bad_inputs_fail_cleanly_and_write_nothing(table_path, tmp_path, capsys):
    table = pd.read_csv(table_path)
    out = tmp_path / "out"
    no_match = ["--controls", "Metadata_PertType == 'negcon'", "--treatment-column", "Metadata_Treatment"]
    assert run(["profile", "run", str(table_path), *no_match, *FAST, "--out", str(out)]) == 2
    assert "matches no well" in capsys.readouterr().err
    text = table.assign(Cells_Text="abc")
    text.to_csv(tmp_path / "text.csv", index=False)
    assert run(["profile", "run", str(tmp_path / "text.csv"), *OPTIONS, *FAST, "--out", str(out)]) == 2
    assert "'Cells_Text' is not numeric" in capsys.readouterr().err
    assert run(["profile", "run", str(table_path), *OPTIONS, "--moa-column", "Metadata_Mechanism", *FAST, "--out", str(out)]) == 2
    assert "missing metadata column 'Metadata_Mechanism'" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_plates_without_controls_are_excluded_with_a_warning(table_path, caplog):
    table = pd.read_csv(table_path)
    no_controls = ~((table["Metadata_Plate"] == "P001") & (table["Metadata_PertType"] == "control"))
    with caplog.at_level(logging.WARNING, logger="phenolens"):
        prepared = prepare_profiles(table[no_controls], COLUMNS)
    assert "P001" in caplog.text
    assert prepared.quality["plates_excluded_few_controls"] == ["P001"] and "P001" not in set(prepared.table["Metadata_Plate"])
    one_control_each = ~table.duplicated(["Metadata_Plate", "Metadata_PertType"]) | (table["Metadata_PertType"] == "trt")
    with pytest.raises(PhenolensError, match="no plate has 2 or more control wells"):
        prepare_profiles(table[one_control_each], COLUMNS)


def test_non_finite_values_are_dropped_and_counted(table_path):
    table = pd.read_csv(table_path)
    features = [c for c in table if c.startswith("Cells_")]
    table.loc[:10, features[0]] = np.nan  # 11 of 84 wells: the feature goes
    table.loc[20, features[1]] = np.inf  # one well goes
    prepared = prepare_profiles(table, COLUMNS)
    assert prepared.quality["non_finite_values"] == 12
    assert prepared.quality["features_dropped_non_finite"] == [features[0]]
    assert prepared.quality["wells_dropped_non_finite"] == 1 and len(prepared.table) == len(table) - 1
    assert features[0] not in prepared.features and np.isfinite(prepared.table[prepared.features].to_numpy()).all()


def test_single_replicate_treatments_are_excluded_and_counted(run_dir):
    profiles = pd.read_parquet(run_dir / "profiles.parquet")
    representation = profiles[[c for c in profiles if not c.startswith("anomaly__")]]
    keep_one = ~representation["Metadata_Treatment"].isin(["cpd0@1", "cpd1@1"]) | ~representation["Metadata_Treatment"].duplicated()
    settings = ProfileEvaluationSettings(
        **{**COLUMNS.column_fields(), "positive_controls": "Metadata_Treatment == 'cpd0@2'"}, moa_repeats=1, map_null_size=200, classifiers=("lr",)
    )
    evaluation = evaluate({"cellprofiler": representation[keep_one].reset_index(drop=True)}, settings)
    assert -np.inf < evaluation.metrics["cellprofiler"]["z_prime_factor"] <= 1
    assert evaluation.venn["cellprofiler"] == evaluation.venn["union"] == int(evaluation.replicates["cellprofiler"].treatments["reproducible"].sum())
    assert evaluation.replicates["cellprofiler"].single_replicate == 2
    assert "2 treatment(s) with a single well were excluded" in " ".join(evaluation.notes)
    assert "cpd0@1" not in evaluation.replicates["cellprofiler"].treatments.index


def test_a_whole_table_run_says_what_it_is_doing(table_path, tmp_path, caplog):
    """`profile run` of one table takes minutes on a real screen: a progress line per stage, not silence until the end."""
    with caplog.at_level(logging.INFO, logger="phenolens.progress"):
        assert run(["profile", "run", str(table_path), *OPTIONS, *FAST, "--out", str(tmp_path / "run")]) == 0
    lines = [record.getMessage() for record in caplog.records if record.name == "phenolens.progress"]
    assert lines[0].startswith("profile run: ") and "wells x 16 features" in lines[0] and "48 control wells" in lines[0]
    assert any("scoring 3 representations (2 MoA classifier repeats)" in line for line in lines)
    assert any("Kernel SHAP" in line for line in lines) and not any("learning curve" in line for line in lines)  # --no-curve


def test_the_bbbc021_profiles_answer_to_their_registry_name_and_to_bbbc021():
    from test_cli_help_text import rendered_help

    from phenolens.data.loaders import LOADERS
    from phenolens.profiling.inputs import DATASET_PRESETS, with_dataset_columns
    from phenolens.profiling.settings import ProfileEvaluationSettings, ProfilingSettings

    short, registry = (with_dataset_columns(ProfilingSettings(), name) for name in ("bbbc021", "bbbc021-profiles"))
    assert short == registry and registry[1] == "bbbc021-profiles"  # the same columns, and `data.load` of the same data
    assert registry[0].treatment == "Metadata_Treatment" and registry[0].batch == "Metadata_Batch"
    assert with_dataset_columns(ProfileEvaluationSettings(), "bbbc021") == with_dataset_columns(ProfileEvaluationSettings(), "bbbc021-profiles")
    assert set(DATASET_PRESETS) <= set(LOADERS) and {name for name, _ in DATASET_PRESETS.values()} <= set(LOADERS)
    with pytest.raises(PhenolensError, match=r"'bbbc013' for profiling; choose bbbc021-profiles \(or bbbc021\), lincs-plate"):
        with_dataset_columns(ProfilingSettings(), "bbbc013")
    for command in ("run", "evaluate"):
        assert "bbbc021-profiles (or bbbc021), lincs-plate" in rendered_help("profile", command)
