"""Word co-occurrence statistics between consecutive modelled layers.

Every position p of a layer holds one word (its most probable dictionary component); every
position q in its receptive field R(p) in the layer below holds one word too. N(k, k') counts the
pairs (p, q in R(p)) with word k at p and k' at q, over all images and positions. From it,
P(h_l' = k' | h_l = k) is the pair-weighted average over offsets, and the point-wise association
log P(h_l' = t | h_l = s) / P(h_l' = t) is what node selection scores with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

PAIRS_PER_CHUNK = 4_000_000  # bound the (images x pairs) key array of one bincount


def cooccurrence(upper: np.ndarray, lower: np.ndarray, reads: sp.csr_matrix, n_upper: int, n_lower: int) -> np.ndarray:
    """(n_upper, n_lower) counts of word pairs (upper word at p, lower word at q in R(p)).

    `upper` (N, P_upper) and `lower` (N, P_lower) are flattened (row-major) word maps of the same
    N images; `reads` is the (P_upper, P_lower) boolean receptive-field matrix.
    """
    pairs = reads.tocoo()
    rows, cols = pairs.row, pairs.col
    counts = np.zeros(n_upper * n_lower, dtype=np.int64)
    images_per_chunk = max(1, PAIRS_PER_CHUNK // max(1, len(rows)))
    for start in range(0, len(upper), images_per_chunk):
        keys = upper[start : start + images_per_chunk, rows].astype(np.int64) * n_lower + lower[start : start + images_per_chunk, cols]
        counts += np.bincount(keys.ravel(), minlength=n_upper * n_lower)
    return counts.reshape(n_upper, n_lower).astype(np.float64)


def word_counts(words: np.ndarray, n_words: int) -> np.ndarray:
    """(n_words,) occurrences of each word over all images and positions."""
    return np.bincount(words.ravel(), minlength=n_words).astype(np.float64)


@dataclass
class CooccurrenceStatistics:
    """Counts over a validation set for a chain of layers ordered input to output.

    `pair_counts[layer]` is N between `layer` (rows) and the modelled layer below it (columns);
    `counts[layer]` the word occurrences of `layer`. `smoothing` is the Laplace pseudo-count.
    """

    layers: list[str]
    counts: dict[str, np.ndarray]
    pair_counts: dict[str, np.ndarray]
    smoothing: float = 1.0

    @classmethod
    def from_words(
        cls, layers: list[str], words: dict[str, np.ndarray], reads: dict[str, sp.csr_matrix], sizes: dict[str, int], smoothing: float = 1.0
    ):  # noqa: E501
        """Count words and pairs. `reads[layer]` relates `layer` to the layer below; `sizes[layer]` is K."""
        counts = {layer: word_counts(words[layer], sizes[layer]) for layer in layers}
        pairs = {
            upper: cooccurrence(words[upper], words[lower], reads[upper], sizes[upper], sizes[lower]) for lower, upper in zip(layers[:-1], layers[1:])
        }
        return cls(list(layers), counts, pairs, smoothing)

    def below(self, layer: str) -> str:
        return self.layers[self.layers.index(layer) - 1]

    def marginal(self, layer: str) -> np.ndarray:
        """P(h_layer = k), smoothed."""
        counts = self.counts[layer] + self.smoothing
        return counts / counts.sum()

    def conditional(self, upper: str) -> np.ndarray:
        """(K_upper, K_lower) P(h_lower = t | h_upper = s, q in R(p)), smoothed, averaged over offsets."""
        counts = self.pair_counts[upper] + self.smoothing
        return counts / counts.sum(1, keepdims=True)

    def log_ratio(self, upper: str) -> np.ndarray:
        """(K_upper, K_lower) log P(h_lower = t | h_upper = s) / P(h_lower = t) (natural log)."""
        return np.log(self.conditional(upper)) - np.log(self.marginal(self.below(upper)))[None, :]
