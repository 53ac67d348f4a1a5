"""Batch effects: sphering against pycytominer and numpy by hand, the adversarial representation, the label-free choice,
the same-batch neighbour rate, and every bad input the issue lists (one line each)."""

import json
import logging

import numpy as np
import pandas as pd
import pytest
from pycytominer.operations import Spherize

from phenolens.cli.main import run
from phenolens.core.errors import PhenolensError
from phenolens.profiling.adversarial import domain_accuracy, domain_codes
from phenolens.profiling.anomaly import ADVERSARIAL, ROLE_COLUMN, AnomalyProfiler
from phenolens.profiling.batch_effects import batch_neighbours, choose_by_replicates, replicate_scores
from phenolens.profiling.evaluate import core_scores, with_concatenation
from phenolens.profiling.inputs import ProfileColumns
from phenolens.profiling.moa import nearest_neighbor_moa
from phenolens.profiling.nested import nested_joint_accuracy, nested_neighbor_accuracy
from phenolens.profiling.replicates import replicate_map
from phenolens.profiling.settings import ProfilingSettings
from phenolens.profiling.sphering import Spherer
from phenolens.profiling.synthetic import synthetic_screen

CONTROLS = "Metadata_PertType == 'control'"
SMALL = {"max_epochs": 6, "patience": 3, "hidden": (16, 8), "latent": 4, "batch": "Metadata_Batch", "controls": CONTROLS}


def correlated(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * rng.uniform(0.5, 5, size=d) + rng.normal(size=d) * 10


@pytest.mark.parametrize("method", ["ZCA-cor", "ZCA", "PCA-cor", "PCA"])
@pytest.mark.parametrize(("n", "d", "epsilon"), [(60, 8, 1e-6), (60, 8, 2.0), (6, 10, 1e-6)])
def test_spherer_gives_pycytominers_numbers(method, n, d, epsilon):
    reference, other = correlated(n, d), correlated(9, d, seed=1)
    expected = Spherize(epsilon=epsilon, method=method, return_numpy=True).fit(pd.DataFrame(reference)).transform(pd.DataFrame(other))
    assert np.allclose(Spherer(method, epsilon).fit(reference).transform(other), expected, atol=1e-9)


def test_zca_is_the_inverse_square_root_of_the_control_covariance_by_hand():
    reference, other = correlated(80, 6), correlated(5, 6, seed=2)
    values, vectors = np.linalg.eigh(np.cov(reference, rowvar=False))
    by_hand = (other - reference.mean(axis=0)) @ vectors @ np.diag(values**-0.5) @ vectors.T
    assert np.allclose(Spherer("ZCA", 0.0).fit(reference).transform(other), by_hand, atol=1e-8)
    sphered = Spherer("ZCA-cor", 1e-9).fit(reference).transform(reference)
    assert np.allclose(np.cov(sphered, rowvar=False), np.eye(6), atol=1e-6)  # identity covariance and correlation
    assert np.allclose(np.corrcoef(sphered, rowvar=False), np.eye(6), atol=1e-6)


def test_per_batch_sphering_whitens_every_batch_on_its_own_controls():
    reference = np.vstack([correlated(40, 5, seed=3), correlated(40, 5, seed=4) * 3])
    groups = np.repeat(["B1", "B2"], 40)
    spherer = Spherer("ZCA-cor", 1e-9).fit(reference, groups)
    sphered = spherer.transform(reference, groups)
    for group in ("B1", "B2"):
        assert np.allclose(np.corrcoef(sphered[groups == group], rowvar=False), np.eye(5), atol=1e-6)
    global_ = Spherer("ZCA-cor", 1e-9).fit(reference).transform(reference)
    assert not np.allclose(np.corrcoef(global_[groups == "B1"], rowvar=False), np.eye(5), atol=0.05)


def test_plate_centred_controls_are_regularised_with_a_warning_where_pycytominer_refuses(caplog):
    """Two controls on each of 20 plates, centred per plate: 40 rows spanning 20 of 50 directions."""
    rows = correlated(40, 50)
    plates = np.repeat(np.arange(20), 2)
    centred = rows - pd.DataFrame(rows).groupby(plates).transform("mean").to_numpy()
    with pytest.raises(ValueError, match="rank should be n - 1 or n"):
        Spherize(epsilon=1e-6, method="ZCA", return_numpy=True).fit(pd.DataFrame(centred))
    with caplog.at_level(logging.WARNING, logger="phenolens"):
        spherer = Spherer("ZCA", 1e-6, source="cellprofiler").fit(centred)
    assert spherer.ranks_["all"] == 20 and spherer.regularised_groups_ == ["all"]
    assert "cellprofiler: 40 control wells span 20 of 50 feature directions" in caplog.text
    eigenvalues = np.sort(np.linalg.eigvalsh(np.cov(spherer.transform(centred), rowvar=False)))
    assert np.allclose(eigenvalues[-20:], 1.0, atol=1e-4) and np.allclose(eigenvalues[:30], 0.0, atol=1e-8)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Spherer("ZCA", 0.0, source="anomaly").fit(correlated(5, 8)), "needs at least 9 independent control wells"),
        (lambda: Spherer("ZCA-cor").fit(np.hstack([correlated(20, 3), np.ones((20, 1))])), "feature 3 is constant over the 20 control wells"),
        (lambda: Spherer("ZCA").fit(correlated(20, 3), ["B1"] * 19 + ["B2"]), "at least 2 control wells of batch 'B2', found 1"),
        (lambda: Spherer("ZCA").fit(correlated(20, 3), ["B1"] * 20).transform(correlated(2, 3), ["B1", "B9"]), "batch 'B9' had no control wells"),
        (lambda: Spherer("ZCA").fit(correlated(20, 3)).transform(correlated(2, 4)), "fitted on 3 features, got 4"),
        (lambda: Spherer("whitening").fit(correlated(20, 3)), "choose one of ZCA-cor, ZCA, PCA-cor, PCA"),
        (lambda: Spherer("ZCA").fit(np.ones((5, 3))), "are all the same"),
        (lambda: domain_codes(np.array(["Week1"] * 4), "Metadata_Batch"), "adversary column 'Metadata_Batch' has one value"),
        (lambda: ProfilingSettings(controls=CONTROLS, sphering="batch").check_batch_column(), r"sphering \(--sphering\).*needs a batch column"),
        (lambda: ProfilingSettings(controls=CONTROLS, adversary="batch").check_batch_column(), r"adversary \(--adversary\).*needs a batch column"),
        (lambda: ProfilingSettings(controls=CONTROLS, adversary="well"), "choose one of none, batch, plate"),
        (lambda: ProfilingSettings(controls=CONTROLS, sphering_epsilon=-1), "must be >= 0"),
    ],
)
def test_bad_inputs_are_one_line_errors(make, message):
    with pytest.raises(PhenolensError, match=message) as caught:
        make()
    assert "\n" not in str(caught.value)


@pytest.fixture(scope="module")
def screen():
    return synthetic_screen(plates=6, controls_per_plate=20, replicates=2, features=12, batches=3, seed=0)


@pytest.fixture(scope="module")
def fitted(screen):
    profiler = AnomalyProfiler(ProfilingSettings(**SMALL, sphering="global", adversary="batch", sphering_epsilon=1.0))
    return profiler, profiler.fit_transform(screen)


def test_adversarial_and_sphered_representations_train_on_a_tiny_table(screen, fitted):
    profiler, representations = fitted
    names = ["cellprofiler", "anomaly", ADVERSARIAL, "cellprofiler_sphered", "anomaly_sphered", f"{ADVERSARIAL}_sphered"]
    assert list(representations) == names
    features = profiler.selected_features_
    for frame in representations.values():
        assert len(frame) == len(screen) and np.isfinite(frame[features].to_numpy()).all()
    train = (representations["cellprofiler"][ROLE_COLUMN] == "train").to_numpy()
    before, after = (
        np.linalg.eigvalsh(np.corrcoef(representations[name].loc[train, features], rowvar=False)) for name in ("cellprofiler", "cellprofiler_sphered")
    )
    assert before.max() > 4 and after.max() < 2  # the training controls are decorrelated (epsilon 1 keeps it from exact)
    assert not np.allclose(representations[ADVERSARIAL][features], representations["anomaly"][features])
    accuracy = profiler.domain_accuracy_
    assert accuracy["column"] == "Metadata_Batch" and accuracy["anomaly"]["chance"] == pytest.approx(1 / 3)
    again = profiler.transform(screen)
    treated = (screen["Metadata_PertType"] == "trt").to_numpy()
    for name in names:
        assert np.allclose(again[name].loc[treated, features], representations[name].loc[treated, features])
    combined = with_concatenation(representations, ProfileColumns(controls=CONTROLS))
    assert list(combined)[-2:] == ["concatenation", "concatenation_sphered"]
    assert combined["concatenation_sphered"].filter(like="__").shape[1] == 3 * len(features)


def test_the_adversary_flips_the_encoders_gradient(screen):
    """lambda 0 is the plain autoencoder (same seed, same weights); a strong adversary changes the encoder."""
    plain = AnomalyProfiler(ProfilingSettings(**SMALL, adversary="batch", adversary_lambda=0.0)).fit(screen)
    strong = AnomalyProfiler(ProfilingSettings(**SMALL, adversary="batch", adversary_lambda=5.0)).fit(screen)
    encoder = [p.detach() for p in plain.adversary_.model.autoencoder.encoder.parameters()]
    assert not all(np.allclose(a, b.detach()) for a, b in zip(encoder, strong.adversary_.model.autoencoder.encoder.parameters()))
    assert len(plain.adversary_.domain_losses) > 0 and plain.adversary_.domains == ["B0", "B1", "B2"]


def test_domain_accuracy_finds_a_domain_and_chance_without_one():
    rng = np.random.default_rng(0)
    domains = np.repeat(["a", "b", "c"], 30)
    codes = rng.normal(size=(90, 4))
    assert domain_accuracy(codes, domains)["balanced_accuracy"] < 0.6
    codes[:, 0] += np.repeat([0.0, 5.0, 10.0], 30)
    assert domain_accuracy(codes, domains)["balanced_accuracy"] > 0.95


def test_same_batch_neighbour_rate_known_answers():
    rng = np.random.default_rng(1)
    plates = np.repeat([f"P{i}" for i in range(6)], 5)
    batches = np.repeat(["B1", "B2", "B3"], 10)
    noise = rng.normal(size=(30, 20))
    columns = ProfileColumns(controls=CONTROLS, batch="Metadata_Batch")

    def frame(values):
        table = pd.DataFrame(values, columns=[f"f{i}" for i in range(20)])
        return table.assign(Metadata_Plate=plates, Metadata_Batch=batches, Metadata_PertType="control")

    separated = batch_neighbours(frame(noise + np.repeat(rng.normal(size=(3, 20)) * 10, 10, axis=0)), columns)
    assert separated.loc["all", "same_batch_neighbour"] == 1.0
    assert separated.loc["all", "chance"] == pytest.approx(5 / 25)  # 5 same-batch controls on the other plate of 25 candidates
    assert separated.loc["B1", ["plates", "control_wells"]].tolist() == [2, 10]
    assert batch_neighbours(frame(noise), columns).loc["all", "same_batch_neighbour"] < 0.5


def test_choice_reads_replicate_map_never_nsc():
    scores = pd.DataFrame(
        {
            "correction": ["none", "a", "b", "c"],
            "map": [0.4, 0.6, 0.6, 0.5],
            "percent_replicating": [0.9, 0.8, 0.85, 1.0],
            "nsc": [1.0, 0.1, 0.2, 0.9],
        }
    )
    assert choose_by_replicates(scores)["correction"] == "b"
    assert choose_by_replicates(scores.assign(nsc=scores["nsc"][::-1].to_numpy()))["correction"] == "b"
    within = scores.assign(map_within_batch=[0.5, 0.1, 0.2, 0.3])
    assert choose_by_replicates(within)["correction"] == "none"  # within batch, when measured, outranks plain mAP
    with pytest.raises(PhenolensError, match="no candidate"):
        choose_by_replicates(scores.iloc[:0])


def test_a_batch_signature_raises_map_but_not_map_within_batch():
    """Replicates share a batch; adding a batch-wide offset makes them retrievable among all wells, not within their batch."""
    rng = np.random.default_rng(3)
    treatments = np.repeat(np.arange(24), 2).astype(str)
    batches = np.repeat(["B1", "B2", "B3", "B4"], 12)
    noise = rng.normal(size=(48, 30))
    signature = noise + np.repeat(rng.normal(size=(4, 30)) * 3, 12, axis=0)
    plain = [replicate_map(v, treatments, null_size=100).mean_average_precision for v in (noise, signature)]
    within = [replicate_map(v, treatments, null_size=100, negatives_within=batches).mean_average_precision for v in (noise, signature)]
    assert plain[1] > plain[0] + 0.15
    assert within[1] == pytest.approx(within[0], abs=0.05)


def test_replicate_scores_agree_with_the_evaluation_and_fall_without_replicates(fitted):
    settings = ProfilingSettings(**SMALL, treatment="Metadata_Treatment", map_null_size=100)
    frame = fitted[1]["cellprofiler_sphered"]
    scores = replicate_scores(frame, settings)
    assert scores["percent_replicating"] == core_scores(frame, settings, settings)["percent_replicating"]
    assert 0 < scores["map_within_batch"] <= 1
    shuffled = frame.copy()
    treated = (frame["Metadata_PertType"] == "trt").to_numpy()
    shuffled.loc[treated, "Metadata_Treatment"] = np.random.default_rng(0).permutation(frame.loc[treated, "Metadata_Treatment"].to_numpy())
    assert replicate_scores(shuffled, settings)["map"] < scores["map"] - 0.2


def test_cli_run_reports_batch_effects_and_refuses_a_one_valued_adversary_column(tmp_path, capsys):
    table = synthetic_screen(plates=6, controls_per_plate=20, moas=2, compounds_per_moa=5, doses=2, features=12, effect=8.0, seed=1)
    path = tmp_path / "screen.csv"
    table.to_csv(path, index=False)
    options = ["--controls", CONTROLS, "--treatment-column", "Metadata_Treatment", "--moa-column", "Metadata_MoA"]
    options += ["--compound-column", "Metadata_Compound", "--batch-column", "Metadata_Batch", "--max-epochs", "3", "--moa-repeats", "1"]
    options += ["--classifiers", "lr", "--jobs", "1", "--no-curve", "--explain-features", "0"]
    out = tmp_path / "run"
    batch = ["--sphering", "batch", "--sphering-epsilon", "1", "--adversary", "plate", "--adversary-lambda", "0.5"]
    assert run(["profile", "run", str(path), *options, *batch, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    correction = metrics["batch_correction"]
    assert correction["sphering"]["variant"] == "batch" and correction["adversary"]["domain"] == "plate"
    assert correction["adversary"]["column"] == "Metadata_Plate"
    assert "replicate mAP" in correction["hyperparameters"] and "NSC/NSCB are not consulted" in correction["hyperparameters"]
    assert "leave-one-compound-out" in correction["hyperparameters"]
    assert set(correction["same_batch_neighbour"]) >= {"cellprofiler", "cellprofiler_sphered", ADVERSARIAL, "concatenation_sphered"}
    assert metrics[f"{ADVERSARIAL}_sphered"]["nsc_accuracy"] is not None
    report = (out / "report.html").read_text()
    assert "Batch effects: before and after correction" in report and "latent code" in report
    assert (out / "figures" / "run_batch_maps.png").exists() or "run_batch_maps" in report
    one_batch = table.assign(Metadata_Batch="Week1")
    one_batch.to_csv(tmp_path / "one.csv", index=False)
    adversary = ["--adversary", "batch", "--out", str(tmp_path / "one")]
    assert run(["profile", "run", str(tmp_path / "one.csv"), *options, *adversary]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "adversary column 'Metadata_Batch' has one value ('Week1')" in error[0]
    assert not (tmp_path / "one").exists()


def nested_inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    index = [f"t{i}" for i in range(40)]
    moa = pd.Series(rng.integers(0, 4, 40).astype(str), index=index)
    compound = pd.Series([f"c{i // 2}" for i in range(40)], index=index)
    batch = pd.Series([f"b{i % 3}" for i in range(40)], index=index)
    noise = pd.DataFrame(rng.normal(size=(40, 10)), index=index)
    signal = noise.copy()
    signal[0] += moa.astype(int).to_numpy() * 3
    return noise, signal, moa, compound, batch


@pytest.mark.parametrize("with_batch", [False, True])
def test_nested_choice_of_one_candidate_is_plain_nsc_and_it_finds_the_informative_one(with_batch):
    noise, signal, moa, compound, batch = nested_inputs()
    batch = batch if with_batch else None
    assert nested_neighbor_accuracy({"noise": noise}, moa, compound, batch).accuracy == nearest_neighbor_moa(noise, moa, compound, batch).accuracy
    result = nested_neighbor_accuracy({"noise": noise, "signal": signal}, moa, compound, batch)
    assert set(result.chosen) == {"signal"} and len(result.chosen) == 20
    assert result.accuracy == nearest_neighbor_moa(signal, moa, compound, batch).accuracy
    assert result.predictions["chosen"].eq("signal").all()


def test_nested_choice_never_sees_the_held_out_compound():
    """A candidate that differs only in compound c0's profiles, which it gets right, is not chosen for c0: without c0
    the two candidates tie (the first wins), while choosing on everything would take it."""
    noise, signal, moa, compound, _ = nested_inputs(1)
    lucky = noise.copy()
    for treatment in ["t0", "t1"]:
        twin = moa.index[(moa == moa[treatment]) & (compound != "c0")][0]
        lucky.loc[treatment] = noise.loc[twin] + 1e-3
    assert nearest_neighbor_moa(lucky, moa, compound).predictions.loc[["t0", "t1"], "correct"].all()
    assert not nearest_neighbor_moa(noise, moa, compound).predictions.loc[["t0", "t1"], "correct"].all()
    result = nested_neighbor_accuracy({"noise": noise, "lucky": lucky}, moa, compound)
    assert result.chosen["c0"] == "noise"
    assert (
        result.predictions.loc[["t0", "t1"], "correct"].tolist()
        == nearest_neighbor_moa(noise, moa, compound).predictions.loc[["t0", "t1"], "correct"].tolist()
    )
    with pytest.raises(PhenolensError, match="same treatments"):
        nested_neighbor_accuracy({"a": noise, "b": signal.iloc[::-1]}, moa, compound)
    with pytest.raises(PhenolensError, match="two or more compounds"):
        nested_neighbor_accuracy({"a": noise}, moa, compound.where(compound == "c0", "c0"))


@pytest.mark.parametrize("combine", ["mean", "min"])
def test_joint_nested_choice_takes_one_candidate_for_nsc_and_nscb(combine):
    """`nsc_only` finds the MoA within batches (NSC 0.9) but its batches sit apart (NSCB 0.15); `both` is weaker
    within batches and holds across them (0.6 / 0.625): separate choices take one each, the joint choice takes one
    candidate per compound for both, mostly `both`, and judges each compound's treatments with it."""
    noise, _, moa, compound, batch = nested_inputs()
    moa_code, batch_code = moa.astype(int).to_numpy(), batch.str[1:].astype(int).to_numpy()
    nsc_only = noise * 0.3
    nsc_only[0], nsc_only[1], nsc_only[2] = moa_code * 3.0, batch_code * 4.0, (moa_code * 7 + batch_code * 3) % 5 * 2.0
    both = noise * 0.6
    both[0] = moa_code * 3.0
    candidates = {"nsc_only": nsc_only, "both": both}
    options = {"similarity": "cosine", "criterion": "map"}
    assert set(nested_neighbor_accuracy(candidates, moa, compound, **options).chosen) == {"nsc_only"}
    assert set(nested_neighbor_accuracy(candidates, moa, compound, batch, **options).chosen) == {"both"}
    joint = nested_joint_accuracy(candidates, moa, compound, batch, combine=combine, **options)
    assert joint["nsc"].chosen.equals(joint["nscb"].chosen) and (joint["nsc"].chosen == "both").sum() >= 18
    for kind, with_batch in (("nsc", None), ("nscb", batch)):
        hits = {
            name: nearest_neighbor_moa(frame, moa, compound, with_batch, similarity="cosine").predictions["correct"]
            for name, frame in candidates.items()
        }
        want = [hits[name][treatment] for treatment, name in joint[kind].predictions["chosen"].items()]
        assert joint[kind].predictions["correct"].tolist() == want
    one = nested_joint_accuracy({"noise": noise}, moa, compound, batch)
    assert one["nscb"].accuracy == nearest_neighbor_moa(noise, moa, compound, batch).accuracy
    with pytest.raises(PhenolensError, match="combination 'max' is unknown"):
        nested_joint_accuracy(candidates, moa, compound, batch, combine="max")


def test_batch_neighbours_in_blocks_equal_all_pairs_at_once(monkeypatch):
    """The nearest other-plate control is found a block of controls at a time (a study has tens of thousands); the
    answer equals the all-pairs one computed here, and chance counts same-batch candidates on other plates."""
    rng = np.random.default_rng(0)
    plates = rng.integers(0, 12, 300)
    frame = pd.DataFrame(rng.normal(size=(300, 6)), columns=[f"f{i}" for i in range(6)])
    frame.insert(0, "Metadata_Plate", plates.astype(str))
    frame.insert(0, "Metadata_Batch", (plates % 3).astype(str))
    frame.insert(0, "Metadata_Type", "control")
    columns = ProfileColumns(controls="Metadata_Type == 'control'", plate="Metadata_Plate", batch="Metadata_Batch")
    values = frame[[f"f{i}" for i in range(6)]].to_numpy()
    centred = values - values.mean(axis=1, keepdims=True)
    unit = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    similarity = np.where(plates[:, None] == plates[None, :], -np.inf, unit @ unit.T)
    batch = plates % 3
    expected_hit = np.mean(batch[np.argmax(similarity, axis=1)] == batch)
    other = plates[:, None] != plates[None, :]
    expected_chance = np.mean(((batch[:, None] == batch[None, :]) & other).sum(axis=1) / other.sum(axis=1))
    whole = batch_neighbours(frame, columns)
    monkeypatch.setattr("phenolens.profiling.batch_effects.CHUNK_BYTES", 8 * 300 * 7)  # blocks of 7 controls
    blocks = batch_neighbours(frame, columns)
    pd.testing.assert_frame_equal(whole, blocks)
    assert whole.loc["all", "same_batch_neighbour"] == pytest.approx(expected_hit, abs=1e-12)
    assert whole.loc["all", "chance"] == pytest.approx(expected_chance, abs=1e-12)
    assert whole.loc["all", "control_wells"] == 300 and whole.loc["all", "plates"] == 12


def test_a_constant_control_profile_is_nobodys_nearest_neighbour():
    """np.argmax takes NaN for the largest value, so one constant control well (NaN correlation with everything) was every
    other control's nearest neighbour: the same-batch rate of the other batches became 0 (1.0 without it)."""
    rng = np.random.default_rng(1)
    plates = np.repeat([f"P{i}" for i in range(6)], 5)
    batches = np.repeat(["B1", "B2", "B3"], 10)
    values = rng.normal(size=(30, 20)) + np.repeat(rng.normal(size=(3, 20)) * 10, 10, axis=0)
    values[0] = 1.0
    table = pd.DataFrame(values, columns=[f"f{i}" for i in range(20)])
    table = table.assign(Metadata_Plate=plates, Metadata_Batch=batches, Metadata_PertType="control")
    result = batch_neighbours(table, ProfileColumns(controls=CONTROLS, batch="Metadata_Batch"))
    assert (result["same_batch_neighbour"] == 1.0).all()
    assert result.loc["B1", "control_wells"] == 9  # the constant well is left out, as mAP and percent replicating leave it out
