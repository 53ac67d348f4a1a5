"""Overlapping ultrasonic echoes: simulator, US-CNN detector, sparse-coding baselines, evaluation.

import phenolens as pl

train = pl.echoes.cached_simulation(pl.echoes.EchoSimulationSettings(n_signals=10_000, seed=0))
detector = pl.echoes.USCNNDetector().fit(train.signals, train.heatmaps)   # or pl.echoes.EchoDetector("uscnn")
test = pl.echoes.simulate(pl.echoes.EchoSimulationSettings(n_signals=500, mean_gap=1.0, seed=1))
found = detector.predict(test.signals)                                    # Detections, strongest first
score = pl.echoes.score_detections(found, test.tof, test.amplitude, test.sigma, epsilon=0.1)

Detectors are a registry (`DETECTORS`): `USCNNDetector`, `OMPDetector`, `ISTADetector`, `SMPDetector`
(and `ComplexOMPDetector`, a reference); `EchoDetector(method, **params)` builds one by name.

Names load on first use, so that the command line reads the settings without scikit-learn or torch.
"""

from __future__ import annotations

from phenolens.core.lazy import lazy_exports

_EXPORTS = {
    "DetectionRule": "detection",
    "Detections": "detection",
    "detect_echoes": "detection",
    "non_maximum_suppression": "detection",
    "DETECTORS": "detector",
    "BaseEchoDetector": "detector",
    "ComplexOMPDetector": "detector",
    "EchoDetector": "detector",
    "ISTADetector": "detector",
    "OMPDetector": "detector",
    "SMPDetector": "detector",
    "USCNNDetector": "detector",
    "register_detector": "detector",
    "GaborDictionary": "dictionary",
    "envelope_error": "metrics",
    "match_detections": "metrics",
    "score_detections": "metrics",
    "PulseShape": "pulse",
    "fit_pulse": "pulse",
    "omp_codes": "pursuit",
    "smp_codes": "pursuit",
    "EchoDetectionSettings": "settings",
    "EchoEvaluationSettings": "settings",
    "EchoSimulationSettings": "settings",
    "EchoTrainingSettings": "settings",
    "EchoSet": "simulate",
    "cached_simulation": "simulate",
    "simulate": "simulate",
    "StoppingRule": "solvers",
    "ista_codes": "solvers",
    "sklearn_omp_codes": "solvers",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
