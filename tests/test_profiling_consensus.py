"""`--consensus mean|median|modz`: the treatment profiles `profile run` and `profile evaluate` build, write and evaluate.

pycytominer's ``consensus(operation="modz")`` and pandas' median are the oracles, computed on the well profiles the
run wrote (profiles.parquet); the one-table (in-memory) and the file-by-file (streamed) run are both checked.
"""

import json

import numpy as np
import pandas as pd
import pytest

from phenolens.cli.main import run
from phenolens.profiling.synthetic import synthetic_screen

TREATMENT = "Metadata_Treatment"
COLUMNS = ["--controls", "Metadata_PertType == 'control'", "--treatment-column", TREATMENT, "--moa-column", "Metadata_MoA"]
OPTIONS = [*COLUMNS, "--compound-column", "Metadata_Compound"]
EVALUATION = ["--moa-repeats", "1", "--classifiers", "lr", "--jobs", "1", "--map-null-size", "100"]
FAST = ["--max-epochs", "3", *EVALUATION, "--no-curve", "--explain-features", "0"]


@pytest.fixture(scope="module")
def screen(tmp_path_factory):
    """A six-plate screen (one treatment left with a single well) as one table and as one parquet file per plate."""
    table = synthetic_screen(plates=6, controls_per_plate=8, moas=2, compounds_per_moa=5, doses=2, features=16, effect=8.0, seed=1)
    single = table.loc[table["Metadata_PertType"] != "control", TREATMENT].iloc[0]
    table = table.drop(table.index[table[TREATMENT] == single][1:]).reset_index(drop=True)
    folder = tmp_path_factory.mktemp("screen")
    table.to_parquet(folder / "screen.parquet")
    paths = []
    for plate, wells in table.groupby("Metadata_Plate", sort=False):
        paths.append(folder / f"{plate}.parquet")
        wells.to_parquet(paths[-1])
    return {"table": [folder / "screen.parquet"], "study": paths, "single": single, "modz_run": tmp_path_factory.mktemp("runs") / "modz"}


def _run(screen, layout, consensus, out):
    if not (out / "report.html").exists():  # the one-table MODZ run is shared by two tests
        assert run(["profile", "run", *map(str, screen[layout]), *OPTIONS, *FAST, "--consensus", consensus, "--out", str(out)]) == 0
    return pd.read_parquet(out / "profiles.parquet"), pd.read_parquet(out / "treatment_profiles.parquet").set_index(TREATMENT)


def _oracle(profiles: pd.DataFrame, features: list[str], consensus: str) -> pd.DataFrame:
    """pycytominer's MODZ, or pandas' median, of the written well profiles of every treated well with a MoA."""
    from pycytominer import consensus as pycytominer_consensus

    wells = profiles[(profiles["Metadata_PertType"] != "control") & profiles["Metadata_MoA"].notna()]
    wells = wells[[TREATMENT, *features]].astype({feature: np.float64 for feature in features})
    if consensus == "median":
        return wells.groupby(TREATMENT).median()
    return pycytominer_consensus(wells, replicate_columns=[TREATMENT], operation="modz", features=features).set_index(TREATMENT)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # inside pycytominer
@pytest.mark.parametrize("layout, consensus", [("table", "modz"), ("study", "modz"), ("study", "median")])
def test_profile_run_writes_the_consensus_of_its_well_profiles(screen, tmp_path, layout, consensus):
    out = screen["modz_run"] if (layout, consensus) == ("table", "modz") else tmp_path / "run"
    profiles, treatments = _run(screen, layout, consensus, out)
    assert json.loads((out / "metrics.json").read_text())["consensus"] == consensus
    assert json.loads((out / "run.json").read_text())["settings"][0]["values"]["consensus"] == consensus
    for representation in ("cellprofiler", "anomaly"):
        features = [column for column in profiles.columns if column.startswith(f"{representation}__")]
        want = _oracle(profiles, features, consensus)
        assert len(want) == len(treatments) == 2 * 5 * 2  # moas x compounds x doses
        got = treatments.loc[want.index, features]
        np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-12, atol=1e-12, err_msg=representation)
        # the treatment left with one well is that well
        single = profiles.loc[profiles[TREATMENT] == screen["single"], features]
        assert len(single) == 1
        np.testing.assert_array_equal(treatments.loc[screen["single"], features].to_numpy(), single.to_numpy(np.float64)[0])
    assert list(treatments.columns) == ["Metadata_MoA", "Metadata_Compound", *(column for column in profiles.columns if "__" in column)]


def test_profile_evaluate_rebuilds_the_runs_treatment_profiles_and_the_mean_differs(screen, tmp_path):
    """`profile evaluate --consensus modz` on a run's profiles.parquet gives the run's treatment profiles; the default
    (mean) gives other profiles and other NSC figures."""
    _, treatments = _run(screen, "table", "modz", screen["modz_run"])
    profiles = str(screen["modz_run"] / "profiles.parquet")
    assert run(["profile", "evaluate", profiles, *OPTIONS, *EVALUATION, "--consensus", "modz", "--out", str(tmp_path / "modz")]) == 0
    assert run(["profile", "evaluate", profiles, *COLUMNS, *EVALUATION, "--out", str(tmp_path / "mean")]) == 0  # no compound column
    evaluated = pd.read_parquet(tmp_path / "modz" / "treatment_profiles.parquet").set_index(TREATMENT)
    pd.testing.assert_frame_equal(evaluated, treatments)
    mean = pd.read_parquet(tmp_path / "mean" / "treatment_profiles.parquet").set_index(TREATMENT)
    assert list(mean.columns) == ["Metadata_MoA", *evaluated.columns[2:]]  # the treatment is its own compound: not repeated
    assert not np.allclose(mean.select_dtypes("number").to_numpy(), evaluated.select_dtypes("number").to_numpy())
    metrics = {name: json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("modz", "mean")}
    assert metrics["modz"]["consensus"] == "modz" and metrics["mean"]["consensus"] == "mean"


@pytest.mark.parametrize("command", ["run", "evaluate"])
def test_an_unknown_consensus_is_one_line_naming_the_option(screen, tmp_path, capsys, command):
    assert run(["profile", command, str(screen["table"][0]), *OPTIONS, "--consensus", "trimmed", "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--consensus" in error and "mean, median, modz" in error
    assert not (tmp_path / "out").exists()


def test_the_explorer_treatment_map_uses_the_consensus(monkeypatch):
    from phenolens.report.explorer import profiling as explorer

    rng = np.random.default_rng(0)
    wells = pd.DataFrame(rng.normal(size=(9, 3)), columns=["f0", "f1", "f2"])
    wells[TREATMENT] = list("aaabbbccc")
    wells["Metadata_Plate"], wells["Metadata_Well"] = "P1", [f"A{i:02d}" for i in range(9)]
    hits = pd.DataFrame({"score": 1.0, "n_wells": 3, "p_value": 0.5, "q_value": 0.5, "hit": False}, index=list("abc"))
    mapped = []
    monkeypatch.setattr(explorer, "embedding_points", lambda profiles, seed: mapped.append(profiles) or np.zeros((len(profiles), 2)))
    explorer.profiling_view(wells, ["f0", "f1", "f2"], np.ones(9, bool), TREATMENT, "Metadata_Plate", hits, consensus="median")
    np.testing.assert_allclose(mapped[0], wells.groupby(TREATMENT)[["f0", "f1", "f2"]].median().to_numpy())


@pytest.mark.parametrize("consensus", ["mean", "median", "modz"])
def test_the_explorer_map_note_names_the_consensus_it_drew(consensus):
    """The page said "t-SNE of each treatment's mean anomaly profile" whatever --consensus built the map."""
    from phenolens.report.explorer import profiling as explorer

    rng = np.random.default_rng(0)
    wells = pd.DataFrame(rng.normal(size=(9, 3)), columns=["f0", "f1", "f2"])
    wells[TREATMENT] = list("aaabbbccc")
    hits = pd.DataFrame({"score": 1.0, "n_wells": 3, "p_value": 0.5, "q_value": 0.5, "hit": False}, index=list("abc"))
    view = explorer.profiling_view(wells, ["f0", "f1", "f2"], np.ones(9, bool), TREATMENT, "Metadata_Plate", hits, consensus=consensus)
    note = view.notes[0]
    assert f"each treatment's {consensus} anomaly profile" in note
    assert all(f"{other} anomaly profile" not in note for other in {"mean", "median", "modz"} - {consensus})


def test_a_constant_replicate_gets_the_least_modz_weight_instead_of_a_nan_profile():
    from phenolens.profiling.moa import treatment_profiles

    varied = np.array([[1.0, 2.0, 3.0, 4.0], [1.5, 2.5, 2.9, 4.2]])
    wells = np.vstack([varied, np.full((1, 4), 7.0)])  # the third replicate is constant: its Spearman correlation is undefined
    profile = treatment_profiles(wells, np.array(["t", "t", "t"]), consensus="modz").to_numpy()[0]
    weights = np.round(np.array([1.0, 1.0, 0.01]) / 2.01, 4)  # the two varied replicates correlate perfectly by rank
    np.testing.assert_allclose(profile, weights @ wells)
