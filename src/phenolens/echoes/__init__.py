"""Overlapping ultrasonic echoes: simulator, US-CNN detector, sparse-coding baselines, evaluation.

import phenolens as pl

train = pl.echoes.cached_simulation(pl.echoes.EchoSimulationSettings(n_signals=10_000, seed=0))
detector = pl.echoes.USCNNDetector().fit(train.signals, train.heatmaps)   # or pl.echoes.EchoDetector("uscnn")
test = pl.echoes.simulate(pl.echoes.EchoSimulationSettings(n_signals=500, mean_gap=1.0, seed=1))
found = detector.predict(test.signals)                                    # Detections, strongest first
score = pl.echoes.score_detections(found, test.tof, test.amplitude, test.sigma, epsilon=0.1)

Detectors are a registry (`DETECTORS`): `USCNNDetector`, `OMPDetector`, `ISTADetector`, `SMPDetector`
(and `ComplexOMPDetector`, a reference); `EchoDetector(method, **params)` builds one by name.
"""

from phenolens.echoes.detection import DetectionRule, Detections, detect_echoes, non_maximum_suppression
from phenolens.echoes.detector import (
    DETECTORS,
    BaseEchoDetector,
    ComplexOMPDetector,
    EchoDetector,
    ISTADetector,
    OMPDetector,
    SMPDetector,
    USCNNDetector,
    register_detector,
)
from phenolens.echoes.dictionary import GaborDictionary
from phenolens.echoes.metrics import envelope_error, match_detections, score_detections
from phenolens.echoes.pulse import PulseShape, fit_pulse
from phenolens.echoes.pursuit import omp_codes, smp_codes
from phenolens.echoes.settings import EchoDetectionSettings, EchoEvaluationSettings, EchoSimulationSettings, EchoTrainingSettings
from phenolens.echoes.simulate import EchoSet, cached_simulation, simulate
from phenolens.echoes.solvers import StoppingRule, ista_codes, sklearn_omp_codes

__all__ = [
    "DETECTORS",
    "BaseEchoDetector",
    "ComplexOMPDetector",
    "DetectionRule",
    "Detections",
    "EchoDetectionSettings",
    "EchoDetector",
    "EchoEvaluationSettings",
    "EchoSet",
    "EchoSimulationSettings",
    "EchoTrainingSettings",
    "GaborDictionary",
    "ISTADetector",
    "OMPDetector",
    "PulseShape",
    "SMPDetector",
    "StoppingRule",
    "USCNNDetector",
    "cached_simulation",
    "detect_echoes",
    "envelope_error",
    "fit_pulse",
    "ista_codes",
    "match_detections",
    "non_maximum_suppression",
    "omp_codes",
    "register_detector",
    "score_detections",
    "simulate",
    "sklearn_omp_codes",
    "smp_codes",
]
