"""Profiling in the house shape: CLI defaults come from the settings (drift test), AnomalyProfiler clones and never
mutates its input, run folders, and the hardening cases of issue 23 (inf wells, duplicate and all-NaN columns, --out)."""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pandas as pd
import pytest
import typer
import typer.core
from sklearn.base import clone

from phenolens.cli.main import run
from phenolens.cli.options import cli_fields
from phenolens.cli.profile import app as profile_app
from phenolens.core.errors import PhenolensError
from phenolens.core.estimators import NotFittedError
from phenolens.core.settings import option_name
from phenolens.profiling.anomaly import AnomalyProfiler
from phenolens.profiling.evaluate import evaluate_tables
from phenolens.profiling.inputs import IMPUTED_COLUMN, prepare_profiles
from phenolens.profiling.settings import ProfileEvaluationSettings, ProfileExplanationSettings, ProfilingSettings
from phenolens.profiling.synthetic import synthetic_screen

CONTROLS = "Metadata_PertType == 'control'"
SETTINGS_OF = {"run": ProfilingSettings, "evaluate": ProfileEvaluationSettings, "explain": ProfileExplanationSettings}


def drifted_defaults(command: typer.core.TyperCommand, settings_type) -> list[str]:
    """Options of `command` whose default differs from the settings field it stands for, or fields without an option."""
    options = {name: parameter for parameter in command.params for name in parameter.opts}
    problems = []
    for field in cli_fields(settings_type):
        option = options.get(option_name(field))
        if option is None:
            problems.append(f"{option_name(field)}: no option")
            continue
        default = option.default
        if isinstance(default, str) and typing_is_tuple(field) and default == "":
            default = field.default
        if settings_type(**{field.name: default}).to_dict()[field.name] != settings_type().to_dict()[field.name]:
            problems.append(f"{option_name(field)}: CLI default {option.default!r} != settings default {field.default!r}")
    return problems


def typing_is_tuple(field: dataclasses.Field) -> bool:
    return isinstance(field.default, tuple) or "tuple" in str(field.type)


@pytest.mark.parametrize("name", sorted(SETTINGS_OF))
def test_cli_defaults_are_the_settings_defaults(name):
    command = typer.main.get_command(profile_app).commands[name]
    assert drifted_defaults(command, SETTINGS_OF[name]) == []


def test_the_drift_test_fails_on_a_hand_written_default():
    """A command that copies the options by hand and changes one default is caught."""
    drifting = typer.Typer()

    @drifting.command()
    def explain(
        group: str = typer.Option(None, "--group"),
        features: int = typer.Option(5, "--features"),  # the settings say 3
        nsamples: int = typer.Option(1000, "--nsamples"),
        background_size: int = typer.Option(20, "--background-size"),
        seed: int = typer.Option(0, "--seed"),
    ) -> None:
        """A deliberate drift."""

    @drifting.command()
    def other() -> None:
        """Keeps typer in group mode."""

    command = typer.main.get_command(drifting).commands["explain"]
    assert drifted_defaults(command, ProfileExplanationSettings) == ["--features: CLI default 5 != settings default 3"]


@pytest.mark.parametrize(
    ("kind", "changes", "message"),
    [
        (ProfilingSettings, {"control_split": (0.5, 0.5, 0.5)}, "sum to 1"),
        (ProfilingSettings, {"controls": "@pd.io.common.os.system('x')"}, r"ProfilingSettings.controls \(--controls\)"),
        (ProfilingSettings, {"learning_rate": 0}, "must be > 0"),
        (ProfilingSettings, {"scale_pooling": "well"}, "choose one of plate, batch, all"),
        (ProfileEvaluationSettings, {"classifiers": "lr,svm"}, "choose one of lr, mlp"),
        (ProfileEvaluationSettings, {"moa_folds": 5, "min_treatments_per_moa": 3}, "too few for 5 outer"),
        (ProfileEvaluationSettings, {"treatment": " "}, "must not be blank"),
        (ProfileExplanationSettings, {"group": "Metadata_x.__class__"}, "attribute access"),
    ],
)
def test_settings_refuse_bad_values_on_construction(kind, changes, message):
    with pytest.raises(PhenolensError, match=message) as caught:
        kind(**changes)
    assert "\n" not in str(caught.value)


@pytest.fixture(scope="module")
def screen():
    return synthetic_screen(plates=4, controls_per_plate=10, replicates=2, features=20, seed=0)


def test_anomaly_profiler_clones_and_never_mutates_the_callers_table(screen):
    settings = ProfilingSettings(controls=CONTROLS, batch="Metadata_Batch", max_epochs=3, hidden=(16, 8), latent=4)
    profiler = AnomalyProfiler(settings)
    before = screen.copy(deep=True)
    assert profiler.fit(screen) is profiler
    pd.testing.assert_frame_equal(screen, before)
    profiler.transform(screen)
    pd.testing.assert_frame_equal(screen, before)
    twin = clone(profiler)
    assert twin is not profiler and twin.get_params() == {"settings": settings}
    assert not any(name.endswith("_") for name in vars(twin))
    with pytest.raises(NotFittedError, match="not fitted"):
        twin.transform(screen)
    again = twin.fit_transform(screen)["anomaly"]
    assert np.allclose(again[twin.selected_features_], profiler.fit_transform(screen)["anomaly"][profiler.selected_features_])


def _representation(seed: int = 3) -> pd.DataFrame:
    return synthetic_screen(plates=6, controls_per_plate=8, moas=2, compounds_per_moa=3, doses=2, features=16, seed=seed)


EVALUATION = {"controls": CONTROLS, "treatment": "Metadata_Treatment", "map_null_size": 200}


def test_evaluate_drops_infinite_wells_as_profile_run_does():
    """Issue 23: inf in 5 wells gave percent replicating 0.0 and mAP 1.0; they are now dropped and counted."""
    table = _representation()
    features = [c for c in table if c.startswith("Cells_")][3:8]
    poisoned = table.copy()
    wells = poisoned.index[poisoned["Metadata_PertType"] == "trt"][:5]
    for well, feature in zip(wells, features):  # one inf per feature: each feature stays (under 5 % missing), the wells go
        poisoned.loc[well, feature] = np.inf
    before = poisoned.copy()
    evaluation, metrics = evaluate_tables(poisoned, ProfileEvaluationSettings(**EVALUATION), "poisoned.csv")
    pd.testing.assert_frame_equal(poisoned, before)
    _, expected = evaluate_tables(table.drop(index=wells), ProfileEvaluationSettings(**EVALUATION), "clean.csv")
    assert metrics["data"]["wells_dropped_non_finite"] == 5 and metrics["data"]["non_finite_values"] == 5
    assert metrics["features"]["percent_replicating"] == expected["features"]["percent_replicating"]
    assert metrics["features"]["map"] == pytest.approx(expected["features"]["map"])
    assert metrics["features"]["percent_replicating"] > 0 and metrics["features"]["map"] < 1


def test_evaluate_drops_treated_wells_without_a_treatment_as_profile_run_does():
    """They were all one treatment, 'nan': a replicate group of every unlabelled well (here 12, more than the 9 treatments,
    so percent replicating failed; with more treatments they were scored, hit-called and retrieved as one treatment)."""
    table = _representation()
    unlabelled = table.index[table["Metadata_PertType"] == "trt"][::3]
    missing = table.copy()
    missing.loc[unlabelled, "Metadata_Treatment"] = None
    evaluation, metrics = evaluate_tables(missing, ProfileEvaluationSettings(**EVALUATION), "missing.csv")
    _, expected = evaluate_tables(table.drop(index=unlabelled), ProfileEvaluationSettings(**EVALUATION), "clean.csv")
    assert metrics["data"]["wells_dropped_no_treatment"] == len(unlabelled) == 12 and metrics["data"]["wells"] == len(table) - 12
    assert "nan" not in evaluation.hits["features"].index
    for key in ("percent_replicating", "map", "hits"):
        assert metrics["features"][key] == pytest.approx(expected["features"][key]), key


@pytest.fixture()
def table_file(tmp_path):
    path = tmp_path / "inputs" / "wells.csv"
    path.parent.mkdir()
    _representation().to_csv(path, index=False)
    return path


FAST = ["--controls", CONTROLS, "--treatment-column", "Metadata_Treatment", "--map-null-size", "200", "--classifiers", "lr", "--moa-repeats", "1"]


def test_evaluate_all_nan_column_warns_with_counts_and_duplicate_columns_fail(table_file, tmp_path, capsys, caplog):
    table = pd.read_csv(table_file)
    table.assign(Cells_Empty=np.nan).to_csv(tmp_path / "nan.csv", index=False)
    with caplog.at_level(logging.WARNING, logger="phenolens"):
        assert run(["profile", "evaluate", str(tmp_path / "nan.csv"), *FAST, "--out", str(tmp_path / "nan-run")]) == 0
    assert "dropped 1 feature(s)" in caplog.text
    assert json.loads((tmp_path / "nan-run" / "metrics.json").read_text())["data"]["features_dropped_non_finite"] == ["Cells_Empty"]
    header = ",".join(table.columns) + "," + table.columns[-1]
    rows = [",".join(map(str, row)) + f",{row[-1]}" for row in table.itertuples(index=False)]
    (tmp_path / "twice.csv").write_text("\n".join([header, *rows]) + "\n")
    assert run(["profile", "evaluate", str(tmp_path / "twice.csv"), *FAST, "--out", str(tmp_path / "twice-run")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"column {table.columns[-1]!r} appears more than once" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "twice-run").exists()


def test_out_equal_to_the_inputs_folder_is_refused_and_overwrite_needs_a_run(table_file, tmp_path, capsys):
    assert run(["profile", "evaluate", str(table_file), *FAST, "--out", str(table_file.parent)]) == 2
    assert "contains the input" in capsys.readouterr().err
    assert sorted(p.name for p in table_file.parent.iterdir()) == ["wells.csv"]
    out = tmp_path / "evaluated"
    assert run(["profile", "evaluate", str(table_file), *FAST, "--out", str(out)]) == 0
    assert json.loads((out / "run.json").read_text())["command"] == "profile evaluate"
    assert run(["profile", "evaluate", str(table_file), *FAST, "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert run(["profile", "evaluate", str(table_file), *FAST, "--out", str(out), "--overwrite"]) == 0


def test_query_payload_on_the_command_line_is_refused_and_not_run(table_file, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    payload = f"@pd.io.common.os.system('touch {tmp_path / 'pwned'}') != 0 or Metadata_PertType == 'control'"
    options = ["--treatment-column", "Metadata_Treatment", "--out", str(tmp_path / "q")]
    assert run(["profile", "evaluate", str(table_file), "--controls", payload, *options]) == 2
    err = capsys.readouterr().err.strip()
    assert "'@' names are not allowed" in err and len(err.splitlines()) == 1
    assert run(["profile", "evaluate", str(table_file), "--controls", CONTROLS, "--positive-controls", payload, *options]) == 2
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "q").exists()


def test_explain_on_a_wrong_folder_names_profile_run(tmp_path, capsys):
    (tmp_path / "not-a-run").mkdir()
    assert run(["profile", "explain", str(tmp_path / "not-a-run"), "--group", CONTROLS, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "phenolens profile run" in err and "train" not in err


def test_twelve_plates_with_48_replicates_per_compound_run(tmp_path):
    """Issue 20's failing shape, small: 12 plate files, 8 controls and 50 compounds x 4 wells per plate, so every compound
    has 48 replicates (the rejection sampler stopped with 'could not draw null groups'); all three representations are scored."""
    rng = np.random.default_rng(0)
    features, compounds = 12, 50
    direction = rng.normal(size=(compounds, features))
    paths = []
    for plate in range(12):
        compound = np.concatenate([np.full(8, -1), np.repeat(np.arange(compounds), 4)])
        values = rng.normal(size=(len(compound), features)) + 0.3 * rng.normal(size=features)
        values[compound >= 0] += direction[compound[compound >= 0]]
        table = pd.DataFrame(values, columns=[f"Cells_F{i:02d}" for i in range(features)])
        table.insert(0, "Metadata_Plate", f"P{plate:02d}")
        table.insert(1, "Metadata_control_type", np.where(compound < 0, "negcon", ""))
        table.insert(2, "Metadata_broad_sample", np.where(compound < 0, "DMSO", [f"BRD-{c:03d}" for c in compound]))
        paths.append(tmp_path / f"plate{plate:02d}.csv")
        table.to_csv(paths[-1], index=False)
    out = tmp_path / "run"
    options = ["--controls", "Metadata_control_type == 'negcon'", "--treatment-column", "Metadata_broad_sample", "--map-null-size", "200"]
    fast = ["--max-epochs", "2", "--hidden", "16,8", "--latent", "4", "--no-curve", "--explain-features", "0"]
    assert run(["profile", "run", *map(str, paths), *options, *fast, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for representation in ("cellprofiler", "anomaly", "concatenation"):
        assert 0 <= metrics[representation]["percent_replicating"] <= 1 and 0 < metrics[representation]["map"] <= 1
    assert metrics["cellprofiler"]["percent_replicating"] > 0.9  # every compound has a strong, shared signal
    assert len(json.loads((out / "run.json").read_text())["inputs"]) == 12


def test_plates_with_different_features_keep_the_shared_ones_and_count_per_plate(caplog):
    """Issue 20: per-plate feature lists; the warning gives counts, not file names, and metrics give per-plate counts."""
    table = _representation()
    features = [c for c in table if c.startswith("Cells_")]
    plates = sorted(table["Metadata_Plate"].unique())
    table.loc[table["Metadata_Plate"] == plates[0], features[:3]] = np.nan  # plate 0 never measured 3 features
    table.loc[table["Metadata_Plate"] == plates[1], features[3]] = np.nan  # plate 1 never measured one
    with caplog.at_level(logging.WARNING, logger="phenolens"):
        _, metrics = evaluate_tables(table, ProfileEvaluationSettings(**EVALUATION), "12 profile files (a.csv, ...)")
    per_plate = metrics["data"]["plate_features"]
    assert per_plate[plates[0]] == {"had": 13, "kept": 12, "lost": 1}
    assert per_plate[plates[1]] == {"had": 15, "kept": 12, "lost": 3}
    assert per_plate[plates[2]] == {"had": 16, "kept": 12, "lost": 4}
    assert "kept the 12 every plate has, dropped 4 others (6 of 6 plates lose some, 1-4 each)" in caplog.text
    assert caplog.text.count(".csv") == 1  # the source's short name, no list of paths


def test_union_imputes_a_plates_missing_values_from_its_controls_and_flags_them():
    table = _representation()
    features = [c for c in table if c.startswith("Cells_")]
    plates = sorted(table["Metadata_Plate"].unique())
    on_first = table["Metadata_Plate"] == plates[0]
    controls = table["Metadata_PertType"] == "control"
    table.loc[on_first, features[0]] = np.nan  # plate 0 never measured feature 0
    well = table.index[~on_first & ~controls][0]
    table.loc[well, features[1]] = np.inf  # one value lost on another plate
    settings = ProfileEvaluationSettings(**EVALUATION, feature_set="union")
    prepared = prepare_profiles(table, settings, "wells.csv", "union")
    assert features[0] in prepared.features and np.isfinite(prepared.table[prepared.features].to_numpy()).all()
    same_plate_controls = (table["Metadata_Plate"] == table.loc[well, "Metadata_Plate"]) & controls
    assert prepared.table.loc[well, features[1]] == table.loc[same_plate_controls, features[1]].median()
    assert prepared.table.loc[on_first.to_numpy(), features[0]].nunique() == 1  # the all-plates control median
    assert prepared.table[IMPUTED_COLUMN].sum() == on_first.sum() + 1 and prepared.table.loc[well, IMPUTED_COLUMN] == 1
    _, metrics = evaluate_tables(table, settings, "wells.csv")
    assert metrics["data"]["imputed_by_plate"][plates[0]] == on_first.sum() and metrics["data"]["wells_dropped_non_finite"] == 0
    with pytest.raises(PhenolensError, match="choose one of intersection, union"):
        ProfilingSettings(feature_set="all")


def test_the_venn_caption_states_the_percentile_the_evaluation_used():
    """The caption said "above the null's 90th percentile" whatever --replicate-percentile was."""
    from phenolens.report.profiling import evaluation_report

    settings = ProfileEvaluationSettings(**EVALUATION, replicate_percentile=75.0, classifiers=())
    evaluation, metrics = evaluate_tables(_representation(), settings, "wells.csv")
    captions = [figure.caption for section in evaluation_report("wells", metrics, evaluation).sections for figure in section.figures]
    venn = [caption for caption in captions if "reproducible" in caption.lower()]
    assert len(venn) == 1 and "75th percentile" in venn[0] and "90th" not in venn[0]


def test_the_headline_moa_f1_says_it_is_the_weighted_f1():
    """classify_moa scores weighted F1 (f1_score(average="weighted")); the headline table and the verdict called it
    "MoA F1", which on a multi-class task reads as the macro F1."""
    from phenolens.report.profiling import metrics_table, verdict

    metrics = {"anomaly": {"moa_f1_lr": 0.6, "moa_f1_mlp": 0.5}, "cellprofiler": {"moa_f1_lr": 0.4, "moa_f1_mlp": 0.7}}
    f1_columns = [column for column in metrics_table(metrics).columns if "F1" in column]
    assert f1_columns == ["MoA weighted F1, logistic regression", "MoA weighted F1, MLP"]
    assert "MoA weighted F1, logistic regression 0.600 vs 0.400" in verdict(metrics)


def test_metadata_and_features_split_every_column_by_one_rule():
    """`Metadata_` columns and the columns the settings name are metadata; every other column is a feature (the rule
    prepare_profiles, the streamed scan and evaluate share)."""
    from phenolens.profiling.inputs import checked_features, features_of, metadata_of

    table = pd.DataFrame({"Metadata_Plate": ["p"], "Cells_A": [1.0], "Compound": ["c"], "Metadata_Well": ["A01"], "Cells_B": [2.0]})
    settings = ProfileEvaluationSettings(treatment="Compound")
    assert metadata_of(table, settings) == ["Metadata_Plate", "Compound", "Metadata_Well"]
    assert features_of(table, settings) == checked_features(table, settings, "t.csv") == ["Cells_A", "Cells_B"]
    with pytest.raises(PhenolensError, match="Cells_B"):
        checked_features(table.assign(Cells_B="x"), settings, "t.csv")
