"""Sparse-coding solvers on a Gabor dictionary: ISTA (vectorised) and scikit-learn's real-column OMP.

Each solver maps a batch of real signals (B, T) to complex codes (B, P, T) on the dictionary's
atoms; `codes_to_activation` turns codes into a per-time-of-flight amplitude for detection.
Stopping rules follow US-CNN's baselines: residual energy below a fraction of the signal energy or
a maximum number of atoms (3 % / 15 in simulation, 25 % / 4 on real signals). The greedy pursuits
over complex atoms (SMP, and the complex-atom OMP reference) are in `pursuit.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from phenolens.echoes.dictionary import GaborDictionary


@dataclass(frozen=True)
class StoppingRule:
    """Stop when ||residual||^2 <= residual_ratio ||y||^2 or when max_atoms complex atoms are used."""

    residual_ratio: float = 0.03
    max_atoms: int = 15


SIMULATION_STOP = StoppingRule(0.03, 15)
REAL_STOP = StoppingRule(0.25, 4)


def sklearn_omp_codes(dictionary: GaborDictionary, signals: np.ndarray, stop: StoppingRule = SIMULATION_STOP, chunk: int = 64) -> np.ndarray:
    """scikit-learn's `orthogonal_mp` on the real cosine/sine columns of the dictionary.

    scikit-learn's OMP is real-valued and stops either on a residual tolerance or on a column count,
    not on whichever comes first. OMP's path is nested, so both rules are honoured with two calls:
    the capped run (2 x max_atoms real columns = max_atoms complex atoms), and, for the signals whose
    capped residual is already below the tolerance, the tolerance run, which then stops earlier on
    the same path. Complex coefficients are rebuilt as cos-coef - i sin-coef. Selecting single real
    columns, it may take a shifted cosine for an echo of another phase. This is the `omp` baseline
    (the library's OMP, as the comparison asks); `pursuit.omp_codes` is a faster complex-atom reference.

    Parameters
    ----------
    dictionary : GaborDictionary
        The atoms.
    signals : numpy.ndarray
        (B, T) real signals, T the dictionary's length.
    stop : StoppingRule
        Residual-energy fraction and atom cap.
    chunk : int
        Signals per call to scikit-learn.

    Returns
    -------
    numpy.ndarray
        Complex codes (B, P, T).
    """
    import warnings

    from sklearn.linear_model import orthogonal_mp

    signals = np.asarray(signals, dtype=np.float64)
    matrix = dictionary.real_matrix()
    codes = np.zeros((len(signals), dictionary.n_atoms), dtype=np.complex128)
    energy = np.sum(signals**2, axis=1)
    for start in range(0, len(signals), chunk):
        rows = slice(start, start + chunk)
        # unit-energy targets make one scalar tolerance mean "residual_ratio of each signal's energy"
        scale = np.sqrt(np.maximum(energy[rows], 1e-30))
        targets = (signals[rows] / scale[:, None]).T
        with warnings.catch_warnings():
            # neighbouring atoms are nearly collinear: stopping early on linear dependence is expected, not an error
            warnings.filterwarnings("ignore", message="Orthogonal matching pursuit ended prematurely")
            coef = orthogonal_mp(matrix, targets, n_nonzero_coefs=min(2 * stop.max_atoms, matrix.shape[1]))
            coef = coef.reshape(matrix.shape[1], -1)
            residual = np.sum((targets - matrix @ coef) ** 2, axis=0)
            early = np.flatnonzero(residual <= stop.residual_ratio)
            if early.size:
                refit = orthogonal_mp(matrix, targets[:, early], tol=stop.residual_ratio)
                coef[:, early] = refit.reshape(matrix.shape[1], -1)
        coef = coef.T * scale[:, None]
        codes[rows] = coef[:, 0::2] - 1j * coef[:, 1::2]
    return codes.reshape(len(signals), dictionary.n_shapes, dictionary.length)


def soft_threshold(codes: np.ndarray, threshold: float) -> np.ndarray:
    """Complex soft thresholding: shrink each coefficient's modulus by `threshold`, keep its phase.

    Parameters
    ----------
    codes : numpy.ndarray
        Complex coefficients.
    threshold : float
        The shrinkage.

    Returns
    -------
    numpy.ndarray
        Shrunk coefficients, same shape.
    """
    modulus = np.abs(codes)
    return codes * (np.maximum(modulus - threshold, 0.0) / np.where(modulus > 0, modulus, 1.0))


def ista_codes(
    dictionary: GaborDictionary, signals: np.ndarray, iterations: int = 3, threshold: float = 0.1, step: float | None = None
) -> np.ndarray:
    """ISTA for min_c 1/2 ||y - Re(D c)||^2 + threshold ||c||_1, vectorised over the batch.

    c <- soft(c + step D^H (y - Re(D c)), step * threshold), from c = 0, with step 1/L (L the
    Lipschitz constant of the normal operator) unless given. US-CNN's baseline runs 3 iterations at
    threshold 0.1; more iterations converge to the LASSO solution.

    Parameters
    ----------
    dictionary : GaborDictionary
        The atoms.
    signals : numpy.ndarray
        (B, T) real signals.
    iterations : int
        ISTA steps.
    threshold : float
        The l_1 weight.
    step : float, optional
        Step size (default 1 / L).

    Returns
    -------
    numpy.ndarray
        Complex codes (B, P, T).
    """
    signals = np.asarray(signals, dtype=np.float64)
    step = 1.0 / dictionary.lipschitz if step is None else step
    codes = np.zeros((len(signals), dictionary.n_shapes, dictionary.length), dtype=np.complex128)
    for _ in range(iterations):
        residual = signals - dictionary.synthesize(codes)
        codes = soft_threshold(codes + step * dictionary.correlate(residual), step * threshold)
    return codes
