"""Simulation experiments: dictionary-variant selection, sweeps of lambda / epsilon / SNR, and timing.

Every method runs on the same cached test sets; detection quality is the area under the
precision-recall curve (AUC) and the maximal F1 under the envelope hit criterion. Each baseline is
evaluated with its best dictionary variant (none / narrow / wide), chosen by AUC at the default
setting on a separate selection set. Timings are measured side by side on one batch of signals.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from phenolens.core.progress import progress
from phenolens.echoes.detector import BASELINES, EchoDetector
from phenolens.echoes.metrics import score_detections
from phenolens.echoes.pulse import PulseShape
from phenolens.echoes.simulate import EchoSet, SimulationConfig, cached_simulation


@dataclass(frozen=True)
class EvaluationSettings:
    """Test-set sizes, sweep values and defaults (lambda = mean gap in sigma_0, epsilon, SNR in dB)."""

    n_test: int = 300
    lambdas: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 5.0)
    epsilons: tuple[float, ...] = (0.025, 0.05, 0.1, 0.2, 0.4)
    snrs: tuple[float, ...] = (0.0, 5.0, 10.0, 20.0, 30.0)
    default_lambda: float = 3.0
    default_epsilon: float = 0.1
    default_snr: float = 20.0
    test_distribution: str = "narrow"
    variants: tuple[str, ...] = ("none", "narrow", "wide")
    n_selection: int = 60
    n_timing: int = 100
    scan_shape: tuple[int, int] = (8, 40)  # rows, columns of the layer-thickness scan
    pulse: PulseShape = field(default_factory=PulseShape)
    seed: int = 20220201

    def test_config(
        self, mean_gap: float | None = None, snr_db: float | None = None, n_signals: int | None = None, seed_offset: int = 0
    ) -> SimulationConfig:
        mean_gap = self.default_lambda if mean_gap is None else mean_gap
        snr_db = self.default_snr if snr_db is None else snr_db
        # each setting gets its own seed, so no test signal is shared between settings by accident
        seed = self.seed + seed_offset + int(round(100 * mean_gap)) * 1000 + int(round(10 * snr_db))
        return SimulationConfig(
            n_signals=n_signals or self.n_test, mean_gap=mean_gap, snr_db=snr_db, distribution=self.test_distribution, pulse=self.pulse, seed=seed
        )

    def to_dict(self) -> dict:
        return asdict(self)


def score(detector: EchoDetector, data: EchoSet, epsilon: float, activation: np.ndarray | None = None) -> dict:
    """AUC, max F1 and counts of one detector on one test set."""
    activation = detector.activation(data.signals) if activation is None else activation
    return score_detections(detector.detections_from(activation), data.tof, data.amplitude, data.sigma, epsilon).summary()


def select_variants(settings: EvaluationSettings, methods: tuple[str, ...] = BASELINES, **detector_options) -> tuple[dict[str, EchoDetector], dict]:
    """The best dictionary variant of each baseline by AUC at the default setting, on a separate selection set."""
    data = cached_simulation(settings.test_config(n_signals=settings.n_selection, seed_offset=7))
    table: dict[str, dict[str, float]] = {}
    chosen: dict[str, EchoDetector] = {}
    for method in methods:
        table[method] = {}
        for variant in progress(settings.variants, f"selecting the {method} dictionary"):
            detector = EchoDetector(method, distribution=variant, pulse=settings.pulse, **detector_options).fit(data.signals)
            table[method][variant] = score(detector, data, settings.default_epsilon)["auc"]
        best = max(table[method], key=table[method].get)
        chosen[method] = EchoDetector(method, distribution=best, pulse=settings.pulse, **detector_options).fit(data.signals)
    return chosen, table


def run_sweeps(detectors: Mapping[str, EchoDetector], settings: EvaluationSettings, on_setting: Callable[[str], None] | None = None) -> dict:
    """AUC and F1 of every detector against lambda, epsilon (on the default test set) and SNR.

    Returns {"lambda" | "epsilon" | "snr": {method: {value: {auc, f1, ...}}}}.
    """
    results: dict[str, dict] = {"lambda": {}, "epsilon": {}, "snr": {}}
    activations: dict[tuple, dict[str, np.ndarray]] = {}

    def run(config: SimulationConfig) -> tuple[EchoSet, dict[str, np.ndarray]]:
        data = cached_simulation(config)
        key = (config.mean_gap, config.snr_db)
        if key not in activations:
            if on_setting:
                on_setting(f"lambda={config.mean_gap:g}, SNR={config.snr_db:g} dB")
            activations[key] = {name: detector.activation(data.signals) for name, detector in detectors.items()}
        return data, activations[key]

    for value in settings.lambdas:
        data, outputs = run(settings.test_config(mean_gap=value))
        for name, detector in detectors.items():
            results["lambda"].setdefault(name, {})[_key(value)] = score(detector, data, settings.default_epsilon, outputs[name])
    data, outputs = run(settings.test_config())
    for value in settings.epsilons:
        for name, detector in detectors.items():
            results["epsilon"].setdefault(name, {})[_key(value)] = score(detector, data, value, outputs[name])
    for value in settings.snrs:
        data, outputs = run(settings.test_config(snr_db=value))
        for name, detector in detectors.items():
            results["snr"].setdefault(name, {})[_key(value)] = score(detector, data, settings.default_epsilon, outputs[name])
    return results


def _key(value: float) -> str:
    return f"{value:g}"


def time_methods(detectors: Mapping[str, EchoDetector], signals: np.ndarray, repeats: int = 2) -> dict[str, float]:
    """Seconds per signal of each detector's full predict (batched), measured side by side.

    Methods run in turn on the same signals, `repeats` rounds in alternating order; the fastest
    round counts (the least disturbed by other load on the machine).
    """
    best = {name: np.inf for name in detectors}
    names = list(detectors)
    for round_index in range(repeats):
        for name in names if round_index % 2 == 0 else names[::-1]:
            started = time.perf_counter()
            detectors[name].predict(signals)
            best[name] = min(best[name], (time.perf_counter() - started) / len(signals))
    return best


def with_settings(detector: EchoDetector, **changes) -> EchoDetector:
    """A refitted copy of a detector with other post-processing or stopping settings (same model/dictionary variant)."""
    copy = replace(detector, **changes)
    if detector.method == "uscnn":
        copy.model = detector.model_
    return copy.fit()
