"""The Gaussian echo model, its envelope, and its fit to a measured reference pulse.

An echo is d(t) = K g(t - tau; sigma) cos(omega (t - tau) + phi) with a Gaussian envelope
g(t; sigma) = exp(-t^2 / (2 sigma^2)) and K normalising it to unit L2 norm. Times are in samples;
centre frequencies are in MHz and become radians per sample through the sampling rate
`fs_mhz` (the US-CNN phantoms were recorded at 100 MHz: 500 samples span 5 microseconds).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from phenolens.core.errors import PhenolensError

DEFAULT_FS_MHZ = 100.0

# Per pulse distribution: the range of echo widths (x sigma_0) and of centre frequencies (MHz; None =
# the reference frequency). The simulator draws from it; the sparse baselines' dictionaries cover it.
DISTRIBUTIONS: dict[str, tuple[tuple[float, float], tuple[float, float] | None]] = {
    "none": ((1.0, 1.0), None),
    "narrow": ((1.0, 1.2), (4.0, 5.4)),
    "wide": ((1.0, 1.4), (3.0, 5.4)),
}


@dataclass(frozen=True)
class PulseShape:
    """Reference pulse: envelope width `sigma` (samples), centre frequency (MHz), phase (rad), sampling rate (MHz)."""

    sigma: float = 9.0
    freq_mhz: float = 5.4
    phase: float = 0.0
    fs_mhz: float = DEFAULT_FS_MHZ

    @property
    def omega(self) -> float:
        """Angular frequency in radians per sample."""
        return angular_frequency(self.freq_mhz, self.fs_mhz)

    @property
    def sigma_us(self) -> float:
        """Envelope width in microseconds."""
        return self.sigma / self.fs_mhz

    def to_dict(self) -> dict:
        """Plain values (for JSON)."""
        return asdict(self)


def angular_frequency(freq_mhz, fs_mhz: float = DEFAULT_FS_MHZ):
    """Centre frequency (MHz) -> radians per sample at sampling rate `fs_mhz` (MHz).

    Parameters
    ----------
    freq_mhz : array-like
        Frequencies (MHz).
    fs_mhz : float
        Sampling rate (MHz).

    Returns
    -------
    numpy.ndarray
    """
    return 2.0 * np.pi * np.asarray(freq_mhz, dtype=np.float64) / fs_mhz


def gaussian_envelope(t: np.ndarray, tof, sigma) -> np.ndarray:
    """g(t - tof; sigma), broadcasting `tof` and `sigma` (add a trailing axis for the time axis yourself).

    Parameters
    ----------
    t : numpy.ndarray
        Sample times.
    tof, sigma : array-like
        Centres and widths (samples).

    Returns
    -------
    numpy.ndarray
    """
    return np.exp(-0.5 * ((t - tof) / sigma) ** 2)


def echo_waveforms(tof, sigma, omega, phase, length: int, normalize: bool = True) -> np.ndarray:
    """Real echoes on a grid of `length` samples, one per parameter set: shape (*params, length).

    Parameters broadcast against each other; each waveform is scaled to unit L2 norm on the grid
    (rows that vanish stay zero).

    Parameters
    ----------
    tof, sigma, omega, phase : array-like
        Times of flight and widths (samples), angular frequencies (rad/sample), phases (rad).
    length : int
        Samples per waveform.
    normalize : bool
        Scale each waveform to unit norm.

    Returns
    -------
    numpy.ndarray
    """
    tof, sigma, omega, phase = (np.asarray(v, dtype=np.float64)[..., None] for v in (tof, sigma, omega, phase))
    t = np.arange(length, dtype=np.float64)
    waves = gaussian_envelope(t, tof, sigma) * np.cos(omega * (t - tof) + phase)
    if normalize:
        norms = np.linalg.norm(waves, axis=-1, keepdims=True)
        waves = np.divide(waves, norms, out=np.zeros_like(waves), where=norms > 0)
    return waves


def envelope(signals: np.ndarray) -> np.ndarray:
    """Magnitude of the analytic signal (Hilbert envelope) along the last axis.

    Parameters
    ----------
    signals : numpy.ndarray
        Real signals.

    Returns
    -------
    numpy.ndarray
    """
    from scipy.signal import hilbert

    return np.abs(hilbert(np.asarray(signals, dtype=np.float64), axis=-1))


@dataclass(frozen=True)
class PulseFit:
    """Least-squares fit of the echo model to one measured echo."""

    pulse: PulseShape
    tof: float  # samples
    amplitude: float
    relative_residual: float  # ||signal - model||^2 / ||signal||^2 inside the fitted window

    def to_dict(self) -> dict:
        """The fitted parameters in physical units (for metrics.json)."""
        return {
            "sigma_samples": self.pulse.sigma,
            "sigma_us": self.pulse.sigma_us,
            "freq_mhz": self.pulse.freq_mhz,
            "phase_rad": self.pulse.phase,
            "fs_mhz": self.pulse.fs_mhz,
            "tof_samples": self.tof,
            "amplitude": self.amplitude,
            "relative_residual": self.relative_residual,
        }


def fit_pulse(values: np.ndarray, fs_mhz: float = DEFAULT_FS_MHZ, source: str = "signal") -> PulseFit:
    """Fit A g(t - tau; sigma) cos(omega (t - tau) + phi) to the dominant echo of a measured A-scan.

    Starts from the envelope peak (tau), the spectral peak (omega) and the envelope's second moment
    (sigma), then refines all five parameters by nonlinear least squares on a window of +-5 sigma.
    The phase is reported in [0, 2 pi) relative to the fitted time of flight.

    Parameters
    ----------
    values : numpy.ndarray
        The A-scan.
    fs_mhz : float
        Its sampling rate (MHz).
    source : str
        Named in error messages.

    Returns
    -------
    PulseFit

    Raises
    ------
    PhenolensError
        For fewer than 16 samples or non-finite samples.
    """
    from scipy.optimize import least_squares

    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size < 16 or not np.isfinite(values).all():
        raise PhenolensError(f"{source}: need at least 16 finite samples to fit a pulse")
    values = values - values.mean()
    env = envelope(values)
    peak = int(np.argmax(env))
    spectrum = np.abs(np.fft.rfft(values, 1 << 14))
    omega0 = 2.0 * np.pi * np.fft.rfftfreq(1 << 14)[int(np.argmax(spectrum[1:])) + 1]
    t = np.arange(values.size, dtype=np.float64)
    weights = env**2 * (env > 0.1 * env[peak])
    sigma0 = max(float(np.sqrt(np.sum(weights * (t - peak) ** 2) / np.sum(weights) * 2.0)), 1.0)
    half = int(np.ceil(5 * sigma0))
    window = slice(max(peak - half, 0), min(peak + half + 1, values.size))
    tw, yw = t[window], values[window]
    phase0 = float(np.angle(np.sum(yw * np.exp(-1j * omega0 * (tw - peak)))))

    def residual(theta):
        amplitude, tof, sigma, omega, phase = theta
        return amplitude * gaussian_envelope(tw, tof, sigma) * np.cos(omega * (tw - tof) + phase) - yw

    start = np.array([env[peak], peak, sigma0, omega0, phase0])
    result = least_squares(residual, start, x_scale=np.array([env[peak], 1.0, 1.0, 0.01, 0.1]))
    amplitude, tof, sigma, omega, phase = result.x
    if amplitude < 0:  # a negative amplitude is the same echo shifted by pi
        amplitude, phase = -amplitude, phase + np.pi
    pulse = PulseShape(sigma=abs(float(sigma)), freq_mhz=float(omega * fs_mhz / (2 * np.pi)), phase=float(phase % (2 * np.pi)), fs_mhz=fs_mhz)
    relative = float(np.sum(result.fun**2) / np.sum(yw**2))
    return PulseFit(pulse=pulse, tof=float(tof), amplitude=float(amplitude), relative_residual=relative)
