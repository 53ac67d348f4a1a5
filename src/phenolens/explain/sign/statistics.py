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
    """Count word pairs (upper word at p, lower word at q in R(p)) over images and positions.

    Parameters
    ----------
    upper, lower : ndarray
        (N, P_upper) and (N, P_lower) flattened (row-major) word maps of the same N images.
    reads : csr_matrix
        (P_upper, P_lower) boolean receptive-field matrix.
    n_upper, n_lower : int
        K of the two layers.

    Returns
    -------
    ndarray
        (n_upper, n_lower) counts.
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
    """Occurrences of each word over all images and positions.

    Parameters
    ----------
    words : ndarray
        Word maps of any shape.
    n_words : int
        K.

    Returns
    -------
    ndarray
        (K,) counts.
    """
    return np.bincount(words.ravel(), minlength=n_words).astype(np.float64)


@dataclass
class CooccurrenceStatistics:
    """Counts over a validation set for a chain of layers ordered input to output.

    Attributes
    ----------
    layers : list of str
        Input to output, the output layer last.
    counts : dict of str to ndarray
        Word occurrences of every layer.
    pair_counts : dict of str to ndarray
        N between a layer (rows) and the modelled layer below it (columns).
    smoothing : float
        Laplace pseudo-count.
    """

    layers: list[str]
    counts: dict[str, np.ndarray]
    pair_counts: dict[str, np.ndarray]
    smoothing: float = 1.0

    @classmethod
    def from_words(
        cls, layers: list[str], words: dict[str, np.ndarray], reads: dict[str, sp.csr_matrix], sizes: dict[str, int], smoothing: float = 1.0
    ):  # noqa: E501
        """Count words and pairs.

        Parameters
        ----------
        layers : list of str
            Input to output.
        words : dict of str to ndarray
            (N, P) flattened word maps per layer.
        reads : dict of str to csr_matrix
            Receptive fields of each layer over the layer below.
        sizes : dict of str to int
            K per layer.
        smoothing : float
            Laplace pseudo-count.

        Returns
        -------
        CooccurrenceStatistics
        """
        counts = {layer: word_counts(words[layer], sizes[layer]) for layer in layers}
        pairs = {
            upper: cooccurrence(words[upper], words[lower], reads[upper], sizes[upper], sizes[lower]) for lower, upper in zip(layers[:-1], layers[1:])
        }
        return cls(list(layers), counts, pairs, smoothing)

    def below(self, layer: str) -> str:
        """The layer just below a layer.

        Parameters
        ----------
        layer : str
            Any layer but the first.

        Returns
        -------
        str
        """
        return self.layers[self.layers.index(layer) - 1]

    def marginal(self, layer: str) -> np.ndarray:
        """Smoothed word probabilities P(h_layer = k).

        Parameters
        ----------
        layer : str
            A layer.

        Returns
        -------
        ndarray
            (K,).
        """
        counts = self.counts[layer] + self.smoothing
        return counts / counts.sum()

    def conditional(self, upper: str) -> np.ndarray:
        """Smoothed P(h_lower = t | h_upper = s, q in R(p)), averaged over offsets.

        Parameters
        ----------
        upper : str
            Any layer but the first.

        Returns
        -------
        ndarray
            (K_upper, K_lower).
        """
        counts = self.pair_counts[upper] + self.smoothing
        return counts / counts.sum(1, keepdims=True)

    def log_ratio(self, upper: str) -> np.ndarray:
        """Point-wise association log P(h_lower = t | h_upper = s) / P(h_lower = t) (natural log).

        Parameters
        ----------
        upper : str
            Any layer but the first.

        Returns
        -------
        ndarray
            (K_upper, K_lower).
        """
        return np.log(self.conditional(upper)) - np.log(self.marginal(self.below(upper)))[None, :]
