"""Physical simulator of overlapping ultrasonic echoes (US-CNN, Shpigler et al. 2022, section 3).

A signal is a sum of M ~ U{1..K} unit-norm Gaussian echoes with amplitudes U[alpha, 1] and phases
U[0, 2 pi]; the clean sum is scaled to unit energy and white Gaussian noise is added at the requested
SNR. Consecutive times of flight differ by an exponential gap of mean `mean_gap` sigma_0 restricted
to [1.5, 6] sigma_0 (sampled from the truncated distribution, as the original code redraws gaps that
fall outside, rather than piling them up on the bounds). The regression target is the spike train
smoothed by a Gaussian of width 0.2 sigma. Everything is vectorised over signals and seeded;
`cached_simulation` stores each dataset under the phenolens cache keyed by its settings.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from phenolens.core.errors import PhenolensError
from phenolens.core.logging import get_logger
from phenolens.core.outputs import atomic_write_bytes
from phenolens.core.seeding import numpy_rng
from phenolens.echoes.pulse import DISTRIBUTIONS, angular_frequency, echo_waveforms, gaussian_envelope
from phenolens.echoes.settings import EchoSimulationSettings

log = get_logger(__name__)

SIMULATOR_VERSION = 1  # bump when the generated numbers change, so caches are rebuilt


def simulation_key(settings: EchoSimulationSettings) -> str:
    """The cache key of a simulated dataset: a hash of its settings and the simulator version.

    Parameters
    ----------
    settings : EchoSimulationSettings
        What determines the dataset.

    Returns
    -------
    str
        16 hex digits.
    """
    payload = json.dumps({"version": SIMULATOR_VERSION, **settings.to_dict()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass
class EchoSet:
    """Simulated signals with their ground truth; echo arrays are (N, max_echoes), NaN where absent."""

    signals: np.ndarray  # (N, T) float32, noisy
    clean: np.ndarray  # (N, T) float32, unit energy
    heatmaps: np.ndarray  # (N, T) float32, regression targets
    tof: np.ndarray  # samples
    amplitude: np.ndarray  # in the unit-energy signal
    sigma: np.ndarray  # samples
    freq_mhz: np.ndarray
    phase: np.ndarray
    settings: EchoSimulationSettings

    ARRAYS = ("signals", "clean", "heatmaps", "tof", "amplitude", "sigma", "freq_mhz", "phase")

    def __len__(self) -> int:
        return len(self.signals)

    @property
    def counts(self) -> np.ndarray:
        """Echoes per signal (N,)."""
        return np.isfinite(self.tof).sum(axis=1)

    @property
    def noise(self) -> np.ndarray:
        """The added noise (N, T), float64."""
        return self.signals.astype(np.float64) - self.clean

    def subset(self, index) -> EchoSet:
        """The signals selected by `index`, with their ground truth.

        Parameters
        ----------
        index : slice or array-like
            Rows to keep.

        Returns
        -------
        EchoSet
        """
        return replace(self, **{name: getattr(self, name)[index] for name in self.ARRAYS})

    def to_bytes(self) -> bytes:
        """The set as an .npz file's bytes (arrays and the settings as JSON; no pickles).

        Returns
        -------
        bytes
        """
        buffer = io.BytesIO()
        np.savez(buffer, settings=json.dumps(self.settings.to_dict()), **{name: getattr(self, name) for name in self.ARRAYS})
        return buffer.getvalue()

    @classmethod
    def from_file(cls, path: str | Path) -> EchoSet:
        """Read a dataset written by `to_bytes` (no pickles).

        Parameters
        ----------
        path : path
            The .npz file.

        Returns
        -------
        EchoSet

        Raises
        ------
        PhenolensError
            When the file is not a phenolens echo dataset or its settings are invalid.
        """
        try:
            with np.load(path, allow_pickle=False) as stored:
                arrays = {name: stored[name] for name in cls.ARRAYS}
                raw = json.loads(str(stored["settings"]))
        except (OSError, KeyError, ValueError) as error:
            raise PhenolensError(f"{path}: not a phenolens echo dataset ({error}); write it with `phenolens echoes simulate`") from None
        if not isinstance(raw, dict):
            raise PhenolensError(f"{path}: the stored settings are not a mapping; write the dataset with `phenolens echoes simulate`")
        return cls(**arrays, settings=EchoSimulationSettings.from_dict(raw, source=str(path)))


def truncated_exponential(rng: np.random.Generator, mean: float, low: float, high: float, size) -> np.ndarray:
    """Exponential(mean) samples conditioned on [low, high], by inverting the truncated CDF.

    Parameters
    ----------
    rng : numpy.random.Generator
        The random source.
    mean : float
        The exponential's mean.
    low, high : float
        The bounds.
    size : int or tuple
        Output shape.

    Returns
    -------
    numpy.ndarray
    """
    rate = 1.0 / mean
    u = rng.random(size)
    return low - np.log1p(-u * (1.0 - np.exp(-rate * (high - low)))) / rate


def draw_times_of_flight(rng: np.random.Generator, settings: EchoSimulationSettings, counts: np.ndarray) -> np.ndarray:
    """Times of flight (N, K), NaN beyond each signal's echo count.

    The first echo lands uniformly inside the margins; each next one follows the latest echo by a
    gap when it fits, otherwise precedes the earliest (the original rejection rule); a train that
    fits on neither side is shifted back inside (rare, only with 8 long gaps).

    Parameters
    ----------
    rng : numpy.random.Generator
        The random source.
    settings : EchoSimulationSettings
        Record length, gaps, pulse width.
    counts : numpy.ndarray
        (N,) echoes per signal.

    Returns
    -------
    numpy.ndarray
    """
    n, k, sigma0 = len(counts), settings.max_echoes, settings.sigma0
    low, high = settings.margin, settings.length - 1 - settings.margin
    gaps = truncated_exponential(rng, settings.mean_gap * sigma0, settings.gap_bounds[0] * sigma0, settings.gap_bounds[1] * sigma0, (n, k - 1))
    tof = np.full((n, k), np.nan)
    tof[:, 0] = rng.uniform(low, high, n)
    first, last = tof[:, 0].copy(), tof[:, 0].copy()
    for m in range(1, k):  # a loop over echo slots (<= 8), vectorised over signals
        forward = last + gaps[:, m - 1] <= high
        tof[:, m] = np.where(forward, last + gaps[:, m - 1], first - gaps[:, m - 1])
        active = m < counts
        last = np.where(active & forward, tof[:, m], last)
        first = np.where(active & ~forward, tof[:, m], first)
    tof[np.arange(k)[None, :] >= counts[:, None]] = np.nan
    shift = np.clip(low - np.nanmin(tof, axis=1), 0, None) - np.clip(np.nanmax(tof, axis=1) - high, 0, None)
    return tof + shift[:, None]


def draw_pulse_parameters(rng: np.random.Generator, settings: EchoSimulationSettings, shape) -> tuple[np.ndarray, np.ndarray]:
    """Per-echo width (samples) and centre frequency (MHz) from the configured distribution.

    Parameters
    ----------
    rng : numpy.random.Generator
        The random source.
    settings : EchoSimulationSettings
        Reference pulse and distribution.
    shape : int or tuple
        Output shape.

    Returns
    -------
    tuple of numpy.ndarray
        (sigma, freq_mhz).
    """
    (ratio_low, ratio_high), freqs = DISTRIBUTIONS[settings.distribution]
    sigma = settings.sigma0 * rng.uniform(ratio_low, ratio_high, shape)
    freq = np.full(shape, settings.freq_mhz) if freqs is None else rng.uniform(freqs[0], freqs[1], shape)
    return sigma, freq


def simulate(settings: EchoSimulationSettings, chunk: int = 2000) -> EchoSet:
    """Generate `settings.n_signals` signals deterministically from `settings.seed`.

    Parameters
    ----------
    settings : EchoSimulationSettings
        What to simulate.
    chunk : int
        Signals per vectorised step (bounds the (chunk, K, T) echo tensor).

    Returns
    -------
    EchoSet
    """
    rng = numpy_rng(settings.seed)
    n, k, length = settings.n_signals, settings.max_echoes, settings.length
    counts = rng.integers(1, k + 1, n)
    tof = draw_times_of_flight(rng, settings, counts)
    present = np.isfinite(tof)
    sigma, freq = draw_pulse_parameters(rng, settings, (n, k))
    amplitude = rng.uniform(settings.min_amplitude, 1.0, (n, k))
    phase = rng.uniform(0.0, 2.0 * np.pi, (n, k))
    noise = rng.standard_normal((n, length)) * (10.0 ** (-settings.snr_db / 20.0) / np.sqrt(length))
    clean = np.empty((n, length))
    heatmaps = np.empty((n, length))
    t = np.arange(length, dtype=np.float64)
    for start in range(0, n, chunk):  # chunks bound the (chunk, K, T) echo tensor's memory
        rows = slice(start, start + chunk)
        safe_tof = np.where(present[rows], tof[rows], 0.0)
        waves = echo_waveforms(safe_tof, sigma[rows], angular_frequency(freq[rows], settings.fs_mhz), phase[rows], length)
        weights = np.where(present[rows], amplitude[rows], 0.0)
        clean[rows] = np.einsum("nk,nkt->nt", weights, waves)
        scale = 1.0 / np.linalg.norm(clean[rows], axis=1)
        clean[rows] *= scale[:, None]
        amplitude[rows] *= scale[:, None]
        bumps = gaussian_envelope(t, safe_tof[..., None], settings.target_width * sigma[rows][..., None])
        heatmaps[rows] = np.einsum("nk,nkt->nt", np.where(present[rows], amplitude[rows], 0.0), bumps)
    absent = ~present
    for values in (amplitude, sigma, freq, phase):
        values[absent] = np.nan
    return EchoSet(
        signals=(clean + noise).astype(np.float32),
        clean=clean.astype(np.float32),
        heatmaps=heatmaps.astype(np.float32),
        tof=tof,
        amplitude=amplitude,
        sigma=sigma,
        freq_mhz=freq,
        phase=phase,
        settings=settings,
    )


def cached_simulation(settings: EchoSimulationSettings, cache: Path | None = None) -> EchoSet:
    """`simulate(settings)`, read from / written to `cache` (default: PHENOLENS_CACHE/echoes).

    The file name holds `simulation_key(settings)`; an unreadable cached file is simulated again.

    Parameters
    ----------
    settings : EchoSimulationSettings
        What to simulate.
    cache : Path, optional
        The cache folder.

    Returns
    -------
    EchoSet
    """
    from phenolens.data.registry import cache_root

    folder = Path(cache) if cache is not None else cache_root() / "echoes"
    path = folder / f"simulation-{simulation_key(settings)}.npz"
    if path.is_file():
        try:
            return EchoSet.from_file(path)
        except PhenolensError:
            log.warning("ignoring unreadable cached simulation %s", path)
    data = simulate(settings)
    try:
        atomic_write_bytes(path, data.to_bytes())
    except OSError as error:  # a read-only cache only costs time
        log.warning("could not cache the simulation at %s: %s", path, error)
    return data


def realised_snr_db(data: EchoSet) -> np.ndarray:
    """Per-signal SNR actually realised: 10 log10(||clean||^2 / ||noise||^2).

    Parameters
    ----------
    data : EchoSet
        Simulated signals.

    Returns
    -------
    numpy.ndarray
        (N,) SNR in dB.
    """
    return 10.0 * np.log10(np.sum(data.clean.astype(np.float64) ** 2, axis=1) / np.sum(data.noise**2, axis=1))
