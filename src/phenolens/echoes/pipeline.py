"""The full echoes evaluation (what `phenolens echoes evaluate` runs) and US-CNN weights I/O.

`evaluate(uscnn, settings)` runs, in one process: dictionary-variant selection for the baselines,
the lambda / epsilon / SNR sweeps, side-by-side timing (with the FFT-based complex-atom OMP of
`pursuit.py` as a reference beside scikit-learn's OMP), the layer-thickness scan and the real
A-scans, and returns everything needed for `metrics.json` and the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from phenolens.core.errors import PhenolensError
from phenolens.echoes.detector import EchoDetector
from phenolens.echoes.evaluation import EvaluationSettings, run_sweeps, score, select_variants, time_methods, with_settings
from phenolens.echoes.pulse import DEFAULT_FS_MHZ, PulseFit, PulseShape, fit_pulse
from phenolens.echoes.real import ECHO_PULSES_FS_MHZ, RealDetection, detect_real
from phenolens.echoes.simulate import SimulationConfig, cached_simulation
from phenolens.echoes.thickness import LayerScan, LayerScanConfig, estimate_thickness, simulate_layer_scan, thickness_errors
from phenolens.echoes.training import TrainingSettings

REFERENCE_SIGNAL = "reference_signal_ultem_water"
ARCHITECTURE = "us-cnn"


def save_uscnn(detector: EchoDetector, folder: str | Path, extra: dict | None = None) -> Path:
    """Write a trained US-CNN detector's weights and config (pulse, training settings) to `folder`."""
    from phenolens.nn.weights import ModelCard, save_model

    card = ModelCard(
        ARCHITECTURE,
        hyperparameters={"kernel_size": detector.model_.kernel_size},
        channel_names=["amplitude"],
        extra={"pulse": detector.pulse.to_dict(), "distribution": detector.distribution, "training": detector.training.to_dict(), **(extra or {})},
    )
    return save_model(detector.model_, folder, card)


def load_uscnn(folder: str | Path, **options) -> EchoDetector:
    """A fitted US-CNN `EchoDetector` from a folder written by `save_uscnn` (`phenolens echoes train`)."""
    from phenolens.nn.weights import load_model

    model, card = load_model(folder, expected_architecture=ARCHITECTURE)
    pulse = PulseShape(**card.extra.get("pulse", {}))
    training = TrainingSettings(**card.extra.get("training", {}))
    return EchoDetector("uscnn", distribution=card.extra.get("distribution", "narrow"), pulse=pulse, training=training, model=model, **options).fit()


@dataclass
class EvaluationResult:
    settings: EvaluationSettings
    variants: dict[str, str]
    selection: dict[str, dict[str, float]]
    sweeps: dict
    timing: dict[str, float]
    reference: dict
    scan: LayerScan
    thickness_maps: dict[str, np.ndarray]
    thickness: dict[str, dict]
    real: list[RealDetection]
    pulse_fit: PulseFit | None
    real_signals: list = field(default_factory=list)

    def metrics(self) -> dict:
        """The metrics.json payload; `methods` and `real` follow the issue's schema."""
        methods = {}
        for name, by_lambda in self.sweeps["lambda"].items():
            methods[name] = {
                "auc": {value: result["auc"] for value, result in by_lambda.items()},
                "f1": {value: result["f1"] for value, result in by_lambda.items()},
                "seconds_per_signal": self.timing[name],
            }
        auc_at = {name: m["auc"] for name, m in methods.items()}
        low = f"{min(self.settings.lambdas):g}"
        default = f"{self.settings.default_lambda:g}"
        best_low = max(auc_at[n][low] for n in auc_at if n != "uscnn")
        return {
            "methods": methods,
            "real": {d.signal: d.n_echoes for d in self.real if d.method == "uscnn"},
            "targets": {
                f"uscnn_auc_over_best_baseline_at_lambda_{low}": auc_at["uscnn"][low] / best_low if best_low > 0 else None,
                f"uscnn_auc_minus_best_baseline_at_lambda_{default}": auc_at["uscnn"][default]
                - max(auc_at[n][default] for n in auc_at if n != "uscnn"),
                "omp_time_over_uscnn_time": self.timing["omp"] / self.timing["uscnn"],
            },
            "variants": self.variants,
            "selection_auc": self.selection,
            "sweeps": self.sweeps,
            "timing_seconds_per_signal": self.timing,
            "reference": self.reference,
            "thickness": {"config": self.scan.config.to_dict(), "errors": self.thickness},
            "real_details": _real_details(self.real),
            "pulse_fit": self.pulse_fit.to_dict() if self.pulse_fit else None,
            "settings": self.settings.to_dict(),
        }


def _real_details(real: list[RealDetection]) -> dict:
    details: dict[str, dict] = {}
    for d in real:
        details.setdefault(d.signal, {})[d.method] = d.summary()
    return details


def real_signals_and_fit() -> tuple[list, PulseFit | None]:
    """The echo-pulses A-scans and the echo model fitted to the reference pulse (at the files' sampling rate)."""
    from phenolens.data.loaders import load

    signals = load("echo-pulses").signals
    reference = next((s for s in signals if s.name == REFERENCE_SIGNAL), None)
    return signals, fit_pulse(reference.values, ECHO_PULSES_FS_MHZ, reference.source) if reference is not None else None


def reference_pulse(fs_mhz: float | None = None) -> PulseShape:
    """The echo model fitted to the real reference A-scan (one echo from a flat reflector in water): the
    pulse of the transducer behind `echo-pulses`, so a detector trained on it suits those A-scans.

    It is expressed at the sampling rate `fs_mhz`; by default at the rate where its width is the paper's
    sigma_0 = 9 samples (about 70 MHz), so the network, the 500-sample record and the training cost stay
    those of the paper, and the 100 MHz A-scans are resampled to that rate before detection."""
    _, fit = real_signals_and_fit()
    if fit is None:
        raise PhenolensError(f"the echo-pulses dataset has no {REFERENCE_SIGNAL} A-scan to fit; give --sigma0 and --freq instead")
    measured = fit.pulse
    rate = measured.fs_mhz * PulseShape().sigma / measured.sigma if fs_mhz is None else fs_mhz
    return replace(measured, sigma=measured.sigma * rate / measured.fs_mhz, fs_mhz=rate)


def training_pulse(pulse_from: str, sigma0: float | None = None, freq: float | None = None, fs: float | None = None) -> PulseShape:
    """The pulse named by --pulse-from ('reference' or 'paper'), with `sigma0` / `freq` overriding its fields.

    'reference' is expressed at `fs` if given, else at the rate where its width is 9 samples (see `reference_pulse`);
    'paper' is 9 samples at 5.4 MHz, sampled at `fs` (default 100 MHz)."""
    if pulse_from not in ("reference", "paper"):
        raise PhenolensError(f"unknown --pulse-from {pulse_from!r}; use reference (fitted to the reference A-scan) or paper (9 samples, 5.4 MHz)")
    pulse = reference_pulse(fs) if pulse_from == "reference" else PulseShape(fs_mhz=fs or DEFAULT_FS_MHZ)
    return replace(pulse, sigma=pulse.sigma if sigma0 is None else sigma0, freq_mhz=pulse.freq_mhz if freq is None else freq)


def evaluate(
    uscnn: EchoDetector,
    settings: EvaluationSettings = EvaluationSettings(),
    real_signals: list | None = None,
    select: bool = True,
    on_step: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Run every echoes experiment for a trained US-CNN and the three baselines (see module docstring).

    With `select=False` the baselines use the test distribution's dictionary instead of the best variant.
    """
    say = on_step or (lambda message: None)
    settings = EvaluationSettings(**{**asdict(settings), "pulse": uscnn.pulse}) if settings.pulse != uscnn.pulse else settings
    if select:
        say("selecting each baseline's dictionary variant")
        baselines, selection = select_variants(settings)
    else:
        baselines = {m: EchoDetector(m, distribution=settings.test_distribution, pulse=settings.pulse).fit() for m in ("omp", "ista", "smp")}
        selection = {}
    detectors = {"uscnn": uscnn, **baselines}
    variants = {name: detector.distribution for name, detector in baselines.items()}
    sweeps = run_sweeps(detectors, settings, on_setting=lambda text: say(f"sweep: {text}"))

    say("timing every method side by side")
    default_set = cached_simulation(settings.test_config())
    timing_signals = default_set.signals[: settings.n_timing]
    complex_omp = EchoDetector("omp-complex", distribution=baselines["omp"].distribution, pulse=settings.pulse).fit()
    timing = time_methods({**detectors, "omp-complex": complex_omp}, timing_signals)
    reference_set = default_set.subset(slice(0, settings.n_timing))
    reference = {
        "omp-complex": {
            "variant": complex_omp.distribution,
            "n_signals": len(reference_set),
            "auc_default": score(complex_omp, reference_set, settings.default_epsilon)["auc"],
            "omp_auc_same_signals": score(baselines["omp"], reference_set, settings.default_epsilon)["auc"],
            "seconds_per_signal": timing.pop("omp-complex"),
        }
    }

    say("layer-thickness scan")
    rows, columns = settings.scan_shape
    scan = simulate_layer_scan(LayerScanConfig(rows=rows, columns=columns, pulse=settings.pulse, distribution=settings.test_distribution))
    maps, errors = {}, {}
    for name, detector in detectors.items():
        layered = with_settings(detector, min_echoes=2)
        maps[name] = estimate_thickness(layered.predict(scan.signals), scan)
        errors[name] = thickness_errors(maps[name], scan)

    say("real A-scans")
    if real_signals is None:
        real_signals, fit = real_signals_and_fit()
    else:
        fit = None
    real = detect_real(detectors, real_signals)
    return EvaluationResult(settings, variants, selection, sweeps, timing, reference, scan, maps, errors, real, fit, real_signals)


def training_data(n_signals: int, distribution: str, pulse: PulseShape, seed: int, mean_gap: float = 3.0, snr_db: float = 20.0):
    """The cached simulated training set for US-CNN."""
    return cached_simulation(
        SimulationConfig(n_signals=n_signals, distribution=distribution, pulse=pulse, seed=seed, mean_gap=mean_gap, snr_db=snr_db)
    )
