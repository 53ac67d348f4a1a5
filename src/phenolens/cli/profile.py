"""`phenolens profile aggregate | run | evaluate | explain`: single cells to wells, and anomaly-based profiling of well-level profile tables.

Options come from the settings classes of `phenolens.profiling.settings`; each command builds its
settings object, calls the library, writes one run folder through `RunWriter` and prints one line.
"""

from __future__ import annotations

from pathlib import Path

import typer

from phenolens.cli.options import OVERWRITE, RESUME, SCHEDULER, settings_options
from phenolens.profiling.inputs import DATASET_CHOICES
from phenolens.profiling.settings import ProfileAggregationSettings, ProfileEvaluationSettings, ProfileExplanationSettings, ProfilingSettings

app = typer.Typer(help="Anomaly-based profiling: representations, reproducibility, MoA, hits, explanations.", no_args_is_help=True)

FILES = typer.Argument(None, help="Well-level profile tables (csv, csv.gz, tsv, tsv.gz, parquet), Metadata_* columns + numeric features.")
DATASET = typer.Option(None, "--dataset", help=f"Built-in dataset instead of FILES: {DATASET_CHOICES} (sets the column options).")
OUT = typer.Option(..., "--out", help="Output folder (a new folder, or an earlier phenolens run with --overwrite).")


def _inputs(files: list[Path] | None, dataset: str | None, settings):
    """(settings with a dataset's columns, input files, dataset registry names, source text) for FILES or --dataset."""
    from phenolens.core.errors import PhenolensError
    from phenolens.profiling.inputs import with_dataset_columns

    if files and dataset:
        raise PhenolensError("give either FILES or --dataset, not both")
    if dataset:
        settings, name = with_dataset_columns(settings, dataset)
        return settings, [], [name], dataset
    if not files:
        raise PhenolensError("no input: give profile FILES or --dataset")
    return settings, list(files), [], _describe(files)


def _describe(files: list[Path]) -> str:
    """The inputs in a few words: the files themselves, or how many and the first one."""
    return ", ".join(map(str, files)) if len(files) <= 2 else f"{len(files)} profile files ({files[0]}, ...)"


@app.command()
@settings_options()
def run(
    files: list[Path] = FILES,
    dataset: str = DATASET,
    out: Path = OUT,
    overwrite: bool = OVERWRITE,
    resume: bool = RESUME,
    scheduler: str = SCHEDULER,
    settings: ProfilingSettings = None,
) -> None:
    """Fit the anomaly profiler on control wells, evaluate cellprofiler / anomaly / concatenation file by file, write OUT."""
    import shutil
    import sys

    from phenolens.core.executor import Executor
    from phenolens.core.runs import RunWriter
    from phenolens.profiling.inputs import read_profile_tables
    from phenolens.profiling.pipeline import run_profiling
    from phenolens.profiling.plates import study_shards
    from phenolens.profiling.study import PARTS, profile_study
    from phenolens.report.profiling import write_profiling_run, write_study_run
    from phenolens.training.checkpoint import checkpointed

    settings, paths, datasets, source = _inputs(files, dataset, settings)
    settings.require("controls", "treatment")
    writer = RunWriter(out, command="profile run", settings=settings, inputs=paths, overwrite=overwrite, datasets=datasets, resume=resume)
    # A study of several files (or one run on a cluster) streams file by file; one table is read whole, which also
    # gives the explorer's treatment map (it needs every well at once).
    one_table = len(paths) + len(datasets) == 1 and (bool(datasets) or paths[0].is_file())
    whole_table = one_table and scheduler == "serial"
    with Executor.from_option(scheduler) as executor, checkpointed(writer) as folder:  # the autoencoder's epochs are checkpointed
        if whole_table:
            shutil.rmtree(folder.path / PARTS, ignore_errors=True)  # left by a cluster run of this file that was killed: not continued
            result = run_profiling(read_profile_tables(paths, datasets, settings), settings, source)
            write_profiling_run(folder, result, f"phenolens profile run: {source}")
        else:
            result = profile_study(
                study_shards(paths, datasets), settings, source, folder, executor, progress=lambda line: print(line, file=sys.stderr)
            )
            write_study_run(folder, result, f"phenolens profile run: {source}")
    print(f"wrote {writer.target / 'report.html'}")


@app.command()
@settings_options()
def evaluate(
    profiles: list[Path] = typer.Argument(..., help="profiles.parquet from `profile run`, or any profile tables (one representation)."),
    dataset: str = typer.Option(None, "--dataset", help=f"Take the column options of a built-in dataset: {DATASET_CHOICES}."),
    out: Path = OUT,
    overwrite: bool = OVERWRITE,
    settings: ProfileEvaluationSettings = None,
) -> None:
    """Evaluate every representation in PROFILES: percent replicating, mAP, NSC/NSCB, MoA F1, hits."""
    from phenolens.core.runs import RunWriter
    from phenolens.profiling.evaluate import evaluate_tables
    from phenolens.profiling.inputs import read_profile_tables, with_dataset_columns
    from phenolens.report.profiling import evaluation_report

    if dataset:
        settings, _ = with_dataset_columns(settings, dataset)
    settings.require("controls", "treatment")
    writer = RunWriter(out, command="profile evaluate", settings=settings, inputs=profiles, overwrite=overwrite)
    table = read_profile_tables(profiles, [], settings)
    evaluation, metrics = evaluate_tables(table, settings, _describe(profiles))
    with writer as folder:
        folder.write_metrics(metrics)
        if evaluation.treatment_profiles is not None:
            folder.write_table("treatment_profiles.parquet", evaluation.treatment_profiles)
        folder.write_report(evaluation_report(f"phenolens profile evaluate: {_describe(profiles)}", metrics, evaluation))
    print(f"wrote {writer.target / 'report.html'}")


@app.command()
@settings_options()
def explain(
    run_dir: Path = typer.Argument(..., help="Output folder of `phenolens profile run`."),
    out: Path = OUT,
    overwrite: bool = OVERWRITE,
    settings: ProfileExplanationSettings = None,
) -> None:
    """Autoencoder-anomaly SHAP for a group of wells of a finished run: beeswarms, values, report."""
    from phenolens.core.runs import RunWriter
    from phenolens.profiling.explain import explain_group, explanations_table
    from phenolens.report.profiling import explanation_report

    writer = RunWriter(out, command="profile explain", settings=settings, inputs=[run_dir], overwrite=overwrite)
    result = explain_group(run_dir, settings)
    with writer as folder:
        folder.write_table("explanations.parquet", explanations_table(result.explanations, settings.group))
        folder.write_metrics(result.summary)
        folder.write_report(explanation_report(result, settings))
    print(f"wrote {writer.target / 'report.html'}")


@app.command()
@settings_options()
def aggregate(
    files: list[Path] = typer.Argument(
        ..., help="CellProfiler single-cell output: .sqlite (cytominer-database), .parquet (CytoTable) or .csv, one or more files."
    ),
    out: Path = OUT,
    platemap: Path = typer.Option(
        None, "--platemap", help="Plate map (CSV/TSV) with Metadata_Well or well_position (and optionally a plate column)."
    ),
    scheduler: str = SCHEDULER,
    resume: bool = RESUME,
    overwrite: bool = OVERWRITE,
    settings: ProfileAggregationSettings = None,
) -> None:
    """Aggregate single cells to one profile per plate x well (pycytominer median or mean), plate by plate; writes OUT/profiles.parquet."""
    from phenolens.core.executor import Executor
    from phenolens.core.runs import RunWriter
    from phenolens.data.platemaps import read_platemap
    from phenolens.profiling.aggregate import PROFILES, aggregate_cells_into, plan_aggregation
    from phenolens.report.aggregation import aggregation_report

    inputs = [*files, *([platemap] if platemap else [])]
    writer = RunWriter(out, command="profile aggregate", settings=settings, inputs=inputs, overwrite=overwrite, resume=resume)
    shards = plan_aggregation(files, settings)
    plates = read_platemap(platemap) if platemap else None
    with Executor.from_option(scheduler) as executor, writer as folder:
        folder.extra["scheduler"] = executor.description
        summary = aggregate_cells_into(folder, shards, executor, plates)
        folder.write_metrics(summary.metrics)
        folder.write_report(aggregation_report(f"phenolens profile aggregate: {_describe(files)}", summary))
    print(f"wrote {writer.target / PROFILES} ({summary.metrics['wells']:,} wells, {summary.metrics['cells']:,} cells)")


def demo_step(out: Path) -> tuple[list, dict]:
    """Demo: BBBC021 with the default autoencoder (no hyper-parameter search); writes OUT/profiling/."""
    from phenolens.core.runs import RunWriter
    from phenolens.data import load
    from phenolens.profiling.inputs import with_dataset_columns
    from phenolens.profiling.pipeline import run_profiling
    from phenolens.report.profiling import write_profiling_run

    settings, name = with_dataset_columns(ProfilingSettings(moa_repeats=DEMO_MOA_REPEATS, explain_features=2), "bbbc021")
    writer = RunWriter(out / "profiling", command="profile run", settings=settings, datasets=[name])
    result = run_profiling(load(name), settings, "bbbc021")
    title = "Anomaly-based profiling of BBBC021 (cellprofiler vs anomaly vs concatenation)"
    with writer as folder:
        section = write_profiling_run(folder, result, title)
    section.text(
        f"MoA classifiers repeated {DEMO_MOA_REPEATS} times here to keep the demo short; `phenolens profile run --dataset bbbc021` repeats 10 times."
    )
    headline = ("percent_replicating", "map", "nsc_accuracy", "nscb_accuracy", "moa_f1_lr", "moa_f1_mlp")
    metrics = {rep: {key: result.metrics[rep][key] for key in headline} for rep in ("cellprofiler", "anomaly", "concatenation")}
    return [section], metrics


DEMO_MOA_REPEATS = 3
