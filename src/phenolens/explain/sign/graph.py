"""`InferenceGraphBuilder`: statistics over a validation set, then class and image inference graphs."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator

from phenolens.core.errors import PhenolensError
from phenolens.core.estimators import check_is_fitted
from phenolens.data.containers import find_class
from phenolens.explain.sign.dictionary import SignDictionary, WordMaps, as_images
from phenolens.explain.sign.layers import OUTPUT
from phenolens.explain.sign.selection import InferenceGraph, select_nodes
from phenolens.explain.sign.statistics import CooccurrenceStatistics


class InferenceGraphBuilder(BaseEstimator):
    """Counts word co-occurrences of a fitted `SignDictionary` on validation images and selects graphs.

    `fit(X, y)` encodes the validation images and counts; `class_graph(c)` uses the images predicted
    as class c as Omega; `image_graph(image)` uses one image. The dictionary is a fitted input the
    builder only reads: `sklearn.base.clone` keeps it (as `sklearn.frozen.FrozenEstimator` would)
    instead of returning an unfitted copy.

    Parameters
    ----------
    dictionary : SignDictionary
        A fitted dictionary.
    nodes_per_layer : int
        Words selected per layer.
    smoothing : float
        Laplace pseudo-count of the co-occurrence statistics.
    class_names : list of str, optional
        Names of the network's classes, for labels and ``class_graph("name")``.

    Attributes
    ----------
    images_ : Tensor
        The validation images.
    labels_ : ndarray or None
        Their labels, when given.
    maps_ : WordMaps
        The validation images' word maps.
    reads_ : dict of str to csr_matrix
        Receptive fields of each layer over the modelled layer below (the output reads every top position).
    statistics_ : CooccurrenceStatistics
        Word and pair counts.
    """

    def __init__(self, dictionary: SignDictionary, nodes_per_layer: int = 3, smoothing: float = 1.0, class_names: list[str] | None = None):
        self.dictionary = dictionary
        self.nodes_per_layer = nodes_per_layer
        self.smoothing = smoothing
        self.class_names = class_names

    def __sklearn_clone__(self) -> InferenceGraphBuilder:
        """An unfitted builder with the same parameters, sharing the (read-only, fitted) dictionary."""
        return type(self)(**self.get_params(deep=False))

    @property
    def layers(self) -> list[str]:
        """Modelled layers input to output, the output layer last."""
        return [*self.dictionary.layers_, OUTPUT]

    def fit(self, X, y=None) -> InferenceGraphBuilder:
        """Encode the validation images and count co-occurrences.

        Parameters
        ----------
        X : array-like or Tensor
            (N, C, H, W) normalised validation images.
        y : array-like, optional
            (N,) labels, kept for reports.

        Returns
        -------
        InferenceGraphBuilder
            self, fitted.

        Raises
        ------
        NotFittedError
            When the dictionary is not fitted.
        """
        check_is_fitted(self.dictionary, "dictionaries_")
        self.images_ = as_images(X)
        self.labels_ = None if y is None else np.asarray(y)
        self.maps_: WordMaps = self.dictionary.encode(self.images_)
        fields = self.dictionary.fields_
        top = self.dictionary.layers_[-1]
        self.reads_ = {layer: fields.reads[(fields.below(layer), layer)] for layer in self.dictionary.layers_[1:]}
        top_positions = fields.shapes[top][0] * fields.shapes[top][1]
        self.reads_[OUTPUT] = sp.csr_matrix(np.ones((1, top_positions), dtype=np.float32))  # the output reads every position
        flat = {layer: self.maps_.flat(layer) for layer in self.layers}
        self.statistics_ = CooccurrenceStatistics.from_words(self.layers, flat, self.reads_, self.dictionary.sizes_, self.smoothing)
        return self

    def class_name(self, index: int) -> str:
        """The name of class `index` (``class i`` without class names).

        Parameters
        ----------
        index : int
            Class index.

        Returns
        -------
        str
        """
        return self.class_names[index] if self.class_names else f"class {index}"

    def class_index(self, cls: int | str) -> int:
        """The output word of a class, by `phenolens.data.containers.find_class`'s rule.

        Parameters
        ----------
        cls : int or str
            Class name, or index (a string of digits that names no class is an index).

        Returns
        -------
        int
            The output word (the class's index).

        Raises
        ------
        PhenolensError
            As `find_class` does: a name of no class, an index past the output words.
        """
        return find_class(cls, self.class_names, self.dictionary.output_dictionary_.n_words)  # a name first: folders named 1, 2, ...

    def class_graph(self, cls: int | str) -> InferenceGraph:
        """The class graph: Omega = the validation images predicted as `cls`.

        Parameters
        ----------
        cls : int or str
            Class index or name.

        Returns
        -------
        InferenceGraph
            Nodes and edges, with Omega's indices in `images`.

        Raises
        ------
        PhenolensError
            For an unknown class or one no validation image is predicted as.
        NotFittedError
            Before `fit`.
        """
        check_is_fitted(self, "statistics_")
        index = self.class_index(cls)
        omega = np.flatnonzero(self.maps_.words[OUTPUT].ravel() == index)
        if len(omega) == 0:
            raise PhenolensError(f"no validation image is predicted as {self.class_name(index)!r}; use more validation images or another class")
        words = {layer: self.maps_.flat(layer, omega) for layer in self.layers}
        return select_nodes(self.statistics_, words, self.reads_, index, self.nodes_per_layer, "class", self.class_name(index), omega)

    def image_graph(self, image: np.ndarray, label: str = "image") -> InferenceGraph:
        """The image graph of one image (Omega = that image).

        Parameters
        ----------
        image : ndarray
            (C, H, W) normalised image.
        label : str
            How the graph names the image.

        Returns
        -------
        InferenceGraph
            Nodes and edges; its `word_maps` hold the image's word maps (for drawing where words occur).

        Raises
        ------
        NotFittedError
            Before `fit`.
        """
        check_is_fitted(self, "statistics_")
        maps = self.dictionary.encode(as_images(np.asarray(image)[None]))
        top = int(maps.words[OUTPUT].ravel()[0])
        words = {layer: maps.flat(layer) for layer in self.layers}
        graph = select_nodes(self.statistics_, words, self.reads_, top, self.nodes_per_layer, "image", f"{label} (predicted {self.class_name(top)})")
        graph.word_maps = maps
        return graph

    def examples(self, layer: str, word: int, count: int = 6) -> np.ndarray:
        """The validation positions that hold a word most confidently, one per image first.

        Parameters
        ----------
        layer : str
            A modelled layer.
        word : int
            A word of it.
        count : int
            How many positions.

        Returns
        -------
        ndarray
            (m, 3) (image, row, col), m <= count, highest posterior first.

        Raises
        ------
        NotFittedError
            Before `fit`.
        """
        check_is_fitted(self, "statistics_")
        holding = np.argwhere(self.maps_.words[layer] == word)
        if len(holding) == 0:
            return holding
        scores = self.maps_.scores[layer][tuple(holding.T)]
        # one position per image first, so the examples show different images
        order = np.lexsort((-scores, holding[:, 0]))
        first_per_image = order[np.r_[True, np.diff(holding[order, 0]) != 0]]
        best = first_per_image[np.argsort(-scores[first_per_image], kind="stable")]
        return holding[best[:count]]
