"""Settings of the echoes pipeline: one frozen, validated object per step, shared by the API and the CLI.

- `EchoSimulationSettings`: everything that determines a simulated dataset (and its cache key);
  `phenolens echoes simulate`.
- `EchoTrainingSettings`: US-CNN's training set (size, overlap, SNR, pulse) and schedule;
  `phenolens echoes train`.
- `EchoEvaluationSettings`: test-set sizes, sweep values and defaults of `phenolens echoes evaluate`.
- `EchoDetectionSettings`: methods, dictionary variant, sampling rate and window of
  `phenolens echoes detect`.

A bad value raises `PhenolensError` on construction, naming the field and its option, before any
signal is simulated or read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from phenolens.core.settings import Settings, setting
from phenolens.echoes.pulse import DISTRIBUTIONS, PulseShape

DISTRIBUTION_HELP = "Pulse width/frequency distribution (none: every echo is the reference pulse)."
DETECTION_METHODS = ("uscnn", "omp", "ista", "smp")


@dataclass(frozen=True)
class EchoSimulationSettings(Settings):
    """Everything that determines a simulated set of overlapping-echo signals (and its cache key).

    A signal holds 1..`max_echoes` unit-norm Gaussian echoes of the reference pulse (`sigma0`,
    `freq_mhz`, sampled at `fs_mhz`), widths and frequencies drawn from `distribution`, gaps
    Exp(`mean_gap` sigma_0) restricted to `gap_bounds`, white noise at `snr_db`.

    Raises
    ------
    PhenolensError
        On construction, for a value outside its range, a record too short for `max_echoes`
        echoes, or a centre frequency at or above the Nyquist frequency.
    """

    step: ClassVar[str] = "echo simulation"

    n_signals: int = setting(1000, "Number of signals.", minimum=1)
    length: int = setting(500, "Samples per signal.", minimum=1)
    max_echoes: int = setting(8, "Most echoes per signal (each signal holds 1 to this many).", minimum=1)
    mean_gap: float = setting(
        3.0,
        "Overlap lambda: time-of-flight gaps are Exp(mean lambda sigma_0) restricted to --gap-bounds, so the realised mean gap "
        "stays inside the bounds (about 2.5 sigma_0 at lambda 1 and 3.4 at lambda 5 with 1.5,6).",
        minimum=0.0,
        exclusive_minimum=True,
    )
    gap_bounds: tuple[float, ...] = setting(
        (1.5, 6.0), "Smallest and largest time-of-flight gap (sigma_0 units).", minimum=0.0, exclusive_minimum=True
    )
    min_amplitude: float = setting(0.1, "Smallest echo amplitude (amplitudes are uniform in [this, 1]).", minimum=0.0, maximum=1.0)
    distribution: str = setting("narrow", DISTRIBUTION_HELP, choices=tuple(DISTRIBUTIONS))
    snr_db: float = setting(20.0, "Signal-to-noise ratio (dB).", option="--snr")
    target_width: float = setting(
        0.2, "Width of the heat-map target's Gaussians, as a fraction of each echo's sigma.", minimum=0.0, exclusive_minimum=True
    )
    sigma0: float = setting(9.0, "Reference pulse width sigma_0 (samples).", minimum=0.0, exclusive_minimum=True)
    freq_mhz: float = setting(5.4, "Reference centre frequency (MHz).", minimum=0.0, exclusive_minimum=True, option="--freq")
    fs_mhz: float = setting(100.0, "Sampling rate (MHz).", minimum=0.0, exclusive_minimum=True, option="--fs")
    seed: int = setting(0, "Seed; the same seed gives the same signals.")

    def check(self) -> None:
        """Two gap bounds in order, a record long enough for every echo, frequencies below Nyquist."""
        if len(self.gap_bounds) != 2 or self.gap_bounds[0] > self.gap_bounds[1]:
            self.fail("gap_bounds", "give two values, smallest first (e.g. 1.5,6)")
        highest = max((self.freq_mhz, *(DISTRIBUTIONS[self.distribution][1] or ())))
        if highest >= self.fs_mhz / 2:
            self.fail(
                "fs_mhz", f"the {self.distribution} pulses reach {highest:g} MHz, at or above the Nyquist frequency; sample above {2 * highest:g} MHz"
            )
        needed = 2 * self.margin + (self.max_echoes - 1) * self.gap_bounds[1] * self.sigma0
        if self.length < needed:
            self.fail("length", f"cannot hold {self.max_echoes} echoes; use at least {int(-(-needed // 1))} samples")

    @property
    def pulse(self) -> PulseShape:
        """The reference pulse (phase 0; every simulated echo draws its own phase)."""
        return PulseShape(sigma=self.sigma0, freq_mhz=self.freq_mhz, fs_mhz=self.fs_mhz)

    @property
    def margin(self) -> float:
        """Distance kept between any time of flight and the record ends (3 of the widest sigma)."""
        return 3.0 * self.sigma0 * DISTRIBUTIONS[self.distribution][0][1]

    @classmethod
    def for_pulse(cls, pulse: PulseShape, **values) -> EchoSimulationSettings:
        """Settings whose reference pulse is `pulse` (its width, frequency and sampling rate).

        Parameters
        ----------
        pulse : PulseShape
            The echo model, e.g. a trained detector's.
        **values
            Any other field.

        Returns
        -------
        EchoSimulationSettings
        """
        return cls(sigma0=pulse.sigma, freq_mhz=pulse.freq_mhz, fs_mhz=pulse.fs_mhz, **values)


@dataclass(frozen=True)
class EchoTrainingSettings(Settings):
    """US-CNN's training set and schedule (defaults: the published 10,000 signals, Adam 0.01, batch 150, <= 80 epochs).

    The training set is simulated with the pulse named by `pulse_from` (`sigma0`, `freq_mhz`,
    `fs_mhz` override its fields); `seed` seeds the simulation, the split and the initial weights.
    A detector given these settings uses the schedule fields (`epochs` ... `precision`).

    Raises
    ------
    PhenolensError
        On construction, for a value outside its range.
    """

    step: ClassVar[str] = "US-CNN training"

    n_signals: int = setting(10000, "Simulated training signals (split into training and validation by --val-fraction).", minimum=2)
    distribution: str = setting("narrow", DISTRIBUTION_HELP, choices=tuple(DISTRIBUTIONS))
    mean_gap: float = setting(3.0, "Overlap lambda of the training signals (sigma_0 units).", minimum=0.0, exclusive_minimum=True)
    snr_db: float = setting(20.0, "SNR of the training signals (dB).", option="--snr")
    pulse_from: str = setting(
        "reference",
        "Echo model of the training signals: reference fits the built-in reference A-scan (the echo-pulses transducer), "
        "paper is the original sigma_0 = 9 samples at 5.4 MHz; --sigma0 / --freq / --fs override either.",
        choices=("reference", "paper"),
    )
    sigma0: float | None = setting(None, "Pulse width sigma_0 (samples); the first kernel spans 6 sigma_0.", minimum=0.0, exclusive_minimum=True)
    freq_mhz: float | None = setting(None, "Centre frequency (MHz).", minimum=0.0, exclusive_minimum=True, option="--freq")
    fs_mhz: float | None = setting(
        None,
        "Detector sampling rate (MHz); default 100, or for --pulse-from reference the rate where sigma_0 is 9 samples.",
        minimum=0.0,
        exclusive_minimum=True,
        option="--fs",
    )
    epochs: int = setting(80, "Maximum epochs (early stopping after --stop-patience epochs without improvement).", minimum=1)
    batch_size: int = setting(150, "Batch size.", minimum=1)
    lr: float = setting(0.01, "Adam learning rate.", minimum=0.0, exclusive_minimum=True)
    lr_factor: float = setting(
        0.5, "Factor applied to the learning rate when the validation loss stalls.", minimum=0.0, exclusive_minimum=True, maximum=1.0
    )
    lr_patience: int = setting(12, "Epochs without improvement before the learning rate is lowered.", minimum=1)
    stop_patience: int = setting(20, "Epochs without improvement before training stops (the best weights are kept).", minimum=1)
    val_fraction: float = setting(0.2, "Share of the signals held out for validation.", minimum=0.0, exclusive_minimum=True, maximum=0.9)
    seed: int = setting(0, "Seed of the simulation, the split and the initial weights.")
    precision: str = setting(
        "auto",
        "Forward-pass precision: auto (bfloat16 where the CPU has AMX bf16 tiles), float32 or bfloat16.",
        choices=("auto", "float32", "bfloat16"),
    )

    def resolved_precision(self) -> str:
        """The precision training will use on this machine.

        Returns
        -------
        str
            ``"float32"`` or ``"bfloat16"``.
        """
        if self.precision == "auto":
            import torch

            return "bfloat16" if torch.cpu.get_capabilities().get("amx_bf16", False) else "float32"
        return self.precision


@dataclass(frozen=True)
class EchoEvaluationSettings(Settings):
    """Test-set sizes, sweep values and defaults of the echoes evaluation.

    lambda is the mean of the gaps' exponential before its restriction to the gap bounds (sigma_0 units),
    epsilon the hit tolerance, SNR in dB.

    Raises
    ------
    PhenolensError
        On construction, for a value outside its range, a `scan_shape` that is not two numbers, or a
        `default_lambda` missing from `lambdas` (the targets are read at it).
    """

    step: ClassVar[str] = "echo detection evaluation"

    n_test: int = setting(300, "Test signals per setting.", minimum=1)
    lambdas: tuple[float, ...] = setting((1.0, 2.0, 3.0, 4.0, 5.0), "Overlaps lambda of the lambda sweep.", minimum=0.0, exclusive_minimum=True)
    epsilons: tuple[float, ...] = setting(
        (0.025, 0.05, 0.1, 0.2, 0.4), "Hit tolerances epsilon of the epsilon sweep.", minimum=0.0, exclusive_minimum=True
    )
    snrs: tuple[float, ...] = setting((0.0, 5.0, 10.0, 20.0, 30.0), "SNRs (dB) of the SNR sweep.")
    default_lambda: float = setting(3.0, "Overlap lambda of the epsilon sweep and of the default setting.", minimum=0.0, exclusive_minimum=True)
    default_epsilon: float = setting(0.1, "Hit tolerance of the lambda and SNR sweeps.", minimum=0.0, exclusive_minimum=True)
    default_snr: float = setting(20.0, "SNR (dB) of the lambda and epsilon sweeps.")
    test_distribution: str = setting("narrow", "Pulse distribution of the test signals.", choices=tuple(DISTRIBUTIONS))
    variants: tuple[str, ...] = setting(("none", "narrow", "wide"), "Dictionary variants each baseline chooses from.", choices=tuple(DISTRIBUTIONS))
    select_variants: bool = setting(True, "Choose each baseline's dictionary variant on a selection set (else: the test distribution's).")
    n_selection: int = setting(60, "Signals used to choose each baseline's dictionary variant.", minimum=1)
    n_timing: int = setting(100, "Signals timed per method.", minimum=1)
    scan_shape: tuple[int, ...] = setting((8, 40), "Rows and columns of the simulated layer-thickness scan.", minimum=1)
    seed: int = setting(20220201, "Seed of the test sets.")

    def check(self) -> None:
        """A two-number scan shape and a default lambda among the swept ones."""
        if len(self.scan_shape) != 2:
            self.fail("scan_shape", "give rows,columns")
        if self.default_lambda not in self.lambdas:
            self.fail("default_lambda", f"must be one of --lambdas ({', '.join(f'{v:g}' for v in self.lambdas)})")

    def quick(self) -> EchoEvaluationSettings:
        """The settings of a quick check (demo, ``--small``): 40 test signals, lambda 1 and 3, no variant selection.

        Returns
        -------
        EchoEvaluationSettings
        """
        return self.replace(
            n_test=40, lambdas=(1.0, 3.0), epsilons=(0.05, 0.1, 0.2), snrs=(10.0, 20.0), n_timing=30, scan_shape=(4, 16), select_variants=False
        )


@dataclass(frozen=True)
class EchoDetectionSettings(Settings):
    """What `phenolens echoes detect` runs on real A-scans: methods, dictionary variant, sampling rate, window.

    Signals longer than `window` samples (at the detector's rate) are processed in overlapping
    windows, so memory does not grow with their length.

    Raises
    ------
    PhenolensError
        On construction, for a value outside its range.
    """

    step: ClassVar[str] = "echo detection"

    methods: tuple[str, ...] = setting(DETECTION_METHODS, "Comma-separated detection methods.", choices=DETECTION_METHODS)
    distribution: str = setting("narrow", "Dictionary variant of the sparse methods.", choices=tuple(DISTRIBUTIONS))
    fs_mhz: float = setting(100.0, "Sampling rate (MHz) of the files.", minimum=0.0, exclusive_minimum=True, option="--fs")
    window: int | None = setting(
        None,
        "Longest stretch (samples at the detector's rate) detected at once; longer signals go in overlapping windows "
        "(default: each method's own, 2048 samples, 512 for omp whose explicit matrix grows with the window's square). "
        "US-CNN gives the whole-signal result and ISTA nearly; the greedy omp and smp stop per window, so theirs can differ.",
        minimum=256,
    )

    def check(self) -> None:
        """At least one method, none twice."""
        if not self.methods or len(set(self.methods)) != len(self.methods):
            self.fail("methods", "name each method once, e.g. uscnn,omp")
