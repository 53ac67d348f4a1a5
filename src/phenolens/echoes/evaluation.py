"""Simulation experiments: dictionary-variant selection, sweeps of lambda / epsilon / SNR, and timing.

Every method runs on the same cached test sets; detection quality is the area under the
precision-recall curve (AUC) and the maximal F1 under the envelope hit criterion. Each baseline is
evaluated with its best dictionary variant (none / narrow / wide), chosen by AUC at the default
setting on a separate selection set. Timings are measured side by side on one batch of signals.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from phenolens.core.progress import progress
from phenolens.echoes.detector import BASELINES, BaseEchoDetector, EchoDetector
from phenolens.echoes.metrics import score_detections
from phenolens.echoes.pulse import PulseShape
from phenolens.echoes.settings import EchoEvaluationSettings, EchoSimulationSettings
from phenolens.echoes.simulate import EchoSet, cached_simulation


def test_settings(
    settings: EchoEvaluationSettings,
    pulse: PulseShape,
    mean_gap: float | None = None,
    snr_db: float | None = None,
    n_signals: int | None = None,
    seed_offset: int = 0,
) -> EchoSimulationSettings:
    """The simulation settings of one test set of the evaluation.

    Parameters
    ----------
    settings : EchoEvaluationSettings
        The evaluation.
    pulse : PulseShape
        The detector's echo model.
    mean_gap, snr_db : float, optional
        The setting (default: the evaluation's defaults).
    n_signals : int, optional
        Set size (default: `settings.n_test`).
    seed_offset : int
        Added to the seed (another set at the same setting).

    Returns
    -------
    EchoSimulationSettings
    """
    mean_gap = settings.default_lambda if mean_gap is None else mean_gap
    snr_db = settings.default_snr if snr_db is None else snr_db
    # each setting gets its own seed, so no test signal is shared between settings by accident
    seed = settings.seed + seed_offset + int(round(100 * mean_gap)) * 1000 + int(round(10 * snr_db))
    return EchoSimulationSettings.for_pulse(
        pulse, n_signals=n_signals or settings.n_test, mean_gap=mean_gap, snr_db=snr_db, distribution=settings.test_distribution, seed=seed
    )


def score(detector: BaseEchoDetector, data: EchoSet, epsilon: float, activation: np.ndarray | None = None) -> dict:
    """AUC, max F1 and counts of one detector on one test set.

    Parameters
    ----------
    detector : BaseEchoDetector
        A fitted detector.
    data : EchoSet
        Test signals with their ground truth.
    epsilon : float
        Hit tolerance (relative envelope error).
    activation : numpy.ndarray, optional
        The detector's activation on `data`, when computed already.

    Returns
    -------
    dict
        `DetectionScore.summary()`.
    """
    activation = detector.activation(data.signals) if activation is None else activation
    return score_detections(detector.detections_from(activation), data.tof, data.amplitude, data.sigma, epsilon).summary()


def select_variants(
    settings: EchoEvaluationSettings, pulse: PulseShape, methods: tuple[str, ...] = BASELINES, **detector_options
) -> tuple[dict[str, BaseEchoDetector], dict]:
    """The best dictionary variant of each baseline by AUC at the default setting, on a separate selection set.

    Parameters
    ----------
    settings : EchoEvaluationSettings
        Selection-set size, variants, default setting.
    pulse : PulseShape
        The echo model of the test signals and the dictionaries.
    methods : tuple of str
        Baselines to select for.
    **detector_options
        Passed to every detector.

    Returns
    -------
    tuple
        ({method: fitted detector with its best variant}, {method: {variant: AUC}}).
    """
    data = cached_simulation(test_settings(settings, pulse, n_signals=settings.n_selection, seed_offset=7))
    table: dict[str, dict[str, float]] = {}
    chosen: dict[str, EchoDetector] = {}
    for method in methods:
        table[method] = {}
        for variant in progress(settings.variants, f"selecting the {method} dictionary"):
            detector = EchoDetector(method, distribution=variant, pulse=pulse, **detector_options).fit(data.signals)
            table[method][variant] = score(detector, data, settings.default_epsilon)["auc"]
        best = max(table[method], key=table[method].get)
        chosen[method] = EchoDetector(method, distribution=best, pulse=pulse, **detector_options).fit(data.signals)
    return chosen, table


def run_sweeps(
    detectors: Mapping[str, BaseEchoDetector], settings: EchoEvaluationSettings, pulse: PulseShape, on_setting: Callable[[str], None] | None = None
) -> dict:
    """AUC and F1 of every detector against lambda, epsilon (on the default test set) and SNR.

    Parameters
    ----------
    detectors : mapping
        Fitted detectors by method name.
    settings : EchoEvaluationSettings
        Sweep values and defaults.
    pulse : PulseShape
        The echo model of the test signals.
    on_setting : callable, optional
        Called with a description of each new test set.

    Returns
    -------
    dict
        {"lambda" | "epsilon" | "snr": {method: {value: {auc, f1, ...}}}}.
    """
    results: dict[str, dict] = {"lambda": {}, "epsilon": {}, "snr": {}}
    activations: dict[tuple, dict[str, np.ndarray]] = {}

    def run(config: EchoSimulationSettings) -> tuple[EchoSet, dict[str, np.ndarray]]:
        data = cached_simulation(config)
        key = (config.mean_gap, config.snr_db)
        if key not in activations:
            if on_setting:
                on_setting(f"lambda={config.mean_gap:g}, SNR={config.snr_db:g} dB")
            activations[key] = {name: detector.activation(data.signals) for name, detector in detectors.items()}
        return data, activations[key]

    def sweep(axis: str, values: Sequence[float], simulation_field: str) -> None:
        """Score every detector on the test set simulated at each value of one simulation setting."""
        for value in values:
            data, outputs = run(test_settings(settings, pulse, **{simulation_field: value}))
            for name, detector in detectors.items():
                results[axis].setdefault(name, {})[_key(value)] = score(detector, data, settings.default_epsilon, outputs[name])

    sweep("lambda", settings.lambdas, "mean_gap")
    data, outputs = run(test_settings(settings, pulse))
    for value in settings.epsilons:
        for name, detector in detectors.items():
            results["epsilon"].setdefault(name, {})[_key(value)] = score(detector, data, value, outputs[name])
    sweep("snr", settings.snrs, "snr_db")
    return results


def _key(value: float) -> str:
    return f"{value:g}"


def time_methods(detectors: Mapping[str, BaseEchoDetector], signals: np.ndarray, repeats: int = 2) -> dict[str, float]:
    """Seconds per signal of each detector's full predict (batched), measured side by side.

    Methods run in turn on the same signals, `repeats` rounds in alternating order; the fastest
    round counts (the least disturbed by other load on the machine).

    Parameters
    ----------
    detectors : mapping
        Fitted detectors by name.
    signals : numpy.ndarray
        (N, T) signals.
    repeats : int
        Rounds.

    Returns
    -------
    dict
        Seconds per signal by name.
    """
    best = {name: np.inf for name in detectors}
    names = list(detectors)
    for round_index in range(repeats):
        for name in names if round_index % 2 == 0 else names[::-1]:
            started = time.perf_counter()
            detectors[name].predict(signals)
            best[name] = min(best[name], (time.perf_counter() - started) / len(signals))
    return best
