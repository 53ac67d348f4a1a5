"""Receptive-field primitives: sliding-window geometry as sparse boolean read matrices.

Position p of a layer reads a set R(p) of positions of an earlier layer. For one sliding window
(convolution or pooling) R(p) = {stride * p - padding + dilation * j} clipped to the map; for a
chain of layers the exact relation, border clipping at every intermediate map included, is the
product of the windows' (positions out, positions in) boolean matrices, and a residual sum is the
union (logical or) of its branches.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

INPUT = "input"  # name of the network input as a source layer


def _pair(value) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def window(kernel, stride=None, padding=0, dilation=1) -> tuple[tuple[int, int], np.ndarray]:
    """Geometry of a sliding window (convolution or pooling): output p reads stride*p - padding + dilation*j.

    Parameters
    ----------
    kernel : int or pair
        Kernel size.
    stride : int or pair, optional
        Stride (default: the kernel size, as for pooling).
    padding : int, pair, "same" or "valid"
        Padding.
    dilation : int or pair
        Dilation.

    Returns
    -------
    tuple of ((int, int), ndarray)
        The stride and the (k, 2) offsets j read relative to stride*p.
    """
    kernel, dilation = _pair(kernel), _pair(dilation)
    stride = _pair(stride if stride not in (None, []) else kernel)
    if padding == "same":
        padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
    padding = (0, 0) if padding == "valid" else _pair(padding)
    rows = -padding[0] + dilation[0] * np.arange(kernel[0])
    cols = -padding[1] + dilation[1] * np.arange(kernel[1])
    return stride, np.stack(np.meshgrid(rows, cols, indexing="ij"), -1).reshape(-1, 2)


def grid(shape: tuple[int, int]) -> np.ndarray:
    """Coordinates of every position of a map.

    Parameters
    ----------
    shape : (int, int)
        (H, W).

    Returns
    -------
    ndarray
        (H*W, 2) row-major (row, col).
    """
    return np.stack(np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij"), -1).reshape(-1, 2)


def window_matrix(out_shape: tuple[int, int], in_shape: tuple[int, int], stride: tuple[int, int], offsets: np.ndarray) -> sp.csr_matrix:
    """The read matrix of one window: output p reads input stride*p + o when inside the map.

    Parameters
    ----------
    out_shape, in_shape : (int, int)
        Output and input map sizes.
    stride : (int, int)
        Stride.
    offsets : ndarray
        (k, 2) offsets (from `window`).

    Returns
    -------
    csr_matrix
        (H_out*W_out, H_in*W_in) boolean (1.0 where read).
    """
    read = grid(out_shape)[:, None, :] * np.asarray(stride) + offsets[None]
    inside = (read >= 0).all(-1) & (read[..., 0] < in_shape[0]) & (read[..., 1] < in_shape[1])
    rows = np.broadcast_to(np.arange(len(read))[:, None], inside.shape)[inside]
    cols = read[..., 0][inside] * in_shape[1] + read[..., 1][inside]
    shape = (out_shape[0] * out_shape[1], in_shape[0] * in_shape[1])
    return boolean(sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=shape))


def boolean(matrix: sp.spmatrix) -> sp.csr_matrix:
    """A sparse matrix's pattern: every stored entry set to 1.0 (duplicates summed first).

    Parameters
    ----------
    matrix : sparse matrix
        Any sparse matrix (a product or sum of read matrices).

    Returns
    -------
    csr_matrix
        Same shape, entries 1.0.
    """
    matrix = sp.csr_matrix(matrix)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def chain_pairs(layers: list[str]) -> list[tuple[str, str]]:
    """The (earlier, later) layer pairs SIGN needs read matrices for.

    Parameters
    ----------
    layers : list of str
        Modelled layers, input to output.

    Returns
    -------
    list of (str, str)
        Consecutive pairs from ``INPUT``, then ``INPUT`` to every later layer.
    """
    chain = [INPUT, *layers]
    return list(zip(chain[:-1], chain[1:])) + [(INPUT, layer) for layer in layers[1:]]
