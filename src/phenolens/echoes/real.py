"""Echo detection on the real A-scans of the US-CNN study (`echo-pulses`).

Signals are centred and scaled to unit energy per 500 samples (the simulated record length), so a
long A-scan is not made fainter than the training signals. A-scans recorded at another rate than the
detector's (the pulse's `fs_mhz`) are resampled to it first; positions are reported in the A-scan's
samples. Each method reports the echoes above the real-data threshold (US-CNN's 0.15 on the unit-norm spike train; sparse solvers stop at 25 %
residual energy or 4 atoms), and, for layer thickness, the time-of-flight difference between the two
largest echoes after lowering the threshold until two pass.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from phenolens.core.errors import PhenolensError
from phenolens.data.containers import Signal
from phenolens.data.readers import read_signal
from phenolens.echoes.detector import BaseEchoDetector
from phenolens.echoes.solvers import REAL_STOP

REAL_BETA = 0.15
REAL_MAX_DETECTIONS = 5
RECORD_LENGTH = 500
ECHO_PULSES_FS_MHZ = 100.0  # sampling rate of the echo-pulses A-scans
DOMINANT_FRACTION = 0.5  # an echo is dominant when its amplitude is at least half the largest


def read_scan(path: str | Path) -> Signal:
    """Read one A-scan: a .npy array (no pickles) or a text file with one sample per line.

    The file's layout (a .npy header, a text file's first row) is checked before the samples are
    read, so a table or a complex or text array is refused instead of being flattened or cast.

    Parameters
    ----------
    path : path
        The file.

    Returns
    -------
    Signal
        Named after the file's stem.

    Raises
    ------
    PhenolensError
        When the file is missing or unreadable, holds more than one column (or row) of samples,
        complex, text or other non-real values, no samples, or NaN/infinite samples.
    """
    path = Path(path)
    layout = _stored_layout(path) if path.is_file() else None
    if layout is not None:
        shape, kind = layout
        if kind not in "iuf":
            raise PhenolensError(f"{path}: the samples are {'complex numbers' if kind == 'c' else kind + ' values'}; give one real number per sample")
        if path.suffix != ".npy" and shape[1] > 1:
            raise PhenolensError(f"{path}: {shape[1]} columns, not one signal; give one sample per line (a single column)")
        if len(shape) > 1 and sorted(shape)[-2] > 1:
            raise PhenolensError(f"{path}: {' x '.join(map(str, shape))} values, not one signal; give a one-dimensional array")
    return read_signal(path)


def _stored_layout(path: Path) -> tuple[tuple[int, ...], str] | None:
    """(shape, dtype kind or name) of a .npy file, or of a text file's first row; None when unreadable (the reader says why)."""
    try:
        if path.suffix == ".npy":
            array = np.load(path, mmap_mode="r", allow_pickle=False)
            return array.shape, array.dtype.kind if array.dtype.kind in "iufc" else str(array.dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return np.loadtxt(path, ndmin=2, max_rows=1).shape, "f"
    except Exception:  # noqa: BLE001 - read_signal reports the unreadable file in its own words
        return None


def prepare_real_signal(values: np.ndarray, record_length: int = RECORD_LENGTH) -> np.ndarray:
    """Remove the mean and scale to unit energy per `record_length` samples.

    Parameters
    ----------
    values : numpy.ndarray
        One A-scan.
    record_length : int
        Samples per unit of energy (the simulated record length).

    Returns
    -------
    numpy.ndarray
        The prepared A-scan (float64).
    """
    values = np.asarray(values, dtype=np.float64) - np.mean(values)
    norm = np.linalg.norm(values)
    return values / norm * np.sqrt(len(values) / record_length) if norm > 0 else values


def real_detectors(detectors: Mapping[str, BaseEchoDetector]) -> dict[str, tuple[BaseEchoDetector, BaseEchoDetector]]:
    """Per method, (plain, layer) detectors with the real-data settings; `layer` lowers beta until two echoes pass.

    Parameters
    ----------
    detectors : mapping
        Fitted detectors by method name.

    Returns
    -------
    dict
        {method: (plain, layer)}, both fitted.
    """
    out = {}
    for name, detector in detectors.items():
        plain = detector.refitted(beta=REAL_BETA, max_detections=REAL_MAX_DETECTIONS, stop=REAL_STOP, min_echoes=None)
        out[name] = (plain, plain.refitted(min_echoes=2))
    return out


@dataclass
class RealDetection:
    """One method on one real A-scan: its echoes above the real threshold and the two largest for a layer thickness."""

    signal: str
    method: str
    positions: np.ndarray  # samples, strongest first, above the real threshold
    amplitudes: np.ndarray
    layer_positions: np.ndarray  # the two largest echoes after lowering beta (may be fewer)
    fs_mhz: float

    @property
    def n_echoes(self) -> int:
        """Echoes above the real-data threshold."""
        return len(self.positions)

    @property
    def n_dominant(self) -> int:
        """Echoes with at least half the largest amplitude."""
        return int(np.sum(self.amplitudes >= DOMINANT_FRACTION * self.amplitudes.max())) if len(self.amplitudes) else 0

    @property
    def tofd_us(self) -> float | None:
        """Time-of-flight difference between the two largest echoes (microseconds), None if fewer than two."""
        if len(self.layer_positions) < 2:
            return None
        return float(abs(self.layer_positions[0] - self.layer_positions[1]) / self.fs_mhz)

    def summary(self) -> dict:
        """Counts, positions, amplitudes and TOFDs as a dict (for metrics.json)."""
        return {
            "echoes": self.n_echoes,
            "dominant_echoes": self.n_dominant,
            "positions_samples": self.positions,
            "amplitudes": self.amplitudes,
            "tofd_us": self.tofd_us,
            "tofds_between_echoes_us": np.diff(np.sort(self.positions)) / self.fs_mhz,
        }


def resample(values: np.ndarray, fs_mhz: float, target_fs_mhz: float) -> np.ndarray:
    """An A-scan sampled at `fs_mhz` resampled to `target_fs_mhz` (polyphase filter, anti-aliased).

    Parameters
    ----------
    values : numpy.ndarray
        One A-scan.
    fs_mhz, target_fs_mhz : float
        Its sampling rate and the wanted one (MHz).

    Returns
    -------
    numpy.ndarray
        float64 samples at `target_fs_mhz`.
    """
    if np.isclose(fs_mhz, target_fs_mhz):
        return np.asarray(values, dtype=np.float64)
    ratio = Fraction(target_fs_mhz / fs_mhz).limit_denominator(1000)
    return resample_poly(np.asarray(values, dtype=np.float64), ratio.numerator, ratio.denominator)


def detect_real(detectors: Mapping[str, BaseEchoDetector], signals: list[Signal], fs_mhz: float = ECHO_PULSES_FS_MHZ) -> list[RealDetection]:
    """Every method on every real signal sampled at `fs_mhz`, with the real-data settings.

    Signals are resampled to each detector's rate and prepared with `prepare_real_signal`; signals
    longer than a detector's window are processed in overlapping windows.

    Parameters
    ----------
    detectors : mapping
        Fitted detectors by method name.
    signals : list of Signal
        The A-scans.
    fs_mhz : float
        Their sampling rate (MHz).

    Returns
    -------
    list of RealDetection
        Per method and signal; positions in the signal's own samples.
    """
    results = []
    for name, (plain, layer) in real_detectors(detectors).items():
        to_signal_samples = fs_mhz / plain.pulse.fs_mhz
        for signal in signals:
            values = prepare_real_signal(resample(signal.values, fs_mhz, plain.pulse.fs_mhz))
            activation = plain.activation(values, source=signal.source or signal.name)
            found, layer_found = plain.detections_from(activation), layer.detections_from(activation)
            positions, amplitudes = found.for_signal(0)
            two_largest = layer_found.strongest(2)[0]
            results.append(
                RealDetection(
                    signal.name, name, positions * to_signal_samples, amplitudes, two_largest[np.isfinite(two_largest)] * to_signal_samples, fs_mhz
                )
            )
    return results
