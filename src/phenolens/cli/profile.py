"""`phenolens profile run | evaluate | explain`: anomaly-based profiling of well-level profile tables."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="Anomaly-based profiling: representations, reproducibility, MoA, hits, explanations.", no_args_is_help=True)

FILES = typer.Argument(None, help="Well-level profile tables (csv, csv.gz, parquet), Metadata_* columns + numeric features.")
DATASET = typer.Option(None, "--dataset", help="Built-in dataset instead of FILES: bbbc021 or lincs-plate (sets the column options).")
CONTROLS = typer.Option(None, "--controls", help="pandas query selecting negative-control wells, e.g. \"Metadata_pert_type == 'control'\".")
PLATE = typer.Option(None, "--plate-column", help="Plate column [Metadata_Plate].")
TREATMENT = typer.Option(None, "--treatment-column", help="Treatment column (replicate wells share it).")
MOA = typer.Option(None, "--moa-column", help="Mechanism-of-action column (optional).")
BATCH = typer.Option(None, "--batch-column", help="Batch column (optional; enables NSCB).")
COMPOUND = typer.Option(None, "--compound-column", help="Compound column grouping a compound's concentrations [treatment column].")
POSITIVE = typer.Option(None, "--positive-controls", help="pandas query selecting positive-control wells (adds Z'-factors).")
OUT = typer.Option(..., "--out", help="Output folder.")
SEED = typer.Option(0, "--seed", help="Seed of every random step (same seed, same metrics).")
REPEATS = typer.Option(10, "--moa-repeats", help="Repeats of the nested-CV MoA classifiers.")
JOBS = typer.Option(2, "--jobs", help="Processes for the MoA classifiers (results do not depend on it).")
CLASSIFIERS = typer.Option("lr,mlp", "--classifiers", help="Comma-separated MoA classifiers: lr, mlp.")
NORMALIZATION = typer.Option("whole_plate", "--replicate-normalization", help="whole_plate (default) or none, before replicate metrics.")


def _columns(dataset, controls, plate, treatment, moa, batch, compound, positive):
    """Column meanings from a dataset preset, overridden by explicit options."""
    from phenolens.core.errors import PhenolensError
    from phenolens.profiling.inputs import DATASET_PRESETS, ProfileColumns

    if dataset:
        if dataset not in DATASET_PRESETS:
            raise PhenolensError(f"unknown dataset {dataset!r} for profiling; choose one of {', '.join(DATASET_PRESETS)}")
        base = DATASET_PRESETS[dataset][1]
    elif not controls or not treatment:
        raise PhenolensError("give --dataset, or --controls and --treatment-column for your own tables")
    else:
        base = ProfileColumns(controls=controls)
    options = {"controls": controls, "plate": plate, "treatment": treatment, "moa": moa, "batch": batch, "compound": compound}
    chosen = {key: value for key, value in options.items() if value}
    return ProfileColumns(**{**base.__dict__, **chosen, "positive_controls": positive or base.positive_controls})


def _evaluation_settings(moa_repeats: int, classifiers: str, replicate_normalization: str, seed: int, jobs: int):
    from phenolens.profiling.evaluate import EvaluationSettings

    chosen = tuple(c.strip() for c in classifiers.split(",") if c.strip())
    return EvaluationSettings(moa_repeats=moa_repeats, classifiers=chosen, replicate_normalization=replicate_normalization, seed=seed, jobs=jobs)


def _table(files, dataset, columns):
    from phenolens.core.errors import PhenolensError
    from phenolens.data import load, read_profiles
    from phenolens.profiling.inputs import DATASET_PRESETS

    if files and dataset:
        raise PhenolensError("give either FILES or --dataset, not both")
    if dataset:
        return load(DATASET_PRESETS[dataset][0]), dataset
    if not files:
        raise PhenolensError("no input: give profile FILES or --dataset")
    return read_profiles(files, required_metadata=(columns.plate,)), ", ".join(map(str, files))


@app.command()
def run(
    files: list[Path] = FILES,
    dataset: str = DATASET,
    controls: str = CONTROLS,
    plate_column: str = PLATE,
    treatment_column: str = TREATMENT,
    moa_column: str = MOA,
    batch_column: str = BATCH,
    compound_column: str = COMPOUND,
    positive_controls: str = POSITIVE,
    out: Path = OUT,
    seed: int = SEED,
    search: int = typer.Option(0, "--search", help="Random hyper-parameter search trials (0 = defaults, no search)."),
    scale_pooling: str = typer.Option("all", "--scale-pooling", help="Pool the per-feature spread over: plate, batch or all plates."),
    max_epochs: int = typer.Option(300, "--max-epochs", help="Autoencoder epoch limit (early stopping on validation controls)."),
    moa_repeats: int = REPEATS,
    classifiers: str = CLASSIFIERS,
    jobs: int = JOBS,
    replicate_normalization: str = NORMALIZATION,
    curve: bool = typer.Option(True, "--curve/--no-curve", help="Also train on 25% and 50% of the training controls (learning curve)."),
    explain_features: int = typer.Option(3, "--explain-features", help="Worst-reconstructed features explained with SHAP (0 = none)."),
) -> None:
    """Fit the anomaly profiler on control wells, evaluate cellprofiler / anomaly / concatenation, write OUT."""
    from phenolens.profiling.pipeline import RunSettings, run_profiling

    columns = _columns(dataset, controls, plate_column, treatment_column, moa_column, batch_column, compound_column, positive_controls)
    table, source = _table(files, dataset, columns)
    settings = RunSettings(
        profiler={"scale_pooling": scale_pooling, "search_trials": search, "max_epochs": max_epochs, "seed": seed},
        evaluation=_evaluation_settings(moa_repeats, classifiers, replicate_normalization, seed, jobs),
        explain_features=explain_features,
        curve_fractions=(0.25, 0.5) if curve else (),
    )
    result = run_profiling(table, columns, settings, source)
    write_run(result, columns, out, f"phenolens profile run: {source}")
    print(f"wrote {out / 'report.html'}")


def write_run(result, columns, out: Path, title: str) -> None:
    """profiles.parquet, model/, metrics.json, hits.csv, explanations.parquet, figures and report.html."""
    from phenolens.core.outputs import atomic_output_dir
    from phenolens.nn.weights import save_model

    with atomic_output_dir(out) as staging:
        save_model(result.profiler.model_, staging / "model", result.profiler.model_card(dataset=title))
        write_results(staging, result, columns, title)


def write_results(folder: Path, result, columns, title: str):
    """Write a run's tables, metrics and report into `folder`; return the report section."""
    import pandas as pd

    from phenolens.core.outputs import write_json
    from phenolens.profiling.evaluate import CONCATENATION, wide_table
    from phenolens.report.html import Report

    base = {name: frame for name, frame in result.representations.items() if name != CONCATENATION}
    wide_table(base, columns).to_parquet(folder / "profiles.parquet", index=False)
    pd.concat({name: hits for name, hits in result.evaluation.hits.items()}, names=["representation"]).to_csv(folder / "hits.csv")
    if result.explanations:
        explanations_table(result.explanations, result.explained_group).to_parquet(folder / "explanations.parquet", index=False)
    write_json(folder / "metrics.json", result.metrics)
    section = run_section(result, columns, title)
    report = Report(title, metrics=result.metrics)
    report.add(section)
    report.write(folder)
    return section


def run_section(result, columns, title: str):
    """The report section of a run, with the anomaly-score distributions of held-out controls and treated wells."""
    from phenolens.profiling.anomaly import ROLE_COLUMN
    from phenolens.profiling.evaluate import features_of
    from phenolens.profiling.hits import anomaly_score
    from phenolens.profiling.inputs import select_wells
    from phenolens.profiling.normalize import TEST
    from phenolens.report.profiling import profiling_section

    anomaly = result.representations["anomaly"]
    scores = anomaly_score(anomaly[features_of(anomaly, columns)].to_numpy())
    treated = ~select_wells(anomaly, columns.controls, "profiles")
    distributions = {"held-out control wells": scores[(anomaly[ROLE_COLUMN] == TEST).to_numpy()], "treated wells": scores[treated]}
    history = {key: result.profiler.history_.column(key) for key in ("train_loss", "val_loss")}
    return profiling_section(
        title, result.metrics, result.evaluation, result.explanations, result.explained_group, result.curve, history, distributions
    )


def explanations_table(explanations, group: str):
    """Long table: one row per (explained feature, well, input) with its oriented SHAP and input value."""
    import numpy as np
    import pandas as pd

    parts = []
    for explanation in explanations:
        wells, inputs = explanation.shap_values.shape
        parts.append(
            pd.DataFrame(
                {
                    "group": group,
                    "explained_feature": explanation.feature,
                    "well": np.repeat(np.arange(wells), inputs),
                    "input_feature": np.tile(explanation.input_names, wells),
                    "shap_value": explanation.shap_values.ravel(),
                    "input_value": explanation.input_values.ravel(),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


@app.command()
def evaluate(
    profiles: list[Path] = typer.Argument(..., help="profiles.parquet from `profile run`, or any profile tables (one representation)."),
    dataset: str = typer.Option(None, "--dataset", help="Take the column options of a built-in dataset (bbbc021, lincs-plate)."),
    controls: str = CONTROLS,
    plate_column: str = PLATE,
    treatment_column: str = TREATMENT,
    moa_column: str = MOA,
    batch_column: str = BATCH,
    compound_column: str = COMPOUND,
    positive_controls: str = POSITIVE,
    out: Path = OUT,
    seed: int = SEED,
    moa_repeats: int = REPEATS,
    classifiers: str = CLASSIFIERS,
    jobs: int = JOBS,
    replicate_normalization: str = NORMALIZATION,
) -> None:
    """Evaluate every representation in PROFILES: percent replicating, mAP, NSC/NSCB, MoA F1, hits."""
    from phenolens.core.outputs import atomic_output_dir, write_json
    from phenolens.data import read_profiles
    from phenolens.profiling.evaluate import evaluate, split_wide_table, with_concatenation
    from phenolens.report.html import Report
    from phenolens.report.profiling import profiling_section

    columns = _columns(dataset, controls, plate_column, treatment_column, moa_column, batch_column, compound_column, positive_controls)
    table = read_profiles(profiles, required_metadata=(columns.plate,))
    representations = with_concatenation(split_wide_table(table, columns), columns)
    evaluation = evaluate(representations, columns, _evaluation_settings(moa_repeats, classifiers, replicate_normalization, seed, jobs))
    metrics = {
        **evaluation.metrics,
        "reproducible_treatments": evaluation.venn,
        "notes": evaluation.notes,
        "settings": {"columns": columns.__dict__, "evaluation": evaluation.settings},
    }
    title = f"phenolens profile evaluate: {', '.join(map(str, profiles))}"
    with atomic_output_dir(out) as staging:
        write_json(staging / "metrics.json", metrics)
        report = Report(title, metrics=metrics)
        report.add(profiling_section(title, metrics, evaluation, [], "", None, None, None, prefix="evaluate"))
        report.write(staging)
    print(f"wrote {out / 'report.html'}")


@app.command()
def explain(
    run_dir: Path = typer.Argument(..., help="Output folder of `phenolens profile run`."),
    group: str = typer.Option(..., "--group", help="pandas query selecting the wells to explain, e.g. \"Metadata_MoA == 'Eg5 inhibitors'\"."),
    out: Path = OUT,
    features: int = typer.Option(3, "--features", help="How many worst-reconstructed features to explain."),
    nsamples: int = typer.Option(1000, "--nsamples", help="Kernel SHAP coalition samples per well."),
    background_size: int = typer.Option(20, "--background-size", help="Held-out control wells used as the SHAP background."),
    seed: int = SEED,
) -> None:
    """Autoencoder-anomaly SHAP for a group of wells of a finished run: beeswarms, values, report."""
    import pandas as pd

    from phenolens.core.errors import PhenolensError
    from phenolens.core.outputs import atomic_output_dir, write_json
    from phenolens.nn.weights import load_model
    from phenolens.profiling.anomaly import ROLE_COLUMN
    from phenolens.profiling.explain import explain_anomalies
    from phenolens.profiling.inputs import ProfileColumns, select_wells
    from phenolens.profiling.normalize import TEST
    from phenolens.report.html import Report, Section
    from phenolens.report.profiling import beeswarm_figure

    model, card = load_model(run_dir / "model", expected_architecture="profile_autoencoder")
    profiles_path, metrics_path = run_dir / "profiles.parquet", run_dir / "metrics.json"
    for path in (profiles_path, metrics_path):
        if not path.is_file():
            raise PhenolensError(f"{path}: missing; give the output folder of `phenolens profile run`")
    columns = ProfileColumns(**json.loads(metrics_path.read_text())["settings"]["columns"])
    table = pd.read_parquet(profiles_path)
    names = card.channel_names
    inputs = table[[f"cellprofiler__{n}" for n in names]].to_numpy(dtype="float32")
    anomaly = table[[f"anomaly__{n}" for n in names]].to_numpy()
    members = select_wells(table, group, str(profiles_path), "--group")
    if not members.any():
        raise PhenolensError(f"{profiles_path}: the group query {group!r} matches no well")
    background = (table[ROLE_COLUMN] == TEST).to_numpy()
    explanations = explain_anomalies(model, inputs[members], anomaly[members], inputs[background], names, features, background_size, nsamples, seed)
    section = Section(f"Why are the wells of {group} anomalous? (autoencoder-anomaly SHAP)")
    section.text(f"{int(members.sum())} wells; background: {min(background_size, int(background.sum()))} held-out control wells; {nsamples} samples.")
    for number, explanation in enumerate(explanations):
        section.figure(
            beeswarm_figure(explanation, group), f"{explanation.feature}: mean |anomaly z| {explanation.mean_abs_anomaly:.1f}.", f"shap_{number}.png"
        )
    summary = {
        "group": group,
        "wells": int(members.sum()),
        "columns": columns.__dict__,
        "explained": [
            {"feature": e.feature, "mean_abs_anomaly": e.mean_abs_anomaly, "top_inputs": [e.input_names[i] for i in e.ranking()[:5]]}
            for e in explanations
        ],
    }
    with atomic_output_dir(out) as staging:
        explanations_table(explanations, group).to_parquet(staging / "explanations.parquet", index=False)
        write_json(staging / "metrics.json", summary)
        report = Report(f"phenolens profile explain: {group}", metrics=summary)
        report.add(section)
        report.write(staging)
    print(f"wrote {out / 'report.html'}")


def demo_step(out: Path) -> tuple[list, dict]:
    """Demo: BBBC021 with the default autoencoder (no hyper-parameter search); writes OUT/profiling/."""
    from phenolens.core.outputs import atomic_output_dir
    from phenolens.data import load
    from phenolens.nn.weights import save_model
    from phenolens.profiling.evaluate import EvaluationSettings
    from phenolens.profiling.inputs import DATASET_PRESETS
    from phenolens.profiling.pipeline import RunSettings, run_profiling

    name, columns = DATASET_PRESETS["bbbc021"]
    settings = RunSettings(evaluation=EvaluationSettings(moa_repeats=DEMO_MOA_REPEATS, jobs=2), explain_features=2)
    result = run_profiling(load(name), columns, settings, "bbbc021")
    title = "Anomaly-based profiling of BBBC021 (cellprofiler vs anomaly vs concatenation)"
    with atomic_output_dir(out / "profiling") as staging:
        save_model(result.profiler.model_, staging / "model", result.profiler.model_card(dataset="bbbc021"))
        section = write_results(staging, result, columns, title)
    section.text(
        f"MoA classifiers repeated {DEMO_MOA_REPEATS} times here to keep the demo short; `phenolens profile run --dataset bbbc021` repeats 10 times."
    )
    headline = ("percent_replicating", "map", "nsc_accuracy", "nscb_accuracy", "moa_f1_lr", "moa_f1_mlp")
    metrics = {rep: {key: result.metrics[rep][key] for key in headline} for rep in ("cellprofiler", "anomaly", "concatenation")}
    return [section], metrics


DEMO_MOA_REPEATS = 3
