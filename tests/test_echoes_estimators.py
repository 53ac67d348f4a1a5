"""Echo detectors in the scikit-learn shape: registry, clone, fit returns self, no mutation, windows for long signals."""

import numpy as np
import pytest
from sklearn.base import clone

from phenolens.core.errors import PhenolensError
from phenolens.core.estimators import NotFittedError
from phenolens.echoes.detection import DetectionRule
from phenolens.echoes.detector import (
    DETECTORS,
    EchoDetector,
    ISTADetector,
    OMPDetector,
    SMPDetector,
    SparseEchoDetector,
    USCNNDetector,
    check_signals,
    register_detector,
)
from phenolens.echoes.pulse import PulseShape, angular_frequency, echo_waveforms
from phenolens.echoes.settings import EchoTrainingSettings
from phenolens.echoes.solvers import REAL_STOP
from phenolens.echoes.windows import windowed_activation

NON_DEFAULT = {
    "uscnn": {"batch_size": 7, "rule": DetectionRule(beta=0.2), "window": 700, "training": EchoTrainingSettings(epochs=2)},
    "omp": {"distribution": "wide", "stop": REAL_STOP, "rule": DetectionRule(nms_window=9)},
    "omp-complex": {"distribution": "none", "rule": DetectionRule(max_detections=4)},
    "ista": {"iterations": 5, "threshold": 0.2, "rule": DetectionRule(min_echoes=2)},
    "smp": {"p": 0.3, "search": 1.5, "rule": DetectionRule(lowering=0.5)},
}


def small_network():
    from phenolens.nn.uscnn import USCNN

    return USCNN(kernel_size=55)


def test_the_registry_holds_one_class_per_method_and_the_factory_builds_them():
    assert {"uscnn", "omp", "ista", "smp", "omp-complex"} <= set(DETECTORS)
    assert type(EchoDetector("omp", distribution="wide")) is OMPDetector and EchoDetector("omp", distribution="wide").distribution == "wide"
    assert isinstance(EchoDetector("ista"), ISTADetector) and isinstance(EchoDetector("smp"), SMPDetector)
    assert isinstance(EchoDetector(), USCNNDetector)
    with pytest.raises(PhenolensError, match="unknown echo detection method 'lasso'"):
        EchoDetector("lasso")
    # each class has only its own parameters
    assert "iterations" in ISTADetector().get_params() and "stop" not in ISTADetector().get_params()
    assert "p" in SMPDetector().get_params() and "p" not in OMPDetector().get_params()


@pytest.mark.parametrize("method", sorted(NON_DEFAULT))
def test_every_detector_clones_and_fit_returns_self(method):
    params = NON_DEFAULT[method]
    detector = EchoDetector(method, **params)
    assert {k: detector.get_params()[k] for k in params} == params  # the constructor stores parameters unchanged
    copy = clone(detector)
    assert type(copy) is type(detector) and copy.get_params() == detector.get_params()
    if method == "uscnn":
        detector.set_params(model=small_network())
    assert detector.fit() is detector
    learned = [name for name in vars(detector) if name.endswith("_")]
    assert learned, "fit leaves learned state ending in _"
    fitted_copy = clone(detector)
    assert not any(hasattr(fitted_copy, name) for name in learned)  # clone drops learned state
    with pytest.raises(NotFittedError, match="not fitted"):
        fitted_copy.predict(np.zeros(100))


def test_refitted_changes_the_rule_and_keeps_the_rest():
    omp = OMPDetector(distribution="wide", stop=REAL_STOP).fit()
    layer = omp.refitted(min_echoes=2, beta=0.15, iterations=9)  # ISTA's parameter is not OMP's: ignored
    assert layer.rule == DetectionRule(beta=0.15, min_echoes=2) and layer.distribution == "wide" and layer.stop == REAL_STOP
    assert omp.rule == DetectionRule() and hasattr(layer, "dictionary_")


def test_uscnn_does_not_change_the_callers_model():
    network = small_network().train()
    weights = {k: v.clone() for k, v in network.state_dict().items()}
    detector = USCNNDetector(model=network).fit()
    assert network.training and not detector.model_.training and detector.model_ is not network
    assert all((network.state_dict()[k] == v).all() for k, v in weights.items())


def test_a_new_detector_is_one_class_and_one_registration():
    @register_detector("test-envelope")
    class EnvelopeDetector(SparseEchoDetector):
        def __init__(self, distribution="none", pulse=PulseShape(), rule=DetectionRule(), window=2048):
            self.distribution, self.pulse, self.rule, self.window = distribution, pulse, rule, window

        def codes(self, dictionary, signals):
            return np.abs(signals)[:, None, :]

    try:
        signal = np.zeros(300)
        signal[120] = 1.0
        found = EchoDetector("test-envelope").fit().predict(signal)
        assert found.for_signal(0)[0].tolist() == [120.0]
        assert clone(EchoDetector("test-envelope", rule=DetectionRule(beta=0.5))).rule.beta == 0.5
    finally:
        del DETECTORS["test-envelope"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.ones(100, dtype=complex), "complex"),
        (np.array(["1.0"] * 100), "not real numbers"),
        (np.ones((2, 3, 100)), "got shape"),
    ],
)
def test_signals_that_are_not_real_sample_arrays_are_refused(values, message):
    with pytest.raises(PhenolensError, match=message):
        check_signals(values, 10, "scan.npy")


def echo_train(length: int, positions: list[float], seed: int = 0) -> np.ndarray:
    """Noiseless echoes of the dictionary's 'none' shape (sigma 9, 5.4 MHz at 100 MHz) at `positions`."""
    rng = np.random.default_rng(seed)
    amplitudes = np.linspace(1.0, 0.5, len(positions))
    waves = echo_waveforms(positions, 9.0, angular_frequency(5.4), rng.uniform(0, 2 * np.pi, len(positions)), length)
    return amplitudes @ waves


def test_windows_tile_the_signal_and_a_local_operator_is_unchanged():
    rng = np.random.default_rng(3)
    signals = rng.standard_normal((2, 1001))
    kernel = np.array([0.25, 0.5, 0.25])

    def smooth(batch):
        return np.stack([np.convolve(row, kernel, mode="same") for row in batch])

    np.testing.assert_allclose(windowed_activation(smooth, signals, window=64, context=2), smooth(signals), atol=1e-12)
    with pytest.raises(PhenolensError, match="too short"):
        windowed_activation(smooth, signals, window=8, context=4)


def test_a_windowed_network_gives_the_whole_signal_activation_at_every_sample_its_ends_included():
    """US-CNN pads every layer at the signal's ends; zeros padded onto the input of the first and last windows did
    not reproduce that, so the first and last 12 samples of a long A-scan got another activation (by 0.08 on a
    0.37 scale) than the same A-scan in one piece."""
    network = small_network().eval()
    whole = EchoDetector("uscnn", window=8192, model=network).fit()
    windowed = EchoDetector("uscnn", window=300, model=network).fit()
    signals = np.random.default_rng(0).standard_normal((2, 2000)).astype(np.float32)
    np.testing.assert_allclose(windowed.activation(signals), whole.activation(signals), rtol=1e-5, atol=1e-6)
    # the same for a two-layer local operator: a 'same' convolution of a 'same' convolution
    kernel = np.array([0.2, 0.5, 0.3])

    def twice(batch):
        once = np.stack([np.convolve(row, kernel, mode="same") for row in batch])
        return np.stack([np.convolve(row, kernel, mode="same") for row in np.maximum(once, 0) + 1.0])

    np.testing.assert_allclose(windowed_activation(twice, signals[:, :101], window=20, context=2), twice(signals[:, :101]), atol=1e-12)


@pytest.mark.parametrize("method", ["uscnn", "ista", "omp", "smp"])
def test_windowed_detection_equals_whole_signal_detection_away_from_the_seams(method):
    length, window = 1500, 512
    params = {"distribution": "none"} if method != "uscnn" else {"model": small_network()}
    whole = EchoDetector(method, window=4096, **params).fit()
    windowed = EchoDetector(method, window=window, **params).fit()
    step = window - 2 * windowed.context
    centres = [step * k + step / 2 for k in range(length // step)]  # echoes in the middle of each window's kept part
    signal = echo_train(length, [round(c) for c in centres])
    expected, found = whole.predict(signal), windowed.predict(signal)
    np.testing.assert_array_equal(np.sort(found.for_signal(0)[0]), np.sort(expected.for_signal(0)[0]))
    # US-CNN is a local operator: the same activation. ISTA's step comes from the dictionary's Lipschitz
    # constant, estimated per length (within 1 %); pursuits may spend their atoms differently per window.
    if method == "uscnn":
        np.testing.assert_allclose(found.amplitudes, expected.amplitudes, rtol=1e-5, atol=1e-6)
    elif method == "ista":
        np.testing.assert_allclose(found.amplitudes, expected.amplitudes, rtol=1e-2)
