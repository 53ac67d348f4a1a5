"""`InferenceGraphBuilder`: statistics over a validation set, then class and image inference graphs."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from phenolens.core.errors import PhenolensError
from phenolens.explain.sign.dictionary import SignDictionary, WordMaps, as_images
from phenolens.explain.sign.layers import OUTPUT
from phenolens.explain.sign.selection import InferenceGraph, select_nodes
from phenolens.explain.sign.statistics import CooccurrenceStatistics


class InferenceGraphBuilder:
    """Counts word co-occurrences of a fitted `SignDictionary` on validation images and draws graphs.

    `fit(X, y)` encodes the validation images and counts; `class_graph(c)` uses the images predicted
    as class c as Omega; `image_graph(image)` uses one image. Learned: `maps_` (the validation
    words), `statistics_`, `reads_` (receptive fields of each layer over the one below), `images_`.
    """

    def __init__(self, dictionary: SignDictionary, nodes_per_layer: int = 3, smoothing: float = 1.0, class_names: list[str] | None = None):
        self.dictionary = dictionary
        self.nodes_per_layer, self.smoothing, self.class_names = nodes_per_layer, smoothing, class_names

    @property
    def layers(self) -> list[str]:
        """Modelled layers input to output, the output layer last."""
        return [*self.dictionary.layers_, OUTPUT]

    def fit(self, X, y=None) -> InferenceGraphBuilder:
        """Encode validation images `X` (labels `y` are kept for reports) and count co-occurrences."""
        self.dictionary._check_fitted()
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

    def _check_fitted(self) -> None:
        if not hasattr(self, "statistics_"):
            raise PhenolensError("this InferenceGraphBuilder is not fitted; call fit(validation_images) first")

    def class_name(self, index: int) -> str:
        return self.class_names[index] if self.class_names else f"class {index}"

    def class_index(self, cls: int | str) -> int:
        """The output word of a class given by index or name."""
        n = self.dictionary.output_dictionary_.n_words
        if isinstance(cls, str) and not cls.isdigit():
            if not self.class_names or cls not in self.class_names:
                raise PhenolensError(f"unknown class {cls!r}; choose one of: {', '.join(self.class_names or [str(i) for i in range(n)])}")
            return self.class_names.index(cls)
        if not 0 <= int(cls) < n:
            raise PhenolensError(f"class index {cls} is outside 0..{n - 1}")
        return int(cls)

    def class_graph(self, cls: int | str) -> InferenceGraph:
        """The inference graph of the validation images predicted as `cls` (index or name)."""
        self._check_fitted()
        index = self.class_index(cls)
        omega = np.flatnonzero(self.maps_.words[OUTPUT].ravel() == index)
        if len(omega) == 0:
            raise PhenolensError(f"no validation image is predicted as {self.class_name(index)!r}; use more validation images or another class")
        words = {layer: self.maps_.flat(layer, omega) for layer in self.layers}
        return select_nodes(self.statistics_, words, self.reads_, index, self.nodes_per_layer, "class", self.class_name(index), omega)

    def image_graph(self, image: np.ndarray, label: str = "image") -> InferenceGraph:
        """The inference graph of one (C, H, W) image; its maps are kept in `graph_maps_` for drawing."""
        self._check_fitted()
        maps = self.dictionary.encode(as_images(np.asarray(image)[None]))
        self.graph_maps_ = maps
        top = int(maps.words[OUTPUT].ravel()[0])
        words = {layer: maps.flat(layer) for layer in self.layers}
        return select_nodes(self.statistics_, words, self.reads_, top, self.nodes_per_layer, "image", f"{label} (predicted {self.class_name(top)})")

    def examples(self, layer: str, word: int, count: int = 6) -> np.ndarray:
        """(m, 3) (image, row, col) of the `count` validation positions holding `word` with the highest posterior."""
        self._check_fitted()
        holding = np.argwhere(self.maps_.words[layer] == word)
        if len(holding) == 0:
            return holding
        scores = self.maps_.scores[layer][tuple(holding.T)]
        # one position per image first, so the examples show different images
        order = np.lexsort((-scores, holding[:, 0]))
        first_per_image = order[np.r_[True, np.diff(holding[order, 0]) != 0]]
        best = first_per_image[np.argsort(-scores[first_per_image], kind="stable")]
        return holding[best[:count]]
