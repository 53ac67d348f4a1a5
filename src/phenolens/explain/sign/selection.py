"""Maximum-likelihood node selection (SIGN Algorithm 1) and the inference graph it produces.

For a set of images Omega, start from the output word and go down the layers. At each layer
choose the Z words t with the largest

    S(Omega, S, t) = sum_{s in S} Q_ts(Omega) log P(h_l' = t | h_l = s, q in R(p)) / P(h_l' = t),

where S holds the words chosen in the layer above and Q_ts(Omega) counts the occurrences of t in
the receptive fields of the positions holding s in Omega's images. Edges carry
e_ij = S(Omega, {z_i}, z_j). Because S is a sum over t, the Z largest scores maximise it jointly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from phenolens.explain.sign.statistics import CooccurrenceStatistics, cooccurrence


@dataclass(frozen=True)
class Node:
    """A selected word.

    Attributes
    ----------
    layer : str
        Its layer.
    word : int
        The word.
    score : float
        S(Omega, words chosen above, word); the output word has score 0.
    """

    layer: str
    word: int
    score: float

    @property
    def key(self) -> str:
        """``layer:word``, the node's id in edges and JSON."""
        return f"{self.layer}:{self.word}"


@dataclass(frozen=True)
class Edge:
    """A weighted connection between selected words of consecutive layers.

    Attributes
    ----------
    upper : str
        `Node.key` of the word in the higher layer.
    lower : str
        `Node.key` of the word in the lower layer.
    weight : float
        e = Q * log-ratio for this single pair.
    log_ratio : float
        log P(lower | upper) / P(lower), natural log.
    """

    upper: str
    lower: str
    weight: float
    log_ratio: float


@dataclass
class InferenceGraph:
    """Selected words per layer and weighted edges between consecutive layers.

    Attributes
    ----------
    kind : str
        ``class`` or ``image``.
    label : str
        What the graph explains.
    layers : list of str
        Input to output, the output layer last.
    nodes : list of Node
        Top layer first.
    edges : list of Edge
        Between consecutive layers.
    images : ndarray
        Omega's indices in the validation set the statistics were counted on (empty for an image outside it).
    word_maps : WordMaps or None
        The analysed image's word maps (image graphs), for drawing where the words occur.
    """

    kind: str
    label: str
    layers: list[str]
    nodes: list[Node]
    edges: list[Edge]
    images: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    word_maps: Any = None  # WordMaps of the analysed image, for image graphs

    def nodes_of(self, layer: str) -> list[Node]:
        """The selected words of one layer.

        Parameters
        ----------
        layer : str
            A layer of the graph.

        Returns
        -------
        list of Node
        """
        return [node for node in self.nodes if node.layer == layer]

    def strongest_edges(self, per_lower: int = 2) -> list[Edge]:
        """The heaviest connections of every lower word to the layer above.

        Parameters
        ----------
        per_lower : int
            Connections kept per lower word.

        Returns
        -------
        list of Edge
        """
        kept = []
        for node in self.nodes:
            mine = sorted((e for e in self.edges if e.lower == node.key), key=lambda e: -e.weight)
            kept.extend(mine[:per_lower])
        return kept

    def to_dict(self) -> dict:
        """The graph as a JSON-able node/edge list.

        Returns
        -------
        dict
            kind, label, layers, images, nodes (with ``id``) and edges.
        """
        return {
            "kind": self.kind,
            "label": self.label,
            "layers": self.layers,
            "images": [int(i) for i in self.images],
            "nodes": [{"id": n.key, **asdict(n)} for n in self.nodes],
            "edges": [asdict(e) for e in self.edges],
        }


def select_nodes(
    statistics: CooccurrenceStatistics,
    omega_words: dict[str, np.ndarray],
    reads: dict[str, sp.csr_matrix],
    top_word: int,
    nodes_per_layer: int | dict[str, int] = 3,
    kind: str = "class",
    label: str = "",
    images: np.ndarray | None = None,
) -> InferenceGraph:
    """Maximum-likelihood node selection (SIGN Algorithm 1), from the output layer down.

    Words that never occur in the receptive fields of the chosen words are never selected.

    Parameters
    ----------
    statistics : CooccurrenceStatistics
        Counted on the validation set; its last layer is the output layer.
    omega_words : dict of str to ndarray
        (n, P) flattened word map of Omega's images per layer.
    reads : dict of str to csr_matrix
        Receptive-field matrix of each layer over the layer below.
    top_word : int
        The output word (class) the graph explains.
    nodes_per_layer : int or dict of str to int
        Words selected per layer.
    kind : str
        ``class`` or ``image``.
    label : str
        What the graph explains.
    images : ndarray, optional
        Omega's indices in the validation set.

    Returns
    -------
    InferenceGraph
    """
    layers = statistics.layers
    top = layers[-1]
    chosen = np.array([top_word])
    nodes = [Node(top, int(top_word), 0.0)]
    edges: list[Edge] = []
    for upper, lower in zip(layers[:0:-1], layers[-2::-1]):
        n_upper, n_lower = len(statistics.counts[upper]), len(statistics.counts[lower])
        occurrences = cooccurrence(omega_words[upper], omega_words[lower], reads[upper], n_upper, n_lower)[chosen]
        contribution = occurrences * statistics.log_ratio(upper)[chosen]  # (|S|, K_lower): e for every pair
        score = contribution.sum(0)
        z = nodes_per_layer[lower] if isinstance(nodes_per_layer, dict) else nodes_per_layer
        candidates = np.flatnonzero(occurrences.sum(0) > 0)
        picked = candidates[np.argsort(-score[candidates], kind="stable")[:z]]
        nodes.extend(Node(lower, int(t), float(score[t])) for t in picked)
        for row, s in enumerate(chosen):
            for t in picked:
                edges.append(Edge(f"{upper}:{s}", f"{lower}:{t}", float(contribution[row, t]), float(statistics.log_ratio(upper)[s, t])))
        chosen = picked
    return InferenceGraph(kind, label, list(layers), nodes, edges, np.asarray(images if images is not None else [], dtype=int))
