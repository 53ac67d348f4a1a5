"""Layer-thickness experiment on a simulated scan of a two-interface layer with a known thickness map.

Each A-scan holds the echo of the layer's top interface and, one time-of-flight difference (TOFD)
later, the phase-inverted echo of its bottom interface (a glue layer between two stiffer plates).
The thickness map is a staircase across the scan, from heavily overlapping echoes (1 sigma_0) to
separated ones; thickness = sound velocity x TOFD / 2, and each method estimates the TOFD from the
two largest echoes it detects (beta lowered until two echoes pass).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from phenolens.core.seeding import numpy_rng
from phenolens.echoes.detection import Detections
from phenolens.echoes.pulse import PulseShape, angular_frequency, echo_waveforms
from phenolens.echoes.settings import EchoSimulationSettings
from phenolens.echoes.simulate import draw_pulse_parameters

ULTEM_VELOCITY_MM_PER_US = 2.09  # longitudinal sound velocity used for the US-CNN glue phantom


@dataclass(frozen=True)
class LayerScanConfig:
    """A rows x columns scan; column blocks step through `tofd_steps` (in sigma_0), thinnest first."""

    rows: int = 8
    columns: int = 40
    tofd_steps: tuple[float, ...] = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5)
    velocity_mm_per_us: float = ULTEM_VELOCITY_MM_PER_US
    snr_db: float = 20.0
    distribution: str = "narrow"
    length: int = 500
    pulse: PulseShape = field(default_factory=PulseShape)
    seed: int = 31

    def to_dict(self) -> dict:
        """Plain values (for metrics.json)."""
        return asdict(self)


@dataclass
class LayerScan:
    """The simulated scan: signals (rows x columns, T), true TOFD (samples) and thickness (mm) maps, its description, and the true echoes."""

    signals: np.ndarray  # (rows * columns, T)
    tofd: np.ndarray  # (rows, columns) samples
    thickness_mm: np.ndarray  # (rows, columns)
    config: LayerScanConfig
    tofs: np.ndarray  # (rows * columns, 2) samples: the top and bottom interface echoes

    @property
    def thinnest(self) -> np.ndarray:
        """Mask of the thinnest layer's positions."""
        return np.isclose(self.tofd, self.tofd.min())


def tofd_to_thickness(tofd_samples, velocity_mm_per_us: float, fs_mhz: float) -> np.ndarray:
    """Thickness (mm) = velocity (mm/us) x TOFD (us) / 2.

    Parameters
    ----------
    tofd_samples : array-like
        Time-of-flight differences in samples.
    velocity_mm_per_us : float
        Sound velocity in the layer.
    fs_mhz : float
        Sampling rate (MHz).

    Returns
    -------
    numpy.ndarray
    """
    return velocity_mm_per_us * np.asarray(tofd_samples, dtype=np.float64) / fs_mhz / 2.0


def simulate_layer_scan(config: LayerScanConfig = LayerScanConfig()) -> LayerScan:
    """Noisy A-scans of the layer at every scan position (vectorised, seeded).

    Parameters
    ----------
    config : LayerScanConfig
        Scan size, TOFD steps, pulse, noise and seed.

    Returns
    -------
    LayerScan
    """
    rng = numpy_rng(config.seed)
    sigma0 = config.pulse.sigma
    block = np.minimum(np.arange(config.columns) * len(config.tofd_steps) // config.columns, len(config.tofd_steps) - 1)
    tofd = np.broadcast_to(np.asarray(config.tofd_steps)[block] * sigma0, (config.rows, config.columns)).copy()
    n = config.rows * config.columns
    top = rng.uniform(0.3, 0.45, n) * config.length
    tofs = np.stack([top, top + tofd.ravel()], axis=1)
    simulation = EchoSimulationSettings.for_pulse(config.pulse, distribution=config.distribution, length=config.length, max_echoes=2)
    sigma, freq = draw_pulse_parameters(rng, simulation, n)  # one transducer pulse per position, shared by both echoes
    phase = rng.uniform(0, 2 * np.pi, n)
    amplitudes = np.stack([rng.uniform(0.6, 1.0, n), rng.uniform(0.4, 0.9, n)], axis=1)
    waves = echo_waveforms(
        tofs, sigma[:, None], angular_frequency(freq, config.pulse.fs_mhz)[:, None], np.stack([phase, phase + np.pi], 1), config.length
    )
    clean = np.einsum("nk,nkt->nt", amplitudes, waves)
    clean /= np.linalg.norm(clean, axis=1, keepdims=True)
    noise = rng.standard_normal(clean.shape) * 10.0 ** (-config.snr_db / 20.0) / np.sqrt(config.length)
    return LayerScan(clean + noise, tofd, tofd_to_thickness(tofd, config.velocity_mm_per_us, config.pulse.fs_mhz), config, tofs)


def estimate_thickness(detections: Detections, scan: LayerScan) -> np.ndarray:
    """Thickness map (rows, columns) in mm from the two largest detections; 0 where fewer than two were found.

    Parameters
    ----------
    detections : Detections
        One row per scan position.
    scan : LayerScan
        The scan.

    Returns
    -------
    numpy.ndarray
    """
    strongest = detections.strongest(2)
    tofd = np.nan_to_num(np.abs(strongest[:, 0] - strongest[:, 1]), nan=0.0)
    return tofd_to_thickness(tofd, scan.config.velocity_mm_per_us, scan.config.pulse.fs_mhz).reshape(scan.tofd.shape)


def thickness_errors(estimate: np.ndarray, scan: LayerScan) -> dict:
    """Mean absolute error (mm) on the thinnest layer and on the rest, and the fraction resolved into two echoes.

    Parameters
    ----------
    estimate : numpy.ndarray
        Estimated thickness map (mm).
    scan : LayerScan
        The scan with its true map.

    Returns
    -------
    dict
    """
    error = np.abs(estimate - scan.thickness_mm)
    thin = scan.thinnest
    return {
        "mae_thinnest_mm": float(error[thin].mean()),
        "mae_rest_mm": float(error[~thin].mean()),
        "resolved_fraction": float((estimate > 0).mean()),
    }
