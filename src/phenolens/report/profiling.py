"""Report section of a profiling run: reproducibility, MoA, hits, the control-count curve, anomaly SHAP."""

from __future__ import annotations

import numpy as np
import pandas as pd

from phenolens.core.runs import RunWriter
from phenolens.data.query import select_rows
from phenolens.profiling.anomaly import ROLE_COLUMN
from phenolens.profiling.evaluate import Evaluation, features_of, is_concatenation, replicate_space, wide_table
from phenolens.profiling.explain import FeatureExplanation, GroupExplanation, explanations_table
from phenolens.profiling.hits import anomaly_score
from phenolens.profiling.normalize import TEST
from phenolens.profiling.pipeline import ProfilingRun
from phenolens.profiling.settings import ProfileExplanationSettings
from phenolens.profiling.study import StudyRun
from phenolens.report.batch_effects import batch_effect_section
from phenolens.report.explorer.profiling import profiling_view
from phenolens.report.figures import OKABE_ITO, figure
from phenolens.report.html import Report, Section

HEADLINE = ("percent_replicating", "map", "nsc_accuracy", "nscb_accuracy", "moa_f1_lr", "moa_f1_mlp")
LABELS = {
    "percent_replicating": "percent replicating",
    "map": "mAP (replicates)",
    "nsc_accuracy": "1-NN NSC accuracy",
    "nscb_accuracy": "1-NN NSCB accuracy",
    "moa_f1_lr": "MoA weighted F1, logistic regression",
    "moa_f1_mlp": "MoA weighted F1, MLP",
}
HYPERPARAMETER_LABELS = {"learning_rate": "learning rate", "output_l2": "output L2 penalty", "dropout": "dropout"}
SHAP_ORIENTATION = (
    "Values are oriented to the error: > 0 means the input pushed the reconstruction away from the observed value (raised the error), "
    "< 0 that it pulled it toward it; a well's values sum to that change relative to the reconstruction from a control's inputs. "
    "Kernel SHAP (shap's default) gives at most 10 inputs of each well a non-zero value."
)


def colors_for(names) -> dict[str, str]:
    """A colour per representation, stable across figures.

    Parameters
    ----------
    names : iterable of str
        Representation names.

    Returns
    -------
    dict of str to str
        Name -> colour (Okabe-Ito).
    """
    return {name: OKABE_ITO[(i + 4) % len(OKABE_ITO)] for i, name in enumerate(names)}


def metrics_table(metrics: dict[str, dict]) -> pd.DataFrame:
    """The headline metrics of every representation as a table.

    Parameters
    ----------
    metrics : dict
        Representation -> metrics.

    Returns
    -------
    pandas.DataFrame
        One row per representation, the headline metrics as columns.
    """
    rows = {name: {LABELS[key]: values.get(key) for key in HEADLINE} for name, values in metrics.items()}
    return pd.DataFrame(rows).T.rename_axis("representation").reset_index().astype({LABELS[k]: float for k in HEADLINE})


def verdict(metrics: dict[str, dict]) -> str:
    """One sentence per headline metric saying whether `anomaly` beats `cellprofiler`.

    Parameters
    ----------
    metrics : dict
        Representation -> metrics.

    Returns
    -------
    str
        The sentences ('' without both representations).
    """
    if "anomaly" not in metrics or "cellprofiler" not in metrics:
        return ""
    won, lost = [], []
    for key in HEADLINE:
        a, c = metrics["anomaly"].get(key), metrics["cellprofiler"].get(key)
        if a is None or c is None:
            continue
        (won if a > c else lost).append(f"{LABELS[key]} {a:.3f} vs {c:.3f}")
    text = []
    if won:
        text.append("The anomaly representation beats cellprofiler on " + "; ".join(won) + ".")
    if lost:
        text.append("It does NOT beat cellprofiler on " + "; ".join(lost) + " (ties count as not beating).")
    return " ".join(text)


def curve_summary(curve: pd.DataFrame) -> str:
    """What the control-count curve says, in words: does the anomaly representation gain from more controls?

    Parameters
    ----------
    curve : pandas.DataFrame
        The control-count curve of `run_profiling`.

    Returns
    -------
    str
        One sentence per metric.
    """
    anomaly = curve[curve["representation"] == "anomaly"].sort_values("training_controls")
    reference = curve[curve["representation"] == "cellprofiler"].iloc[0]
    parts = []
    for metric in [m for m in ("percent_replicating", "nsc_accuracy") if m in curve]:
        values = ", ".join(f"{v:.3f}" for v in anomaly[metric])
        change = anomaly[metric].iloc[-1] - anomaly[metric].iloc[0]
        trend = "rises" if change > 0.01 else "falls" if change < -0.01 else "stays flat"
        parts.append(f"{LABELS[metric]} {values} (it {trend}; cellprofiler {reference[metric]:.3f})")
    counts = ", ".join(str(int(c)) for c in anomaly["training_controls"])
    return f"Training the autoencoder on {counts} control wells gives anomaly " + "; ".join(parts) + "."


def replicate_figure(evaluation: Evaluation):
    """Replicate correlation of every treatment against the null, per representation.

    Parameters
    ----------
    evaluation : Evaluation
        From `evaluate`.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    names = list(evaluation.replicates)
    fig, axes = figure(width=4.2 * len(names), height=3.4, ncols=len(names), squeeze=False)
    for axis, name in zip(axes[0], names):
        result = evaluation.replicates[name]
        bins = np.linspace(-1, 1, 41)
        axis.hist(result.null, bins=bins, density=True, color="#999999", alpha=0.7, label="null (non-replicate groups)")
        axis.hist(result.treatments["replicate_correlation"], bins=bins, density=True, color=OKABE_ITO[4], alpha=0.7, label="replicates")
        percentile = evaluation.settings.get("replicate_percentile", 90)
        axis.axvline(result.threshold, color=OKABE_ITO[5], linestyle="--", label=f"{percentile:g}th percentile of the null")
        error = evaluation.metrics[name].get("percent_replicating_standard_error", float("nan"))  # runs before session 17 lack it
        axis.set_title(f"{name}: {result.percent_replicating:.0%} ± {error:.0%} replicating (threshold {result.threshold:.2f})", fontsize=10)
        axis.set_xlabel("median replicate correlation (Pearson)")
        axis.set_ylabel("density")
    axes[0][0].legend(fontsize=8, loc="upper left")
    return fig


def venn_figure(evaluation: Evaluation):
    """Three-set Venn diagram (circles) of the treatments each representation makes reproducible.

    Parameters
    ----------
    evaluation : Evaluation
        From `evaluate`.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    names = list(evaluation.replicates)[:3]
    sets = [set(evaluation.replicates[n].treatments.index[evaluation.replicates[n].treatments["reproducible"]]) for n in names]
    everything = set(evaluation.replicates[names[0]].treatments.index)
    fig, axis = figure(width=5.6, height=4.6)
    centres = [(-0.55, 0.3), (0.55, 0.3), (0.0, -0.6)][: len(names)]
    colors = colors_for(names)
    import matplotlib.patches as patches

    for (x, y), name, members in zip(centres, names, sets):
        axis.add_patch(patches.Circle((x, y), 1.0, alpha=0.25, color=colors[name]))
        axis.text(x * 1.9, y * 1.9 + (0.35 if y > 0 else -0.3), f"{name}\n({len(members)})", ha="center", va="center", fontsize=10)
    for code in range(1, 2 ** len(names)):
        inside = [bool(code >> i & 1) for i in range(len(names))]
        region = set(everything)
        for member, flag in zip(sets, inside):
            region = region & member if flag else region - member
        chosen = [c for c, flag in zip(centres, inside) if flag]
        x, y = np.mean(chosen, axis=0)
        if sum(inside) == 1:
            x, y = x * 1.35, y * 1.35
        axis.text(x, y, str(len(region)), ha="center", va="center", fontsize=12, fontweight="bold")
    union = set().union(*sets)
    axis.set_title(f"Reproducible treatments: union {len(union)} of {len(everything)}; none {len(everything - union)}")
    axis.set_xlim(-2.2, 2.2)
    axis.set_ylim(-2.0, 2.0)
    axis.set_aspect("equal")
    axis.axis("off")
    return fig


def moa_f1_figure(evaluation: Evaluation):
    """Per-class MoA F1 per representation and classifier.

    Parameters
    ----------
    evaluation : Evaluation
        From `evaluate` (with classifiers).

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    result = evaluation.classifiers
    kinds = list(dict.fromkeys(k for _, k in result.per_class_f1.index))
    names = list(dict.fromkeys(n for n, _ in result.per_class_f1.index))
    colors = colors_for(names)
    fig, axes = figure(width=5.0 * len(kinds), height=0.42 * len(result.classes) + 1.6, ncols=len(kinds), squeeze=False, sharey=True)
    positions = np.arange(len(result.classes))
    height = 0.8 / len(names)
    for axis, kind in zip(axes[0], kinds):
        for i, name in enumerate(names):
            axis.barh(positions + i * height, result.per_class_f1.loc[(name, kind)], height=height, color=colors[name], label=name)
        axis.set_yticks(positions + 0.4 - height / 2, result.classes)
        axis.set_xlabel("F1 (mean over repeats)")
        axis.set_xlim(0, 1)
        axis.set_title(f"MoA F1 per class, {'logistic regression' if kind == 'lr' else 'MLP'}")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(names), bbox_to_anchor=(0.5, 1.0), fontsize=9)
    return fig


def curve_figure(curve: pd.DataFrame):
    """The anomaly representation's metrics against the number of training controls.

    Parameters
    ----------
    curve : pandas.DataFrame
        The control-count curve.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    metrics = [c for c in ("percent_replicating", "nsc_accuracy") if c in curve]
    fig, axes = figure(width=4.4 * len(metrics), height=3.4, ncols=len(metrics), squeeze=False)
    colors = colors_for(["cellprofiler", "anomaly", "concatenation"])
    for axis, metric in zip(axes[0], metrics):
        for name, rows in curve.groupby("representation"):
            rows = rows.sort_values("training_controls")
            style = {"linestyle": "--"} if name == "cellprofiler" else {"marker": "o"}
            axis.plot(rows["training_controls"], rows[metric], color=colors[name], label=name, **style)
        low, high = curve[metric].min(), curve[metric].max()
        axis.set_ylim(max(0.0, low - 0.05), min(1.0, high + 0.05))  # a one-treatment change must not look like a cliff
        axis.set_xlabel("autoencoder training controls (wells)")
        axis.set_ylabel(f"{LABELS[metric]} (fraction of treatments)")
        axis.set_title(f"{LABELS[metric]} vs training controls")
    axes[0][0].legend(fontsize=8)
    return fig


def beeswarm_figure(explanation: FeatureExplanation, group: str, top: int = 10):
    """Per-well oriented SHAP values of the most influential inputs, coloured by the input's value.

    Parameters
    ----------
    explanation : FeatureExplanation
        One explained feature.
    group : str
        The explained group, for the title.
    top : int
        Inputs shown.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    order = explanation.ranking()[:top][::-1]
    fig, axis = figure(width=7.2, height=0.38 * len(order) + 1.6)
    rng = np.random.default_rng(0)
    values = explanation.input_values[:, order]
    limit = np.nanpercentile(np.abs(values), 95) or 1.0
    for row, column in enumerate(order):
        jitter = rng.uniform(-0.18, 0.18, size=len(explanation.shap_values))
        points = axis.scatter(
            explanation.shap_values[:, column], row + jitter, c=values[:, row], cmap="cividis", vmin=-limit, vmax=limit, s=22, edgecolors="none"
        )
    axis.axvline(0, color="#777777", linewidth=0.8)
    axis.set_yticks(range(len(order)), [explanation.input_names[c] for c in order], fontsize=8)
    axis.set_xlabel("oriented SHAP value (> 0: moved the reconstruction away from the observed value; < 0: toward it)")
    axis.set_title(f"{group}: why is {explanation.feature} badly reconstructed?", fontsize=10)
    fig.colorbar(points, ax=axis, label="input value (z vs controls)")
    return fig


def hyperparameter_text(autoencoder: dict) -> str:
    """The autoencoder's training hyper-parameters in words, and whether a search chose them.

    Parameters
    ----------
    autoencoder : dict
        The ``autoencoder`` block of metrics.json (``hyperparameters``, ``search``).

    Returns
    -------
    str
        E.g. "learning rate 0.001, output L2 penalty 0.0001, dropout 0.1 (as set; no search)".
    """
    chosen = autoencoder["hyperparameters"].items()
    values = ", ".join(f"{HYPERPARAMETER_LABELS.get(name, name.replace('_', ' '))} {value:g}" for name, value in chosen)
    trials = len(autoencoder.get("search") or [])
    return values + (f" (the best of {trials} trials on validation controls)" if trials > 1 else " (as set; no search)")


def explanation_caption(explanation: FeatureExplanation) -> str:
    """What the SHAP values of one explained feature add up to, in words (means over the wells).

    All values < 0 is what a phenotype shared by correlated features gives: the other inputs pull the
    reconstruction toward the extreme observed value and the error is the feature's own value.

    Parameters
    ----------
    explanation : FeatureExplanation
        One explained feature.

    Returns
    -------
    str
        One caption.
    """
    change = float(explanation.error_change().mean())
    numbers = (
        f"{explanation.feature}: mean |anomaly z| {explanation.mean_abs_anomaly:.1f} over {len(explanation.shap_values)} wells; "
        f"observed {explanation.observed.mean():.2f}, reconstructed from the other inputs {explanation.reconstruction.mean():.2f}, "
        f"from a control's inputs {explanation.expected_value:.2f} (standardised units; means over the wells). "
    )
    if change < 0:
        return numbers + (
            f"The other inputs pulled the reconstruction {-change:.2f} toward the observed value (the SHAP values sum to {change:.2f}): "
            "the error is the feature's own value, beyond what its correlated features predict."
        )
    return numbers + (
        f"The other inputs pushed the reconstruction {change:.2f} away from the observed value (the SHAP values sum to {change:.2f}): "
        "they predict a value these wells do not have."
    )


def training_figure(history_columns: dict[str, list[float]]):
    """Autoencoder training and validation loss per epoch.

    Parameters
    ----------
    history_columns : dict of str to list of float
        train_loss and val_loss per epoch.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    fig, axis = figure(width=5.2, height=3.2)
    epochs = np.arange(1, len(history_columns["train_loss"]) + 1)
    axis.plot(epochs, history_columns["train_loss"], label="training controls (loss incl. output L2)")
    axis.plot(epochs, history_columns["val_loss"], label="validation controls (MSE)")
    axis.set_xlabel("epoch")
    axis.set_ylabel("loss (standardised units squared)")
    axis.set_yscale("log")
    axis.set_title("Profile autoencoder training")
    axis.legend(fontsize=8)
    return fig


def scores_figure(scores: dict[str, np.ndarray]):
    """Distributions of anomaly scores (held-out controls vs treated wells), as the fraction of each group's wells per bin.

    The bins are log-spaced from the smallest score, but no lower than 1e-3 (a well scoring 1e-9 would otherwise
    spread the axis over decades no other well uses); scores below that, zeros included, are counted in the first bar
    and the legend says how many, so every well is in a bar and each group's bars sum to 1.

    Parameters
    ----------
    scores : dict of str to numpy.ndarray
        Label -> anomaly scores (non-negative).

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    fig, axis = figure(width=5.4, height=3.4)
    floor = 1e-3
    lowest = max(floor, min(v.min() for v in scores.values()))
    bins = np.geomspace(lowest, max(v.max() for v in scores.values()), 40)  # exact end points: 10 ** log10(x) can miss x
    for (label, values), color in zip(scores.items(), ("#999999", OKABE_ITO[5])):
        below = int((values < lowest).sum())
        label = f"{label} ({len(values)} wells{f'; {below} below {floor:g} in the first bar' if below else ''})"
        weights = np.full(len(values), 1.0 / max(len(values), 1))
        axis.hist(np.clip(values, lowest, None), bins=bins, weights=weights, alpha=0.6, color=color, label=label)
    axis.set_xscale("log")
    axis.set_xlabel("anomaly score (mean squared anomaly z)")
    axis.set_ylabel("fraction of wells")
    axis.set_title("Anomaly score: held-out controls vs treated wells")
    axis.legend(fontsize=8)
    return fig


def profiling_section(
    title: str,
    metrics: dict,
    evaluation: Evaluation,
    explanations: list[FeatureExplanation],
    group: str,
    curve: pd.DataFrame | None,
    history_columns: dict[str, list[float]] | None,
    score_distributions: dict[str, np.ndarray] | None,
    prefix: str = "profiling",
) -> Section:
    """The whole report section of a profiling run (figures are also written as `<prefix>_*.png`).

    Parameters
    ----------
    title : str
        Section title.
    metrics : dict
        metrics.json of the run.
    evaluation : Evaluation
        From `evaluate`.
    explanations : list of FeatureExplanation
        Anomaly SHAP (may be empty).
    group : str
        The explained group.
    curve : pandas.DataFrame or None
        The control-count curve.
    history_columns : dict or None
        Autoencoder losses per epoch.
    score_distributions : dict or None
        Label -> anomaly scores.
    prefix : str
        File-name prefix of the figures.

    Returns
    -------
    Section
        The section.
    """
    section = Section(title)
    section.text(
        "Representations: cellprofiler = features standardised per plate on training controls and selected on them "
        "(pycytominer thresholds); anomaly = per-feature reconstruction error of an autoencoder trained on control wells only, "
        "z-scored against held-out test controls; concatenation = both side by side."
    )
    data = metrics.get("data", {})
    if data:
        section.text(
            f"Input: {data.get('wells_in')} wells x {data.get('features_in')} features; used {data.get('wells')} wells "
            f"({data.get('controls')} controls) on {data.get('plates')} plates. Non-finite values: {data.get('non_finite_values')}; "
            f"features dropped for >5% missing: {len(data.get('features_dropped_non_finite', []))}; wells dropped for missing values: "
            f"{data.get('wells_dropped_non_finite')}; plates excluded for too few controls: {data.get('plates_excluded_few_controls') or 'none'}."
        )
    if data.get("plate_features"):
        per_plate = pd.DataFrame(data["plate_features"]).T.rename_axis("plate").reset_index().sort_values("lost", ascending=False)
        section.text(
            f"Plates measure different features: the {int(per_plate['kept'].iloc[0])} features every plate has were kept; "
            f"{int((per_plate['lost'] > 0).sum())} of {len(per_plate)} plates lost some (all counts in metrics.json data.plate_features)."
        )
        section.table(per_plate.head(12), "Features per plate: had, kept (shared by every plate) and lost; the plates that lost most.")
    auto = metrics.get("autoencoder")
    if auto:
        section.text(
            f"Autoencoder: {auto['selected_features']} selected features, controls train/validation/test = "
            f"{auto['controls']['train']}/{auto['controls']['validation']}/{auto['controls']['test']}"
            f"{' (+' + str(auto['controls']['unused']) + ' unused)' if auto['controls'].get('unused') else ''}; "
            f"{auto['epochs']} epochs (best {auto['best_epoch']}), best validation MSE {auto['best_validation_mse']:.3f}; "
            f"{hyperparameter_text(auto)}."
        )
    section.table(metrics_table(evaluation.metrics), "Headline metrics per representation (MoA weighted F1: mean over repeats).")
    text = verdict(evaluation.metrics)
    if text:
        section.text(text)
    for note in evaluation.notes:
        section.text(note)
    section.figure(
        replicate_figure(evaluation),
        "Replicate correlation of every treatment against the null of random non-replicate groups.",
        f"{prefix}_replicates.png",
    )
    percentile = evaluation.settings.get("replicate_percentile", 90)
    section.figure(
        venn_figure(evaluation), f"Treatments reproducible (above the null's {percentile:g}th percentile) per representation.", f"{prefix}_venn.png"
    )
    if evaluation.classifiers is not None:
        section.figure(moa_f1_figure(evaluation), "Per-class MoA F1 of nested cross-validation, mean over repeats.", f"{prefix}_moa_f1.png")
        welch = evaluation.classifiers.welch.copy()
        section.table(welch, "Welch's t-test of weighted F1 over repeats between representations.")
    if curve is not None:
        section.figure(
            curve_figure(curve),
            "Anomaly representation when the autoencoder trains on fewer controls; the dashed line is cellprofiler (independent of it).",
            f"{prefix}_control_curve.png",
        )
        section.text(curve_summary(curve))
    if history_columns:
        section.figure(
            training_figure(history_columns), "Autoencoder loss per epoch; early stopping on validation controls.", f"{prefix}_training.png"
        )
    if score_distributions:
        section.figure(scores_figure(score_distributions), "Anomaly scores of held-out control wells and treated wells.", f"{prefix}_scores.png")
    hits = evaluation.hits.get("anomaly")
    if hits is not None:
        top = hits.sort_values("score", ascending=False).head(10).reset_index()
        section.table(top, f"Most anomalous treatments (hits at FDR {evaluation.settings['fdr']}: {int(hits['hit'].sum())} of {len(hits)}).")
    if explanations:
        shap_section = Section(f"Why is {group} anomalous? (autoencoder-anomaly SHAP)")
        shap_section.text(
            "For each of the worst-reconstructed features, Kernel SHAP attributes its reconstruction to the other inputs (its own input "
            f"deactivated), with held-out controls as background. {SHAP_ORIENTATION}"
        )
        for number, explanation in enumerate(explanations):
            shap_section.figure(beeswarm_figure(explanation, group), explanation_caption(explanation), f"{prefix}_shap_{number}.png")
        section.add(shap_section)
    return section


def run_section(result: ProfilingRun, title: str) -> Section:
    """The report section of a `profile run`, with the anomaly-score distributions of held-out controls and treated wells.

    Parameters
    ----------
    result : ProfilingRun
        From `run_profiling`.
    title : str
        The section title.

    Returns
    -------
    Section
        Text, tables, figures and the explorer's treatment view.
    """
    settings = result.profiler.settings
    anomaly = result.representations["anomaly"]
    features = features_of(anomaly, settings)
    values = anomaly[features].to_numpy(dtype=np.float64)
    scores = anomaly_score(values)
    treated = ~select_rows(anomaly, settings.controls, "profiles", "--controls")
    distributions = {"held-out control wells": scores[(anomaly[ROLE_COLUMN] == TEST).to_numpy()], "treated wells": scores[treated]}
    history = {key: result.profiler.history_.column(key) for key in ("train_loss", "val_loss")}
    section = profiling_section(
        title, result.metrics, result.evaluation, result.explanations, result.explained_group, result.curve, history, distributions
    )
    replicates = result.evaluation.replicates.get("anomaly")
    section.view(
        profiling_view(
            anomaly, features, treated, settings.treatment, settings.plate, result.evaluation.hits["anomaly"], settings.moa,
            replicates.treatments if replicates is not None else None, result.explanations, result.explained_group or None,
            consensus=settings.consensus,
            replicate_values=replicate_space(values, anomaly, settings, settings),
            replicate_normalization=settings.replicate_normalization,
        )
    )  # fmt: skip
    if settings.batch:
        section.add(batch_effect_section(result.representations, settings, result.metrics))
    return section


def write_profiling_run(run: RunWriter, result: ProfilingRun, title: str) -> Section:
    """Write a `profile run` into an entered `RunWriter`: model/, profiles.parquet, hits.csv,
    treatment_profiles.parquet (with a MoA column), explanations.parquet, metrics.json, figures and report.html.

    Parameters
    ----------
    run : RunWriter
        The run folder being written (inside its ``with`` block).
    result : ProfilingRun
        From `run_profiling`.
    title : str
        The report title.

    Returns
    -------
    Section
        The report section (the demo reuses it).
    """
    base = {name: frame for name, frame in result.representations.items() if not is_concatenation(name)}
    run.write_table("profiles.parquet", wide_table(base, result.profiler.settings))
    _write_run_files(run, result, title)
    return _write_report(run, run_section(result, title), title, result.metrics)


def _write_run_files(run: RunWriter, result, title: str) -> None:
    """What every `profile run` folder holds besides its profiles: model/, hits.csv, treatment_profiles.parquet (with a
    MoA column), explanations.parquet, metrics.json."""
    from phenolens.nn.weights import save_model

    save_model(result.profiler.model_, run.file("model"), result.profiler.model_card(dataset=title))
    run.write_table("hits.csv", pd.concat(result.evaluation.hits, names=["representation"]).reset_index())
    if result.evaluation.treatment_profiles is not None:
        run.write_table("treatment_profiles.parquet", result.evaluation.treatment_profiles)
    if result.explanations:
        run.write_table("explanations.parquet", explanations_table(result.explanations, result.explained_group))
    run.write_metrics(result.metrics)


def _write_report(run: RunWriter, section: Section, title: str, metrics: dict) -> Section:
    report = Report(title, metrics=metrics)
    report.add(section)
    run.write_report(report)
    return section


def evaluation_report(title: str, metrics: dict, evaluation: Evaluation) -> Report:
    """The report of `profile evaluate`.

    Parameters
    ----------
    title : str
        The report title.
    metrics : dict
        metrics.json of the evaluation.
    evaluation : Evaluation
        From `evaluate`.

    Returns
    -------
    Report
        Ready for `RunWriter.write_report`.
    """
    report = Report(title, metrics=metrics)
    report.add(profiling_section(title, metrics, evaluation, [], "", None, None, None, prefix="evaluate"))
    return report


def explanation_report(result: GroupExplanation, settings: ProfileExplanationSettings) -> Report:
    """The report of `profile explain`: one beeswarm per explained feature.

    Parameters
    ----------
    result : GroupExplanation
        From `explain_group`.
    settings : ProfileExplanationSettings
        The explanation settings (group, samples).

    Returns
    -------
    Report
        Ready for `RunWriter.write_report`.
    """
    section = Section(f"Why are the wells of {settings.group} anomalous? (autoencoder-anomaly SHAP)")
    section.text(f"{result.wells} wells; background: {result.background} held-out control wells; {settings.nsamples} samples. {SHAP_ORIENTATION}")
    for number, explanation in enumerate(result.explanations):
        section.figure(beeswarm_figure(explanation, settings.group), explanation_caption(explanation), f"shap_{number}.png")
    report = Report(f"phenolens profile explain: {settings.group}", metrics=result.summary)
    report.add(section)
    return report


def write_study_run(run: RunWriter, result: StudyRun, title: str) -> Section:
    """Write a streamed `profile run` into an entered `RunWriter` (profiles.parquet is already there):
    model/, hits.csv, explanations.parquet, metrics.json, figures and report.html with a per-plate table.

    Parameters
    ----------
    run : RunWriter
        The run folder being written (inside its ``with`` block).
    result : StudyRun
        From `profile_study`.
    title : str
        The report title.

    Returns
    -------
    Section
        The report section.
    """
    _write_run_files(run, result, title)
    run.write_table("plates.csv", result.plates)
    history = {key: result.profiler.history_.column(key) for key in ("train_loss", "val_loss")}
    section = profiling_section(
        title, result.metrics, result.evaluation, result.explanations, result.explained_group, result.curve, history, result.score_distributions
    )
    section.add(plates_section(result.plates, result.metrics.get("executor", "serial")))
    return _write_report(run, section, title, result.metrics)


def plates_section(plates: pd.DataFrame, executor: str) -> Section:
    """Per-plate summary: wells in and used, controls, drops; the plates that lost most wells first.

    Parameters
    ----------
    plates : pandas.DataFrame
        One row per plate (`StudyRun.plates`).
    executor : str
        Where the per-file steps ran.

    Returns
    -------
    Section
        Text and a table (the 20 plates that lost most wells; every plate in plates.csv).
    """
    section = Section("Plates")
    lost = plates["wells_in"] - plates["wells"]
    section.text(
        f"{len(plates)} plates in {plates['file'].nunique()} files, profiled file by file ({executor}): {int(plates['wells'].sum())} of "
        f"{int(plates['wells_in'].sum())} wells used, {int(plates['controls'].sum())} of them controls; {int((lost > 0).sum())} plates lost wells. "
        "Every plate is in plates.csv."
    )
    shown = plates.assign(lost=lost).sort_values(["lost", "plate"], ascending=[False, True]).head(20)
    section.table(shown, "Per plate: wells in, used, controls used, dropped (missing values, no treatment, too few controls), imputed values.")
    return section
