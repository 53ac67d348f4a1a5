"""Echo detectors: US-CNN and the sparse-coding baselines, one small scikit-learn-style class each.

    detector = USCNNDetector().fit(train.signals, train.heatmaps)        # or EchoDetector("uscnn")
    detections = OMPDetector(distribution="wide").fit().predict(scans)    # Detections, strongest first

Every detector produces an activation (network output, or per-time-of-flight code amplitude) that
goes through the same post-processing (`detection.detect_echoes`). Signals longer than `window`
samples are processed in overlapping windows (`windows.windowed_activation`). A new method is one
subclass of `BaseEchoDetector` (its parameters in `__init__`, its activation in `_activation`) and
one `@register_detector("name")`.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, clone

from phenolens.core.errors import PhenolensError
from phenolens.core.estimators import check_is_fitted
from phenolens.echoes.detection import DetectionRule, Detections
from phenolens.echoes.dictionary import GaborDictionary, codes_to_activation
from phenolens.echoes.pulse import PulseShape
from phenolens.echoes.pursuit import omp_codes, smp_codes
from phenolens.echoes.settings import EchoTrainingSettings
from phenolens.echoes.solvers import SIMULATION_STOP, StoppingRule, ista_codes, sklearn_omp_codes
from phenolens.echoes.training import train_uscnn
from phenolens.echoes.windows import windowed_activation

DETECTORS: dict[str, type[BaseEchoDetector]] = {}
BASELINES = ("omp", "ista", "smp")
DEFAULT_WINDOW = 2048  # samples; the real A-scans (<= 2,000 samples) and simulated records fit in one
# scikit-learn's OMP works on an explicit (T, 2 P T) matrix: its memory and time grow with the window's square
OMP_WINDOW = 512


def register_detector(method: str):
    """Class decorator: make a detector available as `EchoDetector(method, ...)` and on the command line.

    Parameters
    ----------
    method : str
        The method's name (``--methods`` word, metrics key).

    Returns
    -------
    callable
        The decorator; it returns the class unchanged.
    """

    def decorate(cls: type[BaseEchoDetector]) -> type[BaseEchoDetector]:
        cls.method = method
        DETECTORS[method] = cls
        return cls

    return decorate


def EchoDetector(method: str = "uscnn", **params) -> BaseEchoDetector:
    """A detector from the registry by method name: uscnn, omp, ista, smp, or omp-complex (a reference).

    Parameters
    ----------
    method : str
        A registered method.
    **params
        That detector class's parameters.

    Returns
    -------
    BaseEchoDetector
        An unfitted detector.

    Raises
    ------
    PhenolensError
        For an unknown method.
    """
    if method not in DETECTORS:
        raise PhenolensError(f"unknown echo detection method {method!r}; choose one of {', '.join(DETECTORS)}")
    return DETECTORS[method](**params)


def check_signals(signals, min_length: int, source: str = "signals") -> np.ndarray:
    """Validate signals and return them as a float64 (N, T) array.

    Parameters
    ----------
    signals : array-like
        One signal (T,) or a batch (N, T) of real numbers.
    min_length : int
        Fewest samples accepted.
    source : str
        Named in error messages (a file name).

    Returns
    -------
    numpy.ndarray
        (N, T) float64.

    Raises
    ------
    PhenolensError
        For complex, text or other non-real samples, another shape, no samples, NaN or infinite
        samples, or fewer than `min_length` samples.
    """
    array = np.asarray(signals)
    if array.dtype.kind not in "iuf":
        kind = "complex" if array.dtype.kind == "c" else f"{array.dtype} values"
        raise PhenolensError(f"{source}: samples are {kind}, not real numbers; give real-valued samples")
    array = array.astype(np.float64, copy=False)
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


class BaseEchoDetector(BaseEstimator):
    """Shared behaviour of every echo detector: validation, windowing, post-processing, refitting.

    Subclasses store their parameters in `__init__` (among them `pulse`, `window` and the
    post-processing `rule`, a `DetectionRule`) and implement `fit`, `_activation` and `context`.
    """

    method: ClassVar[str] = ""

    @property
    def name(self) -> str:
        """The method name, with the dictionary variant for sparse methods (``omp[wide]``)."""
        return self.method

    @property
    def min_length(self) -> int:
        """Shortest accepted signal: the network's first-layer kernel (the same bound for every method)."""
        from phenolens.nn.uscnn import wide_kernel_size

        return wide_kernel_size(self.pulse.sigma)

    @property
    def context(self) -> int:
        """Samples on each side of a time of flight that its activation depends on (the window overlap)."""
        raise NotImplementedError

    def fit(self, signals=None, heatmaps=None) -> BaseEchoDetector:
        """Prepare the detector (train US-CNN, build a dictionary).

        Parameters
        ----------
        signals : array-like, optional
            (N, T) training signals (US-CNN) or signals whose length sizes the dictionary.
        heatmaps : array-like, optional
            (N, T) heat-map targets (US-CNN only).

        Returns
        -------
        BaseEchoDetector
            self.
        """
        raise NotImplementedError

    def _activation(self, signals: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def activation(self, signals, source: str = "signals") -> np.ndarray:
        """Pre-detection activation: network output, or the largest code modulus per time of flight.

        Parameters
        ----------
        signals : array-like
            One signal (T,) or a batch (N, T).
        source : str
            Named in error messages.

        Returns
        -------
        numpy.ndarray
            (N, T) activation.

        Raises
        ------
        NotFittedError
            Before `fit`.
        PhenolensError
            For bad signals (see `check_signals`).
        """
        check_is_fitted(self)
        signals = check_signals(signals, self.min_length, source)
        if signals.shape[1] <= self.window:
            return self._activation(signals)
        return windowed_activation(self._activation, signals, self.window, self.context)

    def predict(self, signals, source: str = "signals") -> Detections:
        """Detected echoes: positions in samples and normalised amplitudes, strongest first.

        Parameters
        ----------
        signals : array-like
            One signal (T,) or a batch (N, T).
        source : str
            Named in error messages.

        Returns
        -------
        Detections
        """
        return self.detections_from(self.activation(signals, source))

    def detections_from(self, activation: np.ndarray) -> Detections:
        """Apply this detector's post-processing to an activation computed earlier.

        Parameters
        ----------
        activation : numpy.ndarray
            (N, T) output of `activation`.

        Returns
        -------
        Detections
        """
        return self.rule.apply(activation)

    def refitted(self, **changes) -> BaseEchoDetector:
        """A fitted copy with other parameters (post-processing, stopping rule), the same model or dictionary variant.

        Parameters
        ----------
        **changes
            Parameters to change, and `DetectionRule` fields (``beta=0.15``); those this detector
            does not have are ignored (e.g. `stop` for ISTA).

        Returns
        -------
        BaseEchoDetector
        """
        own = self.get_params(deep=False)
        params = {k: v for k, v in changes.items() if k in own}
        rule = {k: v for k, v in changes.items() if k in DetectionRule.__dataclass_fields__}
        if rule:
            params["rule"] = replace(params.get("rule", self.rule), **rule)
        return clone(self).set_params(**params).fit()


@register_detector("uscnn")
class USCNNDetector(BaseEchoDetector):
    """US-CNN: a lean fully convolutional network trained on simulated signals (Shpigler et al. 2022).

    Parameters
    ----------
    pulse : PulseShape
        Echo model; its width sets the first kernel (6 sigma_0).
    distribution : str
        Pulse distribution of the training signals (recorded with the weights).
    training : EchoTrainingSettings
        Schedule used by `fit` when no `model` is given.
    model : phenolens.nn.uscnn.USCNN, optional
        A trained network to use instead of training (copied, never changed).
    batch_size : int
        Signals per forward pass.
    rule : DetectionRule
        Post-processing of the activation.
    window : int
        Longest signal processed at once; longer ones go in overlapping windows.

    Attributes
    ----------
    model_ : USCNN
        The network in eval mode.
    history_, training_seconds_, training_precision_
        Training record (only when trained by `fit`).
    """

    def __init__(
        self,
        pulse: PulseShape = PulseShape(),
        distribution: str = "narrow",
        training: EchoTrainingSettings = EchoTrainingSettings(),
        model=None,
        batch_size: int = 512,
        rule: DetectionRule = DetectionRule(),
        window: int = DEFAULT_WINDOW,
    ) -> None:
        self.pulse = pulse
        self.distribution = distribution
        self.training = training
        self.model = model
        self.batch_size = batch_size
        self.rule = rule
        self.window = window

    @property
    def min_length(self) -> int:
        """Shortest accepted signal: the first-layer kernel."""
        return self.model_.kernel_size if hasattr(self, "model_") else super().min_length

    @property
    def context(self) -> int:
        """The network's receptive radius."""
        return self.model_.context

    def fit(self, signals=None, heatmaps=None) -> USCNNDetector:
        """Use a copy of `model` if given, else train on (signals, heat maps) with `training`.

        Parameters
        ----------
        signals, heatmaps : array-like, optional
            (N, T) simulated signals and heat-map targets (needed without `model`).

        Returns
        -------
        USCNNDetector
            self.

        Raises
        ------
        PhenolensError
            Without `model` and without training data.
        """
        if self.model is not None:
            self.model_ = copy.deepcopy(self.model)
        else:
            if signals is None or heatmaps is None:
                raise PhenolensError("US-CNN needs training signals and heat maps (or a trained model); simulate them with phenolens.echoes.simulate")
            result = train_uscnn(signals, heatmaps, self.pulse.sigma, self.training)
            self.model_, self.history_, self.training_seconds_ = result.model, result.history, result.seconds
            self.training_precision_ = result.precision
        self.model_.eval()
        return self

    def _activation(self, signals: np.ndarray) -> np.ndarray:
        import torch

        outputs = []
        with torch.no_grad():
            for start in range(0, len(signals), self.batch_size):
                batch = torch.from_numpy(signals[start : start + self.batch_size].astype(np.float32))
                outputs.append(self.model_(batch).numpy())
        return np.concatenate(outputs).astype(np.float64)

    def refitted(self, **changes) -> USCNNDetector:
        """A copy with other post-processing around the same trained network.

        Parameters
        ----------
        **changes
            Parameters to change (see `BaseEchoDetector.refitted`).

        Returns
        -------
        USCNNDetector
            Fitted.
        """
        check_is_fitted(self, "model_")
        return super().refitted(**changes, model=self.model_)


class SparseEchoDetector(BaseEchoDetector):
    """Sparse coding on the Gabor dictionary of a pulse distribution; the activation is the largest code modulus per time of flight.

    Subclasses add their solver's parameters and implement `codes`.
    """

    @property
    def name(self) -> str:
        """``method[distribution]``."""
        return f"{self.method}[{self.distribution}]"

    @property
    def context(self) -> int:
        """Twice the widest atom's half-width: an echo kept from a window lies wholly inside it."""
        return 2 * self.dictionary_.half

    def fit(self, signals=None, heatmaps=None) -> SparseEchoDetector:
        """Build the dictionary (for the length of `signals`, default 500 samples; other lengths are built when met).

        Parameters
        ----------
        signals : array-like, optional
            Signals whose length sizes the first dictionary.
        heatmaps : ignored

        Returns
        -------
        SparseEchoDetector
            self.

        Raises
        ------
        PhenolensError
            For an unknown distribution.
        """
        from phenolens.echoes.pulse import DISTRIBUTIONS

        if self.distribution not in DISTRIBUTIONS:
            raise PhenolensError(f"unknown pulse distribution {self.distribution!r}; choose one of {', '.join(DISTRIBUTIONS)}")
        length = np.shape(signals)[-1] if signals is not None else 500
        self.dictionary_ = GaborDictionary.for_distribution(self.distribution, self.pulse, length)
        self._dictionaries = {length: self.dictionary_}
        return self

    def _dictionary(self, length: int) -> GaborDictionary:
        if length not in self._dictionaries:
            self._dictionaries[length] = GaborDictionary.for_distribution(self.distribution, self.pulse, length)
        return self._dictionaries[length]

    def codes(self, dictionary: GaborDictionary, signals: np.ndarray) -> np.ndarray:
        """Complex codes of the subclass's solver.

        Parameters
        ----------
        dictionary : GaborDictionary
            The atoms, for the signals' length.
        signals : numpy.ndarray
            (N, T) real signals.

        Returns
        -------
        numpy.ndarray
            Complex codes (N, P, T).
        """
        raise NotImplementedError

    def _activation(self, signals: np.ndarray) -> np.ndarray:
        return codes_to_activation(self.codes(self._dictionary(signals.shape[1]), signals))


@register_detector("omp")
class OMPDetector(SparseEchoDetector):
    """scikit-learn's Orthogonal Matching Pursuit on the dictionary's real cosine/sine columns (the `omp` baseline).

    Parameters
    ----------
    distribution : str
        Dictionary variant: none, narrow or wide.
    pulse : PulseShape
        Reference pulse of the dictionary.
    stop : StoppingRule
        Residual-energy fraction or atom count at which the pursuit stops.
    rule : DetectionRule
        Post-processing of the activation.
    window : int
        Longest signal processed at once (default 512: the explicit matrix grows with its square).
    """

    def __init__(
        self,
        distribution: str = "narrow",
        pulse: PulseShape = PulseShape(),
        stop: StoppingRule = SIMULATION_STOP,
        rule: DetectionRule = DetectionRule(),
        window: int = OMP_WINDOW,
    ) -> None:
        self.distribution = distribution
        self.pulse = pulse
        self.stop = stop
        self.rule = rule
        self.window = window

    def codes(self, dictionary: GaborDictionary, signals: np.ndarray) -> np.ndarray:
        """scikit-learn OMP codes (`solvers.sklearn_omp_codes`); parameters and result as `SparseEchoDetector.codes`."""
        return sklearn_omp_codes(dictionary, signals, self.stop)


@register_detector("omp-complex")
class ComplexOMPDetector(OMPDetector):
    """OMP over complex Gabor atoms with FFT correlations (`pursuit.omp_codes`): a faster reference beside `omp`.

    Parameters are those of `OMPDetector`.
    """

    def codes(self, dictionary: GaborDictionary, signals: np.ndarray) -> np.ndarray:
        """Complex-atom OMP codes (`pursuit.omp_codes`); parameters and result as `SparseEchoDetector.codes`."""
        return omp_codes(dictionary, signals, self.stop)


@register_detector("smp")
class SMPDetector(SparseEchoDetector):
    """Support Matching Pursuit (Mor, Azoulay & Aladjem 2010): the atom whose removal leaves the sparsest residual.

    Parameters
    ----------
    distribution : str
        Dictionary variant: none, narrow or wide.
    pulse : PulseShape
        Reference pulse of the dictionary.
    stop : StoppingRule
        Residual-energy fraction or atom count at which the pursuit stops.
    p : float
        Exponent of the l_p support measure, 0 < p < 1.
    search : float
        Candidates within this many widest-atom sigmas of the correlation peak.
    rule : DetectionRule
        Post-processing of the activation.
    window : int
        Longest signal processed at once.
    """

    def __init__(
        self,
        distribution: str = "narrow",
        pulse: PulseShape = PulseShape(),
        stop: StoppingRule = SIMULATION_STOP,
        p: float = 0.5,
        search: float = 2.0,
        rule: DetectionRule = DetectionRule(),
        window: int = DEFAULT_WINDOW,
    ) -> None:
        self.distribution = distribution
        self.pulse = pulse
        self.stop = stop
        self.p = p
        self.search = search
        self.rule = rule
        self.window = window

    def codes(self, dictionary: GaborDictionary, signals: np.ndarray) -> np.ndarray:
        """SMP codes (`pursuit.smp_codes`); parameters and result as `SparseEchoDetector.codes`."""
        return smp_codes(dictionary, signals, self.stop, p=self.p, search=self.search)


@register_detector("ista")
class ISTADetector(SparseEchoDetector):
    """ISTA (iterative soft thresholding) for the LASSO on the Gabor dictionary; US-CNN's baseline runs 3 iterations at 0.1.

    Parameters
    ----------
    distribution : str
        Dictionary variant: none, narrow or wide.
    pulse : PulseShape
        Reference pulse of the dictionary.
    iterations : int
        ISTA iterations from zero codes.
    threshold : float
        The l_1 weight.
    rule : DetectionRule
        Post-processing of the activation.
    window : int
        Longest signal processed at once.
    """

    def __init__(
        self,
        distribution: str = "narrow",
        pulse: PulseShape = PulseShape(),
        iterations: int = 3,
        threshold: float = 0.1,
        rule: DetectionRule = DetectionRule(),
        window: int = DEFAULT_WINDOW,
    ) -> None:
        self.distribution = distribution
        self.pulse = pulse
        self.iterations = iterations
        self.threshold = threshold
        self.rule = rule
        self.window = window

    def codes(self, dictionary: GaborDictionary, signals: np.ndarray) -> np.ndarray:
        """ISTA codes (`solvers.ista_codes`); parameters and result as `SparseEchoDetector.codes`."""
        return ista_codes(dictionary, signals, self.iterations, self.threshold)
