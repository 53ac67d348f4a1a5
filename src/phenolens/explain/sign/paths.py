"""Inference paths of an MLP: model its hidden layers with the rectified-Gaussian HMM, measure
cluster purity per layer, and find decision junctions (the MLP itself is trained in `mlp.py`).

A decision junction takes the examples of one cluster (HMM state) of layer l, labels them by their
cluster in layer l+1, projects their layer-l activations to 2-D with linear discriminant analysis
and picks the three most typical examples (highest posterior of the next-layer state) per branch;
`phenolens.report.sign.junction_figure` draws it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from phenolens.core.errors import PhenolensError
from phenolens.core.seeding import numpy_rng
from phenolens.data.containers import ImageSet
from phenolens.explain.sign.hmm import RectifiedGaussianHMM
from phenolens.explain.sign.mlp import TRAINING_RECORD, MLPClassifier, TrainedMlp
from phenolens.explain.sign.quality import purity
from phenolens.explain.sign.settings import SignHmmSettings


def layer_purity(paths: np.ndarray, labels: np.ndarray, states: list[int], n_classes: int) -> list[float]:
    """Purity of each layer's clusters (the Viterbi state of every example).

    Parameters
    ----------
    paths : ndarray
        (N, L) Viterbi paths.
    labels : ndarray
        (N,) class of each example.
    states : list of int
        K per layer.
    n_classes : int
        Number of classes.

    Returns
    -------
    list of float
        Purity per layer with respect to `labels`.
    """
    return [purity(paths[:, [layer]], labels, k, n_classes) for layer, k in enumerate(states)]


def fit_paths(
    activations: list[np.ndarray], states: int | list[int], epochs: int = 10, seed: int = 0, batch_size: int = 256
) -> tuple[RectifiedGaussianHMM, np.ndarray]:
    """Fit the HMM on the hidden activations and find every example's path.

    Parameters
    ----------
    activations : list of ndarray
        One (N, D_l) post-ReLU matrix per hidden layer.
    states : int or list of int
        K per layer.
    epochs, seed, batch_size : int
        Online EM (see `RectifiedGaussianHMM`).

    Returns
    -------
    tuple of (RectifiedGaussianHMM, ndarray)
        The fitted HMM and the (N, L) Viterbi paths.
    """
    hmm = RectifiedGaussianHMM(states=states, epochs=epochs, batch_size=batch_size, seed=seed).fit(activations)
    return hmm, hmm.predict(activations)


@dataclass
class MlpPaths:
    """An MLP's hidden layers modelled by the HMM (see `model_paths`).

    Attributes
    ----------
    classifier : MLPClassifier
        The modelled network.
    images : ImageSet
        The modelled examples.
    labels : ndarray
        The label of each (the MLP's training labels with ``training_images``).
    activations : list of ndarray
        (N, D_l) per hidden layer.
    hmm : RectifiedGaussianHMM
        The fitted HMM.
    paths : ndarray
        (N, L) Viterbi paths.
    states : list of int
        K per layer.
    purity : list of float
        Cluster purity per layer with respect to `labels`.
    example : int
        The example whose path the report follows.
    """

    classifier: MLPClassifier
    images: ImageSet
    labels: np.ndarray
    activations: list[np.ndarray]
    hmm: RectifiedGaussianHMM
    paths: np.ndarray
    states: list[int]
    purity: list[float]
    example: int

    def display(self) -> np.ndarray:
        """Raw modelled images for drawing.

        Returns
        -------
        ndarray
            (N, C, S, S) padded to the network's input size, not normalised.
        """
        from phenolens.training.preprocess import padded_array

        card = self.classifier.card
        return padded_array(self.images, card.normalization["size"], card.channel_names)

    def metrics(self) -> dict:
        """metrics.json of `phenolens sign hmm`: per-layer states and purity, log-likelihood, the example's path.

        Returns
        -------
        dict
        """
        layers = [{"name": f"hidden.{i}", "states": k, "purity": p} for i, (k, p) in enumerate(zip(self.states, self.purity))]
        return {"layers": layers, "log_likelihood": self.hmm.log_likelihood_, "example_path": self.paths[self.example].tolist()}


def model_paths(mlp: TrainedMlp, images: ImageSet, settings: SignHmmSettings) -> MlpPaths:
    """Model an MLP's hidden layers with the rectified-Gaussian HMM.

    Parameters
    ----------
    mlp : TrainedMlp
        The network and what it was trained on.
    images : ImageSet
        The image source; its labelled images (all, a seeded sample, or exactly the MLP's training
        images, by `settings`) are modelled.
    settings : SignHmmSettings
        Which images, the HMM's states and training, the example to follow.

    Returns
    -------
    MlpPaths

    Raises
    ------
    PhenolensError
        When the training record does not fit the images, or the example is out of range.
    """
    data = images.labelled()
    labels = data.labels
    if settings.training_images:
        if len(mlp.index) and mlp.index.max() >= len(data):
            raise PhenolensError(f"{TRAINING_RECORD}: indices beyond the {len(data)} labelled images; give the images the MLP was trained on")
        data, labels = data.subset(mlp.index), mlp.labels
    elif settings.images and settings.images < len(data):
        chosen = numpy_rng(settings.seed).choice(len(data), settings.images, replace=False)
        data, labels = data.subset(chosen), data.labels[chosen]
    if settings.example >= len(data):
        raise PhenolensError(f"--example {settings.example} is outside the {len(data)} images")
    activations = mlp.classifier.hidden(data)
    states = list(settings.states) * len(activations) if len(settings.states) == 1 else list(settings.states)
    hmm, paths = fit_paths(activations, states, settings.epochs, settings.seed, settings.batch_size)
    purity_per_layer = layer_purity(paths, labels, states, len(data.class_names))
    return MlpPaths(mlp.classifier, data, np.asarray(labels), activations, hmm, paths, states, purity_per_layer, settings.example)


@dataclass
class Junction:
    """A decision junction: one state's examples, split by their next-layer state.

    Attributes
    ----------
    layer : int
        Hidden layer (0-based) of the state.
    state : int
        The state.
    members : ndarray
        Examples in the state that go to a branch with >= 2 examples.
    branches : ndarray
        Next-layer state of each member.
    kept : ndarray
        The branches (next-layer states).
    projected : ndarray
        (n, 2) LDA projection of the members' activations (second axis: the first principal
        component when there are only two branches).
    typical : dict of int to ndarray
        Branch -> up to three members (example indices) with the highest posterior of that branch.
    """

    layer: int
    state: int
    members: np.ndarray
    branches: np.ndarray
    kept: np.ndarray
    projected: np.ndarray
    typical: dict[int, np.ndarray]

    @property
    def second_axis(self) -> str:
        """What the projection's second axis is: ``LDA 2`` or ``PC 1``."""
        return "LDA 2" if len(self.kept) >= 3 else "PC 1"


def decision_junction(hmm: RectifiedGaussianHMM, activations: list[np.ndarray], paths: np.ndarray, layer: int, state: int) -> Junction:
    """Find the decision junction at one state of one hidden layer.

    Parameters
    ----------
    hmm : RectifiedGaussianHMM
        Fitted on `activations`.
    activations : list of ndarray
        (N, D_l) per hidden layer.
    paths : ndarray
        (N, L) Viterbi paths.
    layer : int
        Hidden layer (0-based), not the last.
    state : int
        A state of `layer`.

    Returns
    -------
    Junction

    Raises
    ------
    PhenolensError
        When there is no next layer, fewer than 3 examples, or all examples go to one branch.
    """
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

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
    typical = {}
    for branch in kept:
        chosen = np.flatnonzero(branches == branch)
        typical[int(branch)] = members[chosen[np.argsort(-gamma[layer + 1][chosen, branch])[:3]]]
    return Junction(layer, state, members, branches, kept, projected, typical)
