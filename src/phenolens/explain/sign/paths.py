"""Inference paths of an MLP: train it, model its hidden layers with the rectified-Gaussian HMM,
measure cluster purity per layer, and draw decision junctions.

A decision junction takes the examples of one cluster (HMM state) of layer l, labels them by their
cluster in layer l+1, projects their layer-l activations to 2-D with linear discriminant analysis
and shows the three most typical images (highest posterior of the next-layer state) per branch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from phenolens.core.errors import PhenolensError
from phenolens.core.seeding import numpy_rng, seed_everything
from phenolens.data.containers import ImageSet
from phenolens.explain.sign.hmm import RectifiedGaussianHMM
from phenolens.explain.sign.quality import purity
from phenolens.nn.mlp import MLP
from phenolens.nn.weights import ModelCard


@dataclass
class MLPClassifier:
    """An MLP with the scalar normalisation and crop size its inputs need."""

    model: MLP
    card: ModelCard

    def inputs(self, images: ImageSet | np.ndarray) -> torch.Tensor:
        """(N, C*S*S) normalised float inputs."""
        from phenolens.training.preprocess import padded_array

        array = padded_array(images, self.card.normalization["size"], self.card.channel_names)
        return torch.from_numpy((array.reshape(len(array), -1) - self.card.normalization["mean"]) / self.card.normalization["std"]).float()

    def hidden(self, images: ImageSet | np.ndarray, batch_size: int = 1024) -> list[np.ndarray]:
        """Post-ReLU activations of every hidden layer, input to output."""
        x = self.inputs(images)
        with torch.no_grad():
            parts = [self.model.hidden_activations(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        return [torch.cat([p[layer] for p in parts]).numpy() for layer in range(len(self.model.hidden))]

    def predict(self, images: ImageSet | np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.model(self.inputs(images)).argmax(1).numpy()


def fit_mlp(
    images: ImageSet, hidden: list[int], epochs: int = 50, lr: float = 1e-3, batch_size: int = 128, random_labels: bool = False, seed: int = 0
) -> tuple[MLPClassifier, np.ndarray]:
    """Train an MLP on the labelled images with the shared loop; return it and the labels it was trained on.

    `random_labels` replaces every label by a seeded uniform draw (the memorisation experiment).
    """
    from phenolens.training import fit

    labelled = images.labelled()
    if len(labelled) == 0:
        raise PhenolensError(f"{images.name}: no labelled images to train on")
    seed_everything(seed)
    n_classes = len(images.class_names)
    labels = numpy_rng(seed).integers(0, n_classes, len(labelled)) if random_labels else labelled.labels
    array = labelled.padded()
    mean, std = float(array.mean()), float(array.std()) or 1.0
    size = array.shape[-1]
    model = MLP(int(np.prod(array.shape[1:])), list(hidden), n_classes)
    card = ModelCard(
        "mlp", {"in_features": model.hidden[0][0].in_features, "hidden": list(hidden), "n_classes": n_classes}, list(images.class_names),
        list(images.channel_names), {"mean": mean, "std": std, "size": size}, {"random_labels": random_labels, "seed": seed, "dataset": images.name},
    )  # fmt: skip
    classifier = MLPClassifier(model, card)
    x, y = classifier.inputs(labelled), torch.from_numpy(np.asarray(labels))

    def step(net: MLP, batch, epoch: int) -> torch.Tensor:
        return F.cross_entropy(net(batch[0]), batch[1])

    history = fit(model, (x, y), step, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, description="training MLP")
    card.extra["history"] = history.epochs
    card.extra["train_error"] = float(np.mean(classifier.predict(labelled) != labels))
    return classifier, labels


def layer_purity(paths: np.ndarray, labels: np.ndarray, states: list[int], n_classes: int) -> list[float]:
    """Purity of each layer's clusters (the Viterbi state of every example) with respect to `labels`."""
    return [purity(paths[:, [layer]], labels, k, n_classes) for layer, k in enumerate(states)]


def fit_paths(activations: list[np.ndarray], states: int | list[int], epochs: int = 10, seed: int = 0) -> tuple[RectifiedGaussianHMM, np.ndarray]:
    """Fit the HMM on the hidden activations; return it and every example's (N, L) Viterbi path."""
    hmm = RectifiedGaussianHMM(states=states, epochs=epochs, seed=seed).fit(activations)
    return hmm, hmm.viterbi(activations)[0]


def junction_figure(hmm: RectifiedGaussianHMM, activations: list[np.ndarray], paths: np.ndarray, layer: int, state: int, display: np.ndarray):
    """Decision junction at `state` of hidden layer `layer`: its examples projected by LDA onto the
    directions that separate their next-layer clusters, and three typical images per branch."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    from phenolens.report.figures import class_colors, figure

    members = np.flatnonzero(paths[:, layer] == state)
    if layer + 1 >= paths.shape[1] or len(members) < 3:
        raise PhenolensError(f"layer {layer} state {state}: a junction needs a next layer and >= 3 examples, found {len(members)}")
    branches = paths[members, layer + 1]
    kinds, counts = np.unique(branches, return_counts=True)
    kept = kinds[counts >= 2]
    members, branches = members[np.isin(branches, kept)], branches[np.isin(branches, kept)]
    x = activations[layer][members]
    if len(kept) >= 3:
        projected = LinearDiscriminantAnalysis(n_components=2).fit_transform(x, branches)
    elif len(kept) == 2:
        first = LinearDiscriminantAnalysis(n_components=1).fit_transform(x, branches)[:, 0]
        projected = np.stack([first, (x - x.mean(0)) @ np.linalg.svd(x - x.mean(0), full_matrices=False)[2][0]], 1)
    else:
        raise PhenolensError(f"layer {layer} state {state}: all its examples go to one next-layer cluster; there is no junction")
    gamma, _ = hmm.posteriors([a[members] for a in activations])
    colours = class_colors(len(kept))
    fig, axes = figure(width=10, height=max(3.5, 1.1 * len(kept)), ncols=4, squeeze=False, gridspec_kw={"width_ratios": [3, 1, 1, 1]})
    scatter = axes[0, 0]
    for colour, branch in zip(colours, kept):
        chosen = branches == branch
        scatter.scatter(projected[chosen, 0], projected[chosen, 1], s=8, color=colour, label=f"-> state {branch} ({chosen.sum()})")
    scatter.set(xlabel="LDA 1 (a.u.)", ylabel="LDA 2 (a.u.)" if len(kept) >= 3 else "PC 1 (a.u.)", title=f"Layer {layer + 1}, state {state}")
    scatter.legend(fontsize=7)
    for axis in axes[0, 1:]:
        axis.remove()
    grid = fig.add_gridspec(len(kept), 3, left=0.55, right=0.98, wspace=0.05, hspace=0.15)
    for row, branch in enumerate(kept):
        chosen = np.flatnonzero(branches == branch)
        typical = chosen[np.argsort(-gamma[layer + 1][chosen, branch])[:3]]
        for col, index in enumerate(typical):
            axis = fig.add_subplot(grid[row, col])
            axis.imshow(display[members[index]].mean(0), cmap="gray", interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if col == 0:
                axis.set_ylabel(f"state {branch}", fontsize=7, color=colours[row])
    return fig
