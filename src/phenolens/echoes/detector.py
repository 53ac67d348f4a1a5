"""`EchoDetector`: US-CNN and the sparse-coding baselines behind one scikit-learn-style estimator.

    detector = EchoDetector("uscnn").fit(train.signals, train.heatmaps)   # or EchoDetector("smp").fit()
    detections = detector.predict(test.signals)                            # Detections, strongest first

Every method produces an activation (network output, or per-time-of-flight code amplitude) that
goes through the same post-processing (`detection.detect_echoes`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from phenolens.core.errors import PhenolensError
from phenolens.echoes.detection import Detections, detect_echoes
from phenolens.echoes.dictionary import GaborDictionary, codes_to_activation
from phenolens.echoes.pulse import PulseShape
from phenolens.echoes.pursuit import omp_codes, smp_codes
from phenolens.echoes.simulate import DISTRIBUTIONS
from phenolens.echoes.solvers import SIMULATION_STOP, StoppingRule, ista_codes, sklearn_omp_codes
from phenolens.echoes.training import TrainingSettings, train_uscnn

METHODS = ("uscnn", "omp", "ista", "smp", "omp-complex")
BASELINES = ("omp", "ista", "smp")


def check_signals(signals, min_length: int, source: str = "signals") -> np.ndarray:
    """Validate and return signals as a float64 (N, T) array; raise PhenolensError naming `source` otherwise."""
    array = np.asarray(signals, dtype=np.float64)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2:
        raise PhenolensError(f"{source}: expected one signal or an (N, T) array of signals, got shape {array.shape}")
    if array.size == 0:
        raise PhenolensError(f"{source}: no samples; give a non-empty signal")
    if not np.isfinite(array).all():
        bad = int(np.argwhere(~np.isfinite(array))[0, 1])
        raise PhenolensError(f"{source}: sample {bad} is NaN or infinite; clean or crop the signal")
    if array.shape[1] < min_length:
        raise PhenolensError(
            f"{source}: {array.shape[1]} samples is shorter than the first-layer kernel ({min_length}); give at least {min_length} samples"
        )
    return array


@dataclass
class EchoDetector:
    """Overlapping-echo detector: `method` in uscnn / omp / ista / smp, or omp-complex (a reference, see `pursuit.py`).

    Sparse methods use the Gabor dictionary of `distribution`; US-CNN is trained on simulated
    signals (or given as `model`, a trained USCNN). Post-processing: NMS within `nms_window`,
    threshold `beta` on the unit-norm spike train, lowered by `lowering` until `min_echoes` pass.
    """

    method: str = "uscnn"
    distribution: str = "narrow"
    pulse: PulseShape = field(default_factory=PulseShape)
    beta: float = 0.01
    nms_window: int = 14
    max_detections: int = 20
    min_echoes: int | None = None
    lowering: float = 0.8
    stop: StoppingRule = SIMULATION_STOP
    ista_iterations: int = 3
    ista_threshold: float = 0.1
    smp_p: float = 0.5
    training: TrainingSettings = field(default_factory=TrainingSettings)
    model: object | None = None
    batch_size: int = 512

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise PhenolensError(f"unknown echo detection method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.distribution not in DISTRIBUTIONS:
            raise PhenolensError(f"unknown pulse distribution {self.distribution!r}; choose one of {', '.join(DISTRIBUTIONS)}")
        self._dictionaries: dict[int, GaborDictionary] = {}

    @property
    def name(self) -> str:
        return self.method if self.method == "uscnn" else f"{self.method}[{self.distribution}]"

    @property
    def min_length(self) -> int:
        """Shortest accepted signal: the network's first-layer kernel (the same bound for every method)."""
        from phenolens.nn.uscnn import wide_kernel_size

        return self.model_.kernel_size if self.method == "uscnn" and hasattr(self, "model_") else wide_kernel_size(self.pulse.sigma)

    def fit(self, signals=None, heatmaps=None) -> EchoDetector:
        """US-CNN: use `model` if given, else train on (signals, heat maps). Sparse methods: build the dictionary."""
        if self.method == "uscnn":
            if self.model is not None:
                self.model_ = self.model
            else:
                if signals is None or heatmaps is None:
                    raise PhenolensError(
                        "US-CNN needs training signals and heat maps (or a trained model); simulate them with phenolens.echoes.simulate"
                    )
                result = train_uscnn(signals, heatmaps, self.pulse.sigma, self.training)
                self.model_, self.history_, self.training_seconds_ = result.model, result.history, result.seconds
                self.training_precision_ = result.precision
            self.model_.eval()
        else:
            length = np.shape(signals)[-1] if signals is not None else 500
            self.dictionary_ = self._dictionary(length)
        return self

    def _dictionary(self, length: int) -> GaborDictionary:
        if length not in self._dictionaries:
            self._dictionaries[length] = GaborDictionary.for_distribution(self.distribution, self.pulse, length)
        return self._dictionaries[length]

    def activation(self, signals, source: str = "signals") -> np.ndarray:
        """Pre-detection activation (N, T): network output, or the largest code modulus per time of flight."""
        if not (hasattr(self, "model_") or hasattr(self, "dictionary_")):
            raise PhenolensError(f"the {self.name} detector is not fitted; call fit() first")
        signals = check_signals(signals, self.min_length, source)
        if self.method == "uscnn":
            return self._network_activation(signals)
        dictionary = self._dictionary(signals.shape[1])
        if self.method == "omp":
            codes = sklearn_omp_codes(dictionary, signals, self.stop)
        elif self.method == "smp":
            codes = smp_codes(dictionary, signals, self.stop, p=self.smp_p)
        elif self.method == "ista":
            codes = ista_codes(dictionary, signals, self.ista_iterations, self.ista_threshold)
        else:
            codes = omp_codes(dictionary, signals, self.stop)
        return codes_to_activation(codes)

    def _network_activation(self, signals: np.ndarray) -> np.ndarray:
        import torch

        outputs = []
        with torch.no_grad():
            for start in range(0, len(signals), self.batch_size):
                batch = torch.from_numpy(signals[start : start + self.batch_size].astype(np.float32))
                outputs.append(self.model_(batch).numpy())
        return np.concatenate(outputs).astype(np.float64)

    def predict(self, signals, source: str = "signals") -> Detections:
        """Detected echoes (positions in samples, normalised amplitudes), strongest first."""
        return self.detections_from(self.activation(signals, source))

    def detections_from(self, activation: np.ndarray) -> Detections:
        """Apply this detector's post-processing to an activation computed earlier."""
        return detect_echoes(activation, self.beta, self.nms_window, self.max_detections, self.min_echoes, self.lowering)
