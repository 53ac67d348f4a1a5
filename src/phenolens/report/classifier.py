"""Figures and report sections of a trained image classifier: curves, confusion, ROC/PR, embedding, weights."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from phenolens.nn.backbones import networks
from phenolens.report.explorer.images import cell_ids, embedding_points, images_view
from phenolens.report.figures import bare, class_colors, figure
from phenolens.report.headings import per_class_heading
from phenolens.report.html import Section


def training_curves_figure(epochs: list[dict], adversary: str | None = None):
    """Training and validation loss per epoch, learning rate on a second axis.

    Parameters
    ----------
    epochs : list of dict
        `History.epochs`.
    adversary : str, optional
        The adversary's loss (``confusion`` or ``reversal``) of a run trained with one: its weighted term is part of
        the recorded training loss (the validation loss is the class cross-entropy alone), and the figure says so.

    Returns
    -------
    Figure
        A matplotlib figure.
    """
    fig, axis = figure(6.4, 3.6)
    steps = [record["epoch"] + 1 for record in epochs]
    training = "training loss" if adversary is None else f"training objective: class cross-entropy + adversary's {adversary} term"
    axis.plot(steps, [r["train_loss"] for r in epochs], label=training)
    if any("val_loss" in r for r in epochs):
        validation = "validation loss" if adversary is None else "validation loss (class cross-entropy)"
        axis.plot(steps, [r.get("val_loss", np.nan) for r in epochs], label=validation)
    axis.set_xlabel("epoch")
    axis.set_ylabel("loss (cross-entropy, nats)" if adversary is None else "loss (nats)")
    rate = axis.twinx()
    rate.plot(steps, [r["lr"] for r in epochs], color="0.6", linestyle=":", label="learning rate")
    rate.set_ylabel("learning rate")
    rate.set_yscale("log")
    axis.legend(loc="upper right")
    axis.set_title("Training curves")
    return fig


def confusion_figure(matrix: Sequence[Sequence[int]], class_names: Sequence[str], images: str = "held-out images"):
    """Row-normalised confusion matrix with the counts written in each cell.

    Parameters
    ----------
    matrix : sequence of sequence of int
        Counts, rows true and columns predicted.
    class_names : sequence of str
        The classes.
    images : str
        Which images were counted, for the title.

    Returns
    -------
    Figure
        A matplotlib figure.
    """
    counts = np.asarray(matrix, dtype=float)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    k = len(class_names)
    fig, axis = figure(max(4.0, 0.45 * k + 2.5), max(3.5, 0.45 * k + 2.0))
    image = axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(k), class_names, rotation=90 if k > 4 else 0)
    axis.set_yticks(range(k), class_names)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    if k <= 20:
        for (row, column), value in np.ndenumerate(counts):
            axis.text(column, row, int(value), ha="center", va="center", fontsize=7, color="white" if rates[row, column] > 0.5 else "black")
    fig.colorbar(image, ax=axis, label="fraction of the true class")
    axis.set_title(f"Confusion matrix ({images})")
    return fig


def roc_pr_figure(labels: np.ndarray, proba: np.ndarray, class_names: Sequence[str]):
    """One-vs-rest ROC and precision-recall curves per class.

    Parameters
    ----------
    labels : ndarray
        (N,) true classes.
    proba : ndarray
        (N, K) probabilities.
    class_names : sequence of str
        The classes.

    Returns
    -------
    Figure
        A matplotlib figure.
    """
    from sklearn.metrics import precision_recall_curve, roc_curve

    fig, (roc_axis, pr_axis) = figure(10.0, 4.2, ncols=2)
    colours = class_colors(len(class_names))
    for index, name in enumerate(class_names):
        truth = labels == index
        if not 0 < truth.sum() < len(truth):
            continue
        fpr, tpr, _ = roc_curve(truth, proba[:, index])
        precision, recall, _ = precision_recall_curve(truth, proba[:, index])
        roc_axis.plot(fpr, tpr, color=colours[index], label=name)
        pr_axis.plot(recall, precision, color=colours[index], label=name)
    roc_axis.plot([0, 1], [0, 1], color="0.7", linestyle="--")
    roc_axis.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, one class vs the rest")
    pr_axis.set(xlabel="recall", ylabel="precision", title="Precision-recall, one class vs the rest")
    (roc_axis if len(class_names) <= 8 else pr_axis).legend(fontsize=7, loc="lower right")
    return fig


def embedding_figure(points: np.ndarray, class_labels: np.ndarray, class_names: Sequence[str], wells: np.ndarray | None):
    """t-SNE of penultimate features, coloured by class and (second panel) by well.

    Parameters
    ----------
    points : ndarray
        (N, 2) t-SNE coordinates (`embedding_points` of the features).
    class_labels : ndarray
        (N,) classes.
    class_names : sequence of str
        The classes.
    wells : ndarray or None
        (N,) well per image, for the second panel.

    Returns
    -------
    Figure
        A matplotlib figure.
    """
    panels = 2 if wells is not None else 1
    fig, axes = figure(5.2 * panels, 4.4, ncols=panels, squeeze=False)
    colours = class_colors(len(class_names))
    for index, name in enumerate(class_names):
        chosen = class_labels == index
        axes[0, 0].scatter(*points[chosen].T, s=8, color=colours[index], label=name)
    axes[0, 0].legend(fontsize=7, markerscale=1.5)
    axes[0, 0].set_title("Penultimate features by class")
    if wells is not None:
        uniques, codes = np.unique(wells.astype(str), return_inverse=True)
        axes[0, 1].scatter(*points.T, s=8, c=codes, cmap="cividis")
        axes[0, 1].set_title(f"... by well ({len(uniques)} wells)")
    for axis in axes[0]:
        axis.set(xlabel="t-SNE 1 (a.u.)", ylabel="t-SNE 2 (a.u.)")
    return fig


def first_layer_filters_figure(model: torch.nn.Module, channel_names: Sequence[str], limit: int = 16):
    """The first convolution's kernels: one row per input channel, one column per filter.

    Parameters
    ----------
    model : Module
        The network (an ensemble's first member is drawn).
    channel_names : sequence of str
        Row labels.
    limit : int
        Most filters drawn.

    Returns
    -------
    Figure
        A matplotlib figure.
    """
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    weights = conv.weight.detach().cpu().numpy()[:limit]
    bound = float(np.abs(weights).max()) or 1.0
    fig, axes = figure(0.6 * len(weights) + 2.0, 0.7 * len(channel_names) + 1.0, nrows=len(channel_names), ncols=len(weights), squeeze=False)
    for f, kernel in enumerate(weights):
        for c in range(len(channel_names)):
            shown = axes[c, f].imshow(kernel[c], cmap="RdBu_r", vmin=-bound, vmax=bound)
            bare(axes[c, f])
            if c == 0:
                axes[c, f].set_title(str(f), fontsize=7)
    for c, name in enumerate(channel_names):
        axes[c, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.colorbar(shown, ax=axes, shrink=0.8, label="weight")
    fig.suptitle("First-layer filters (columns) per input channel (rows)")
    return fig


def pointwise_weights_figure(model: torch.nn.Module, limit: int = 4):
    """Weight matrices (output x input channels) of the network's 1x1 convolutions, or None if it has none.

    Parameters
    ----------
    model : Module
        The network.
    limit : int
        Most matrices drawn.

    Returns
    -------
    Figure or None
        A matplotlib figure.
    """
    named = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1)][:limit]
    if not named:
        return None
    fig, axes = figure(3.6 * len(named), 3.6, ncols=len(named), squeeze=False)
    for axis, (name, conv) in zip(axes[0], named):
        matrix = conv.weight.detach().cpu().numpy()[:, :, 0, 0]
        bound = float(np.abs(matrix).max()) or 1.0
        shown = axis.imshow(matrix, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
        axis.set(title=name, xlabel="input channel", ylabel="output channel")
        fig.colorbar(shown, ax=axis, label="weight")
    fig.suptitle("1x1 convolution weights")
    return fig


LOSS_WORDS = {
    "reversal": "to defeat it through a gradient reversal layer (Ganin & Lempitsky 2015)",
    "confusion": "to make its prediction uniform over the domains of each image's class (domain confusion, Tzeng et al. 2015)",
}


def _probe_table(rows: dict[str, tuple[float, dict]]):
    """One row per network (name -> (held-out macro-F1, its `embedding_probes`)): the macro-F1 and every probe's balanced accuracy."""
    import pandas as pd

    probes = [probe for _, probe in rows.values()]
    nan = float("nan")
    return pd.DataFrame(
        {
            "held-out macro-F1": [f1 for f1, _ in rows.values()],
            "domain from embedding": [probe["balanced_accuracy"] for probe in probes],
            "domain from class alone": [probe.get("class_only_balanced_accuracy", nan) for probe in probes],
            "domain within class": [probe.get("within_class_balanced_accuracy", nan) for probe in probes],
            "within class, folds mixing groups": [probe.get("ungrouped", {}).get("within_class_balanced_accuracy", nan) for probe in probes],
            "the same, images trained on": [probe.get("trained_images", {}).get("within_class_balanced_accuracy", nan) for probe in probes],
            "the same, images not trained on": [probe.get("unseen_images", {}).get("within_class_balanced_accuracy", nan) for probe in probes],
        },
        index=pd.Index(list(rows), name="network"),  # named: the report shows a table's index only when it has a name
    )


def _probe_part(section: Section, part: dict, rows: dict[str, tuple[float, dict]], opening: str, reads: str, closing: str) -> None:
    """Add to `section` `opening`, the probe's sentence (what it `reads`), `closing`, then the `_probe_table` of `rows`.

    `part` is the run's ``adversary``, ``erasure`` or ``probe`` metrics; the sentence quotes the probe of the first of `rows`."""
    probe = next(iter(rows.values()))[1]
    grouped = f", folds grouped by {part['probe_groups']}" if part["probe_groups"] else ""
    section.text(
        f"{opening}A linear probe (logistic regression, cross-validated{grouped}) reads the {reads} from the embedding of all "
        f"{probe['n_images']} labelled images; balanced accuracy, chance {probe['chance']:.3f} "
        f"({probe.get('within_class_chance', float('nan')):.3f} within class). {closing}"
    )
    section.table(_probe_table(rows), f"How well {part['column']!r} can be predicted from the embedding.", float_format="{:.3f}")


def adversary_part(section: Section, metrics: dict) -> None:
    """Add to `section` how well the adversary's domain is read from the embedding, with and without the adversary.

    Parameters
    ----------
    section : Section
        The training section.
    metrics : dict
        The run's metrics, with ``adversary`` (from `phenolens.training.adversary.adversary_metrics`).
    """
    adversary = metrics["adversary"]
    rows = {"with the adversary": (metrics["macro_f1"], adversary["with_adversary"])}
    if "without_adversary" in adversary:
        rows["without the adversary"] = (adversary["macro_f1_without_adversary"], adversary["without_adversary"])
    _probe_part(
        section,
        adversary,
        rows,
        f"Domain-adversarial training: an adversary{' told the class' if adversary['by_class'] else ''} predicted {adversary['column']!r} "
        f"({len(adversary['domains'])} values) from the embedding; the network was trained {LOSS_WORDS[adversary.get('loss', 'reversal')]}. ",
        "domain",
        "'Within class' probes the images of each class that spans several domains separately: what the embedding tells of the domain "
        "beyond the class. The last two columns split the images into those the network trained on (where the adversary acted) and the "
        "held-out and validation images."
        + (
            " Transductive: the adversary (not the classifier) also trained on the held-out and validation images, their domain read "
            "from metadata and their class never used; the figures on those images are therefore not those of fields it never saw."
            if adversary.get("unlabelled") == "evaluation"
            else ""
        ),
    )


def erasure_part(section: Section, metrics: dict) -> None:
    """Add to `section` how well the erased column is read from the embedding, after and before erasure.

    Parameters
    ----------
    section : Section
        The training section.
    metrics : dict
        The run's metrics, with ``erasure`` (from `phenolens.training.erasure.erasure_metrics`).
    """
    erasure = metrics["erasure"]
    _probe_part(
        section,
        erasure,
        {
            "after erasure": (metrics["macro_f1"], erasure["with_erasure"]),
            "before erasure": (erasure["macro_f1_without_erasure"], erasure["without_erasure"]),
        },
        f"Concept erasure: after training, LEACE (Belrose et al. 2023) was fitted on the embeddings of the training images to the "
        f"contrasts of {erasure['column']!r} ({len(erasure['domains'])} values) within each class, inserted before the head as a fixed "
        f"affine layer, and the head refitted ({erasure['head_refit_steps']} full-batch steps). ",
        "column",
        "On the images the eraser was fitted on, a cross-validated probe can fall below chance (each fold's held-out means are the "
        "opposite of the others'); the images not trained on (held-out and validation) tell whether the erasure carries over to new fields.",
    )


def probe_part(section: Section, metrics: dict) -> None:
    """Add to `section` how well the probed column is read from the network's embedding (``--probe-column``).

    Parameters
    ----------
    section : Section
        The training section.
    metrics : dict
        The run's metrics, with ``probe`` (from `phenolens.training.adversary.probe_metrics`).
    """
    probe = metrics["probe"]
    _probe_part(
        section,
        probe,
        {"this network": (metrics["macro_f1"], probe["embedding"])},
        f"How much of {probe['column']!r} ({len(probe['domains'])} values) a classifier could learn from the embedding. ",
        "column",
        "'Within class' probes the images of each class that spans several values separately: what the embedding tells of the column "
        "beyond the class; the last two columns split the images into those the network trained on and the held-out and validation images.",
    )


def training_section(run, images, title: str = "Image classifier") -> Section:
    """Report section of a `TrainingRun` on `images` (the ImageSet it was trained on).

    Parameters
    ----------
    run : TrainingRun
        The trained classifier and its evaluation.
    images : ImageSet
        The training images.
    title : str
        Section title.

    Returns
    -------
    Section
        Text and figures: curves, confusion, ROC/PR, embedding, filters.
    """
    classifier, metrics = run.classifier, run.metrics
    labelled = images.labelled()
    section = Section(title)
    members = networks(classifier.model)
    ensemble = len(members) > 1
    architecture = members[0].architecture_name
    if ensemble:
        architecture = f"an ensemble of {len(members)} {architecture} networks (mean logits)"
    summary = f"{architecture} on {len(labelled)} labelled {images.name} images, channels {', '.join(classifier.channel_names)}"
    section.text(
        f"{summary}; crops centre-padded to {classifier.size} px; held-out accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}."
    )
    if "cv_macro_f1" in metrics:
        section.text(
            f"{metrics['cv_folds']}-fold cross-validation: macro-F1 {metrics['cv_macro_f1']:.3f} +- {metrics['cv_macro_f1_sd']:.3f} (mean +- sd); "
            "the confusion matrix (and the accuracy and macro-F1 above) pool every fold's model on its own held-out images, the other "
            "figures use the first fold's model on its own held-out images. Every fold's model is kept under folds/: "
            "`phenolens explain --images out-of-fold` explains each labelled image with the model that never trained on it."
        )
    if "adversary" in metrics:
        adversary_part(section, metrics)
    if "erasure" in metrics:
        erasure_part(section, metrics)
    if "probe" in metrics:
        probe_part(section, metrics)
    if classifier.history is not None:
        caption = f"Loss per epoch (the first model{', its first member' if ensemble else ''})."
        adversary = classifier.settings.get("adversary_loss") if classifier.settings.get("adversary_column") else None
        if adversary is not None:
            caption += f" The training curve includes the adversary's weighted {adversary} term, so it is not comparable to the validation loss."
        if "erasure" in metrics:  # the head was refitted on the erased embedding after these epochs
            caption += " These epochs trained the network before erasure; the head was then refitted on the erased embedding."
        section.figure(training_curves_figure(classifier.history.epochs, adversary), caption, "training_curves.png")
    section.figure(confusion_figure(metrics["confusion_matrix"], classifier.class_names), "Counts per true/predicted class.", "confusion.png")
    test = labelled.subset(run.test_index)
    section.figure(roc_pr_figure(test.labels, run.test_proba, classifier.class_names), "One-vs-rest curves on held-out images.", "roc_pr.png")
    wells = test.meta["well"].to_numpy() if "well" in test.meta else None
    if len(test) >= 2:
        points = embedding_points(classifier.embed(test))
        section.view(
            images_view(
                test.images, classifier.channel_names, classifier.class_names, test.labels, run.test_proba, points,
                ids=cell_ids(test.meta, len(test)), title="Held-out cells",
            )
        )  # fmt: skip
    if len(test) >= 10:
        section.figure(
            embedding_figure(points, test.labels, classifier.class_names, wells),
            "t-SNE of the penultimate (pooled) features of held-out images. Clusters by well, not class, mean the model learned the well.",
            "embedding.png",
        )
    filters = first_layer_filters_figure(classifier.model, classifier.channel_names)
    section.figure(filters, f"Input channels in the first layer{' of the first member' if ensemble else ''}.", "filters.png")
    pointwise = pointwise_weights_figure(classifier.model)
    if pointwise is not None:
        section.figure(pointwise, "1x1 convolutions mix channels without looking at space.", "pointwise.png")
    return section


def prediction_section(
    predictions,
    class_names: Sequence[str],
    group_by: str | None = None,
    title: str = "Predictions",
    images=None,
    proba: np.ndarray | None = None,
    features: np.ndarray | None = None,
    note: str | None = None,
) -> Section:
    """Report section of `phenolens.training.predict`'s result: predicted class counts, accuracy on labelled images, group fractions,
    and (given the images) the explorer's map of the cells.

    Parameters
    ----------
    predictions : Predictions
        The result of `phenolens.training.predict`.
    class_names : sequence of str
        The model's classes.
    group_by : str, optional
        The grouping column, when groups were computed.
    title : str
        Section title.
    images : ImageSet, optional
        The predicted images (in the model's terms): adds the explorer's cell map. Without `proba` they are the
        table's rows; with it, a sample of a screen.
    proba, features : ndarray, optional
        The sample's (n, K) probabilities and (n, D) penultimate features.
    note : str, optional
        How the sample was drawn, shown above the map.

    Returns
    -------
    Section
        Text, a count table, the confusion matrix of the labelled images and the first groups.
    """
    import pandas as pd

    metrics = predictions.metrics
    section = Section(title)
    section.text(f"{metrics['n_images']} images; the predicted class is the one of highest probability (columns p_<class> of predictions.parquet).")
    counts = pd.DataFrame({"class": list(metrics["predicted_counts"]), "predicted images": list(metrics["predicted_counts"].values())})
    section.table(counts, "Images per predicted class.")
    labelled = metrics.get("labelled")
    if labelled:
        section.text(f"On the {labelled['n_images']} labelled images: accuracy {labelled['accuracy']:.3f}, macro-F1 {labelled['macro_f1']:.3f}.")
        # the images given to predict, which may include those the model trained on: not a held-out estimate
        confusion = confusion_figure(labelled["confusion_matrix"], class_names, "labelled images predicted")
        section.figure(confusion, "Counts per true/predicted class.", "confusion.png")
    if images is not None and len(images) >= 2:
        mapped = "penultimate features"
        if proba is None:  # in-memory predictions: the table's rows are the images
            proba = predictions.table[[f"p_{name}" for name in class_names]].to_numpy()
            embedded = predictions.embeddings is not None
            features = predictions.embeddings.filter(regex=r"^e_\d+$").to_numpy() if embedded else np.log(np.clip(proba, 1e-6, 1))
            mapped = mapped if embedded else "log-probabilities (--embeddings maps the features)"
        if note:
            section.text(note)
        section.view(
            images_view(
                images.images, images.channel_names, class_names, images.labels, proba, features=features,
                ids=cell_ids(images.meta, len(images)), title="Predicted cells", map_name=f"t-SNE of the {mapped}",
            )
        )  # fmt: skip
    if predictions.groups is not None:
        shown = predictions.groups.head(50).rename(columns=lambda name: per_class_heading(name, list(class_names)))
        section.table(
            shown, f"Share of each predicted class per {group_by} (first {len(shown)} of {len(predictions.groups)} groups; all in groups.parquet)."
        )
    return section
