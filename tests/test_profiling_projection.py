"""The reference-supervised MoA projection (`--moa-projection lda`): sklearn's LDA, never fitted on the held-out compound."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from phenolens.cli.main import run
from phenolens.core.errors import PhenolensError
from phenolens.core.estimators import NotFittedError
from phenolens.core.runs import load_run
from phenolens.profiling.evaluate import evaluate_tables
from phenolens.profiling.moa import nearest_neighbor_moa, treatment_profiles
from phenolens.profiling.projection import DiscriminantProjection, leave_one_compound_out_neighbors
from phenolens.profiling.settings import ProfileEvaluationSettings
from phenolens.profiling.synthetic import synthetic_screen

COLUMNS = {
    "controls": "Metadata_PertType == 'control'",
    "treatment": "Metadata_Treatment",
    "moa": "Metadata_MoA",
    "compound": "Metadata_Compound",
    "batch": "Metadata_Batch",
}


def wells(moas=4, compounds_per_moa=3, doses=2, replicates=3, features=30, moa_signal=1.0, compound_signal=0.0, batch_offset=0.0, seed=0):
    """Treated wells: MoA signal in the first `moas` features (one each), a batch offset in the others; every compound in one of 3 batches,
    each MoA in two of them (its last compound in the next batch); returns (values, well treatments, per-treatment meta with
    moa, compound, batch)."""
    rng = np.random.default_rng(seed)
    compounds = moas * compounds_per_moa
    compound_moa = np.repeat(np.arange(moas), compounds_per_moa)
    compound_batch = (compound_moa + (np.arange(compounds) % compounds_per_moa == compounds_per_moa - 1)) % 3
    moa_direction = moa_signal * np.eye(moas, features)  # MoA m moves feature m
    batch_direction = np.zeros((3, features))
    batch_direction[:, moas:] = batch_offset * rng.normal(size=(3, features - moas))
    compound_direction = compound_signal * rng.normal(size=(compounds, features))
    treatment_compound = np.repeat(np.arange(compounds), doses)
    well_treatment = np.repeat(np.arange(compounds * doses), replicates)
    well_compound = treatment_compound[well_treatment]
    values = (
        moa_direction[compound_moa[well_compound]]
        + batch_direction[compound_batch[well_compound]]
        + compound_direction[well_compound]
        + 0.3 * rng.normal(size=(len(well_treatment), features))
    )
    names = np.array([f"cpd{c}@{d}" for c, d in zip(treatment_compound, np.tile(np.arange(doses), compounds))])
    meta = pd.DataFrame(
        {
            "moa": [f"moa{m}" for m in compound_moa[treatment_compound]],
            "compound": [f"cpd{c}" for c in treatment_compound],
            "batch": [f"b{b}" for b in compound_batch[treatment_compound]],
        },
        index=names,
    ).sort_index()
    return values, names[well_treatment], meta


def test_projection_is_sklearns_lda_and_clones():
    values, treatments, meta = wells()
    labels = meta["moa"].loc[treatments].to_numpy()
    projection = DiscriminantProjection().fit(values, labels)
    expected = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto").fit(values, labels).transform(values)
    np.testing.assert_allclose(projection.transform(values), expected, rtol=1e-10, atol=1e-12)
    assert projection.n_components_ == 3 and list(projection.classes_) == ["moa0", "moa1", "moa2", "moa3"]
    copy = clone(projection)
    assert copy.get_params() == {"shrinkage": "auto"} and not hasattr(copy, "lda_")
    with pytest.raises(NotFittedError):
        copy.transform(values)
    with pytest.raises(PhenolensError, match="two or more classes; found 1"):
        DiscriminantProjection().fit(values, np.zeros(len(values)))
    broken = values.copy()
    broken[0, 0] = np.nan
    with pytest.raises(PhenolensError, match="missing or infinite"):
        DiscriminantProjection().fit(broken, labels)


class RecordingProjection(DiscriminantProjection):
    """A DiscriminantProjection that records the rows of every fit (clones share the class-level list)."""

    fits: list = []

    def fit(self, X, y):
        RecordingProjection.fits.append(np.asarray(X).copy())
        return super().fit(X, y)


def test_the_held_out_compound_is_never_in_a_fit():
    values, treatments, meta = wells(seed=1)
    values[:, -1] = np.arange(len(values))  # a well id, to tell which wells each fit saw
    RecordingProjection.fits = []
    results = leave_one_compound_out_neighbors(values, treatments, meta, projection=RecordingProjection())
    well_compound = meta["compound"].loc[treatments].to_numpy()
    compounds = sorted(set(well_compound))
    assert len(RecordingProjection.fits) == len(compounds)  # one fit per held-out compound
    for fitted in RecordingProjection.fits:
        seen = set(well_compound[fitted[:, -1].astype(int)])
        assert len(seen) == len(compounds) - 1  # every compound but one
    held_out = [next(iter(set(compounds) - set(well_compound[f[:, -1].astype(int)]))) for f in RecordingProjection.fits]
    assert sorted(held_out) == compounds
    assert results["nsc"].evaluated == len(meta)


def test_a_leaked_compound_would_be_matched_but_the_nested_loop_does_not_leak():
    # No shared MoA signal at all; every compound has its own large offset. A projection fitted with the held-out
    # compound's wells and MoA can separate the (few) compounds into their MoA classes, so its NSC is high; a projection
    # that never saw the compound has nothing to go on: NSC near chance (1 in 4).
    values, treatments, meta = wells(moas=4, compounds_per_moa=3, moa_signal=0.0, compound_signal=3.0, features=40, seed=2)
    nested = leave_one_compound_out_neighbors(values, treatments, meta)["nsc"].accuracy
    leaked = DiscriminantProjection().fit(values, meta["moa"].loc[treatments].to_numpy())
    leaky_profiles = treatment_profiles(leaked.transform(values), treatments)
    leaky = nearest_neighbor_moa(leaky_profiles, meta["moa"], meta["compound"], similarity="cosine").accuracy
    assert leaky >= 0.9, leaky
    assert nested <= 0.5, nested


def test_projection_raises_nscb_over_raw_when_the_batch_dominates():
    # MoA signal in 4 features, a batch offset 3x larger in the other 26: raw cosine neighbours across batches are decided by
    # which other batch's offset is closest, and that batch may hold no compound of the query's MoA; the MoA of the other
    # compounds (each MoA spans two batches) teaches the projection that the offsets vary within a MoA.
    values, treatments, meta = wells(moas=4, compounds_per_moa=3, moa_signal=2.0, batch_offset=6.0, seed=3)
    raw = nearest_neighbor_moa(
        treatment_profiles(values, treatments), meta["moa"], meta["compound"], meta["batch"], similarity="cosine", drop_unevaluable_moas=True
    )
    projected = leave_one_compound_out_neighbors(values, treatments, meta)
    assert raw.accuracy <= 0.5, raw.accuracy
    assert projected["nscb"].accuracy >= 0.9 and projected["nscb"].evaluated == raw.evaluated == len(meta)
    assert projected["nsc"].accuracy >= 0.9


def test_bad_moa_annotations_fail_in_one_line():
    values, treatments, meta = wells()
    one_moa = meta.assign(moa="moa0")
    with pytest.raises(PhenolensError, match=r"--moa-projection: needs treated wells of two or more MoAs to learn from; found only 'moa0'"):
        leave_one_compound_out_neighbors(values, treatments, one_moa)
    lonely = meta.assign(compound=meta["moa"])  # one compound per MoA: nothing to match a held-out compound against
    with pytest.raises(PhenolensError, match="each MoA needs 2\\+ compounds"):
        leave_one_compound_out_neighbors(values, treatments, lonely)
    broken = values.copy()
    broken[treatments == treatments[0]] = np.nan  # every well of one treatment missing
    with pytest.raises(PhenolensError, match="--moa-projection: 3 treated well\\(s\\) hold missing or infinite values"):
        leave_one_compound_out_neighbors(broken, treatments, meta)
    with pytest.raises(PhenolensError, match="has wells but no MoA/compound row"):
        leave_one_compound_out_neighbors(values, treatments, meta.iloc[1:])


def screen() -> pd.DataFrame:
    return synthetic_screen(plates=6, controls_per_plate=8, moas=3, compounds_per_moa=3, doses=2, features=16, effect=3.0, seed=1)


def test_evaluate_reports_the_projection_as_its_own_figures():
    fast = {"moa_repeats": 1, "classifiers": ("lr",), "jobs": 1, "map_null_size": 100}
    plain, _ = evaluate_tables(screen(), ProfileEvaluationSettings(**COLUMNS, **fast), "screen")
    _, metrics = evaluate_tables(screen(), ProfileEvaluationSettings(**COLUMNS, **fast, moa_projection="lda"), "screen")
    scores = metrics["features"]
    assert "nsc_field_accuracy_lda" not in plain.metrics["features"]
    assert scores["nsc_field_treatments_lda"] == scores["nsc_treatments"] == 18 and 0 <= scores["nscb_field_accuracy_lda"] <= 1
    assert scores["nsc_field_accuracy"] == plain.metrics["features"]["nsc_field_accuracy"]  # the plain figures are untouched
    assert any("MoA annotations of the OTHER compounds" in note for note in metrics["notes"])
    with pytest.raises(PhenolensError, match=r"moa_projection \(--moa-projection\) = 'lda'.*give --moa-column"):
        evaluate_tables(screen(), ProfileEvaluationSettings(**{**COLUMNS, "moa": None}, **fast, moa_projection="lda"), "screen")


def test_annotations_the_projection_cannot_learn_from_leave_a_note_and_the_other_results():
    """As for the plain NSC/NSCB: a run that has done its work is not lost at the last step for the projection's sake."""
    fast = {"moa_repeats": 1, "classifiers": ("lr",), "jobs": 1, "map_null_size": 100}
    one_moa = screen().assign(Metadata_MoA=lambda frame: frame["Metadata_MoA"].where(frame["Metadata_MoA"].isna(), "moa0"))
    evaluation, metrics = evaluate_tables(one_moa, ProfileEvaluationSettings(**COLUMNS, **fast, moa_projection="lda"), "screen")
    scores = metrics["features"]
    assert scores["nsc_field_accuracy_lda"] is None and scores["nscb_field_accuracy_lda"] is None
    assert "percent_replicating" in scores
    assert any("not evaluated" in note and "two or more MoAs" in note for note in metrics["notes"])


def test_cli_option_end_to_end(tmp_path, capsys):
    path = tmp_path / "screen.csv"
    screen().to_csv(path, index=False)
    options = [f"--{name}-column" if name != "controls" else "--controls" for name in COLUMNS]
    arguments = [item for option, value in zip(options, COLUMNS.values()) for item in (option, value)]
    fast = ["--moa-repeats", "1", "--classifiers", "lr", "--jobs", "1"]
    out = tmp_path / "evaluated"
    assert run(["profile", "evaluate", str(path), *arguments, *fast, "--moa-projection", "lda", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["features"]["nsc_field_treatments_lda"] == 18 and metrics["features"]["nscb_field_accuracy_lda"] is not None
    assert load_run(out).settings[0].moa_projection == "lda"
    assert run(["profile", "evaluate", str(path), *arguments, "--moa-projection", "qda", "--out", str(tmp_path / "bad")]) == 2
    assert "--moa-projection" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_streamed_study_refuses_the_projection_in_one_line():
    from phenolens.profiling.settings import ProfilingSettings
    from phenolens.profiling.study import profile_study

    with pytest.raises(PhenolensError, match=r"\(--moa-projection\) = 'lda': needs the whole table in memory"):
        profile_study([], ProfilingSettings(**COLUMNS, moa_projection="lda"), "study", run=None)
