"""Gabor dictionaries over every time of flight, as FFT operators and as explicit real matrices.

A complex Gabor atom a(t) = g(t - tau; sigma) exp(i omega (t - tau)) is scaled so that its real
(cosine) and imaginary (sine) parts have unit norm: a real unit-norm echo of amplitude x and phase
phi is then Re(x e^{i phi} a), and a coefficient's modulus is the echo amplitude. The dictionary for
a pulse distribution is the Cartesian product of 1, 3 or 6 widths and centre frequencies
(none / narrow / wide: 500, 4,500 and 18,000 complex atoms on 500 samples).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from phenolens.echoes.pulse import DISTRIBUTIONS, PulseShape, angular_frequency

GRID_SIZES = {"none": 1, "narrow": 3, "wide": 6}


@dataclass
class GaborDictionary:
    """Complex Gabor atoms for every (width, frequency) shape and every time of flight 0..length-1."""

    sigmas: np.ndarray  # samples, one per shape
    omegas: np.ndarray  # radians per sample, one per shape
    length: int
    freqs_mhz: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        self.sigmas = np.asarray(self.sigmas, dtype=np.float64).ravel()
        self.omegas = np.asarray(self.omegas, dtype=np.float64).ravel()
        self.half = int(np.ceil(4.0 * self.sigmas.max()))
        self.n_fft = int(2 ** np.ceil(np.log2(self.length + 2 * self.half)))

    @classmethod
    def for_distribution(cls, distribution: str, pulse: PulseShape = PulseShape(), length: int = 500) -> GaborDictionary:
        """The product grid of widths and frequencies that covers a simulator pulse distribution.

        Parameters
        ----------
        distribution : str
            none, narrow or wide.
        pulse : PulseShape
            The reference pulse.
        length : int
            Samples per signal.

        Returns
        -------
        GaborDictionary
        """
        (ratio_low, ratio_high), freqs = DISTRIBUTIONS[distribution]
        size = GRID_SIZES[distribution]
        widths = pulse.sigma * np.linspace(ratio_low, ratio_high, size)
        freq_grid = np.full(1, pulse.freq_mhz) if freqs is None else np.linspace(freqs[0], freqs[1], size)
        sigma, freq = (grid.ravel() for grid in np.meshgrid(widths, freq_grid, indexing="ij"))
        return cls(sigma, angular_frequency(freq, pulse.fs_mhz), length, freq)

    @property
    def n_shapes(self) -> int:
        """Number of (width, frequency) shapes."""
        return len(self.sigmas)

    @property
    def n_atoms(self) -> int:
        """Number of complex atoms (shapes x times of flight)."""
        return self.n_shapes * self.length

    @cached_property
    def prototypes(self) -> np.ndarray:
        """(P, 2 half + 1) complex atoms centred on the middle sample, real and imaginary parts of unit norm."""
        offsets = np.arange(-self.half, self.half + 1, dtype=np.float64)
        envelope = np.exp(-0.5 * (offsets / self.sigmas[:, None]) ** 2)
        cosine = envelope * np.cos(self.omegas[:, None] * offsets)
        sine = envelope * np.sin(self.omegas[:, None] * offsets)
        return cosine / np.linalg.norm(cosine, axis=1, keepdims=True) + 1j * sine / np.linalg.norm(sine, axis=1, keepdims=True)

    @cached_property
    def _prototype_spectra(self) -> np.ndarray:
        padded = np.zeros((self.n_shapes, self.n_fft), dtype=np.complex128)
        padded[:, : 2 * self.half + 1] = self.prototypes
        return np.fft.fft(padded, axis=1)

    def correlate(self, signals: np.ndarray) -> np.ndarray:
        """D^H y for a batch of real signals: entry <y, a_{p,tau}>.

        Parameters
        ----------
        signals : numpy.ndarray
            (B, T) real signals.

        Returns
        -------
        numpy.ndarray
            Complex (B, P, T).
        """
        spectra = np.fft.fft(np.asarray(signals, dtype=np.float64), self.n_fft, axis=-1)
        full = np.fft.ifft(spectra[:, None, :] * np.conj(self._prototype_spectra)[None], axis=-1)
        # correlation lag k holds sum_t y(t) conj(p(t - k)); the atom at tau starts at tau - half
        return np.roll(full, self.half, axis=-1)[..., : self.length]

    def synthesize(self, codes: np.ndarray) -> np.ndarray:
        """Re(D c) for complex codes.

        Parameters
        ----------
        codes : numpy.ndarray
            Complex (B, P, T).

        Returns
        -------
        numpy.ndarray
            Real signals (B, T).
        """
        spectra = np.fft.fft(codes, self.n_fft, axis=-1)
        full = np.fft.ifft(np.sum(spectra * self._prototype_spectra[None], axis=1), axis=-1)
        return np.real(full[:, self.half : self.half + self.length])

    @cached_property
    def lipschitz(self) -> float:
        """Largest eigenvalue of the normal operator c -> D^H Re(D c), by power iteration."""
        rng = np.random.default_rng(0)
        codes = rng.standard_normal((1, self.n_shapes, self.length)) + 1j * rng.standard_normal((1, self.n_shapes, self.length))
        value = 1.0
        for _ in range(60):
            codes = self.correlate(self.synthesize(codes))
            value = float(np.linalg.norm(codes))
            codes /= value
        return value

    def atom_pairs(self, shapes: np.ndarray, tofs: np.ndarray) -> np.ndarray:
        """Cosine and sine parts of atoms on the signal grid.

        Parameters
        ----------
        shapes, tofs : numpy.ndarray
            Index arrays of the same shape (...).

        Returns
        -------
        numpy.ndarray
            (..., 2, T), each part of unit norm (zero where it vanishes).
        """
        t = np.arange(self.length, dtype=np.float64)
        offsets = t - np.asarray(tofs, dtype=np.float64)[..., None]
        sigma = self.sigmas[shapes][..., None]
        omega = self.omegas[shapes][..., None]
        envelope = np.exp(-0.5 * (offsets / sigma) ** 2)
        pairs = np.stack([envelope * np.cos(omega * offsets), envelope * np.sin(omega * offsets)], axis=-2)
        norms = np.linalg.norm(pairs, axis=-1, keepdims=True)
        return np.divide(pairs, norms, out=np.zeros_like(pairs), where=norms > 0)

    def real_matrix(self) -> np.ndarray:
        """Explicit (T, 2 P T) float64 matrix: for complex atom j = p T + tau, columns 2j (cosine) and 2j+1 (sine),
        each of unit norm on the (possibly truncated) grid. For scikit-learn's OMP, which is real-valued.

        Built once per dictionary (a long signal's windows share it).

        Returns
        -------
        numpy.ndarray
        """
        return self._real_matrix

    @cached_property
    def _real_matrix(self) -> np.ndarray:
        shapes, tofs = np.divmod(np.arange(self.n_atoms), self.length)
        pairs = self.atom_pairs(shapes, tofs)  # (A, 2, T)
        return np.ascontiguousarray(pairs.reshape(2 * self.n_atoms, self.length).T)

    def describe(self) -> dict:
        """Shapes, atoms, widths and frequencies (for reports)."""
        return {
            "shapes": self.n_shapes,
            "atoms": self.n_atoms,
            "sigma_samples": sorted({round(float(s), 3) for s in self.sigmas}),
            "freq_mhz": sorted({round(float(f), 3) for f in self.freqs_mhz}),
        }


def codes_to_activation(codes: np.ndarray) -> np.ndarray:
    """Per time of flight, the largest coefficient modulus over shapes.

    Parameters
    ----------
    codes : numpy.ndarray
        Complex (B, P, T).

    Returns
    -------
    numpy.ndarray
        (B, T).
    """
    return np.abs(codes).max(axis=1)
