"""Settings of the counterfactual pipeline: training the i-ResNet (and autoencoder), and explaining images.

The same objects configure the Python API (`train_counterfactual_model`, `explain_counterfactuals`)
and the command line (`phenolens counterfactual train | explain`, whose options are derived from
these fields), so every default exists once. This module imports no torch, so the CLI starts fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from phenolens.core.settings import Settings, setting


@dataclass(frozen=True)
class CounterfactualTrainingSettings(Settings):
    """What `train_counterfactual_model` does; saved with the weights and in run.json.

    Raises
    ------
    PhenolensError
        On construction, naming the field and its option, when a value is out of range or two
        fields disagree (``size`` not divisible by ``2 ** len(blocks)``, ``blocks`` and ``hidden``
        of different lengths, ``classes`` not two distinct names, ``coeff`` or ``inverse_tolerance``
        not below 1).
    """

    step: ClassVar[str] = "counterfactual training"

    classes: tuple[str, ...] | None = setting(
        None, "The two classes to train on, comma-separated (default: the data's labelled classes, which must be two)."
    )
    size: int = setting(64, "Crops are centre-padded (never stretched) to SIZE x SIZE; a multiple of 2**scales.", minimum=1, maximum=1024)
    centre_on: str | None = setting(
        None,
        "Channel (e.g. DNA) whose Otsu foreground each crop is centred on before padding. ECINN shifts every latent by one "
        "class-mean direction, which moves a signal into or out of the nucleus only when the nuclei share a place in the frame.",
    )
    # BBBC013 test accuracy, seed 0: blocks 2,2 0.80-0.86; 3,3 0.94; 4,4 0.97
    blocks: tuple[int, ...] = setting((4, 4), "Residual blocks per scale, comma-separated.", minimum=1, maximum=64)
    hidden: tuple[int, ...] = setting((16, 32), "Hidden channels of the residual branches per scale.", minimum=1, maximum=1024)
    pad_channels: int = setting(
        0,
        "Zero channels appended to the input (Behrmann et al. use 5). With padding, f^-1 of a moved latent leaves the image space "
        "and dropping the padded part undoes some of the move, which lowers the counterfactual flip rate.",
        minimum=0,
        maximum=64,
    )
    coeff: float = setting(0.8, "Spectral bound of every convolution (< 1).", minimum=0, exclusive_minimum=True)
    n_power_iterations: int = setting(5, "Power iterations per training step for each spectral bound.", minimum=1, option="--power-iterations")
    inverse_iterations: int = setting(100, "Maximum fixed-point iterations (branch evaluations) per block when inverting.", minimum=1)
    # At 1e-3 the counterfactuals lie within 4e-5 (BBBC021) and 1.9e-4 (BBBC013) of the data range of a tightly converged
    # inverse (1/90 and 1/20 of an 8-bit grey level; same predictions) in 3-4 fixed-point iterations per block instead of
    # 4-5 at 1e-4 (BBBC021, measured alone: 23 -> 15 ms per counterfactual).
    inverse_tolerance: float = setting(
        1e-3,
        "Relative residual at which each block's inverse stops (< 1; explain --inverse-tolerance overrides it).",
        minimum=0,
        exclusive_minimum=True,
    )
    epochs: int = setting(80, "Maximum epochs (early stopping on the validation loss).", minimum=1)
    batch_size: int = setting(16, "Images per training step.", minimum=1)
    lr: float = setting(2e-3, "Adam learning rate.", minimum=0, exclusive_minimum=True)
    weight_decay: float = setting(0.0, "Adam weight decay of the i-ResNet.", minimum=0)
    patience: int = setting(20, "Epochs without a better validation loss before training stops.", minimum=1)
    max_rotation: float = setting(10.0, "Largest random rotation of the augmentation, in degrees.", minimum=0, maximum=180)
    test_fraction: float = setting(0.25, "Share of the images held out as the test set.", minimum=0, exclusive_minimum=True, maximum=0.9)
    validation_fraction: float = setting(
        0.15, "Share of the remaining images used for early stopping.", minimum=0, exclusive_minimum=True, maximum=0.9
    )
    group_by: str | None = setting(None, "Metadata column that keeps groups on one side of the split (e.g. field).")
    autoencoder: bool = setting(True, "Also train the autoencoder alternative.")
    autoencoder_epochs: int = setting(40, "Maximum epochs of the autoencoder.", minimum=1)
    latent_dim: int = setting(64, "Length of the autoencoder's latent vector.", minimum=1, maximum=65536)
    seed: int = setting(0, "Seed for the split, initialisation and augmentation.", minimum=0)

    def check(self) -> None:
        """Rules between fields (see the class's Raises section)."""
        if self.classes is not None and (len(self.classes) != 2 or len(set(self.classes)) != 2):
            self.fail("classes", "name exactly two distinct classes, such as CytoplasmicGFP,NuclearGFP")
        if len(self.blocks) != len(self.hidden):
            self.fail("hidden", f"give one entry per scale, as --blocks does ({len(self.blocks)})")
        if self.size % 2 ** len(self.blocks):
            self.fail("size", f"must be divisible by 2**{len(self.blocks)} = {2 ** len(self.blocks)} (one halving per scale of --blocks)")
        if self.coeff >= 1:
            self.fail("coeff", "must be below 1 for the residual blocks to be invertible")
        if self.inverse_tolerance >= 1:
            self.fail("inverse_tolerance", "must be below 1; 1e-3 keeps counterfactuals far below 8-bit quantisation")
        for name in ("centre_on", "group_by"):
            if getattr(self, name) is not None and not getattr(self, name).strip():
                self.fail(name, "name a channel or column, or leave the option out")


@dataclass(frozen=True)
class CounterfactualExplanationSettings(Settings):
    """What `explain_counterfactuals` does (and how many panels and sweeps the report shows).

    Raises
    ------
    PhenolensError
        On construction, naming the field and its option, when a value is out of range,
        ``inverse_tolerance`` is not below 1, or ``signal_channel`` equals ``nucleus_channel``.
    """

    step: ClassVar[str] = "counterfactual explanation"

    target: str | None = setting(None, "Class the counterfactuals should be classified as (required).")
    unknown_classes: str = setting(
        "error", "Images labelled with a class the model does not know: refuse them, or explain them as unlabelled.", choices=("error", "unlabelled")
    )
    nucleus_channel: str | None = setting(None, "DNA channel: measure the signal inside vs outside the nucleus (Otsu).")
    signal_channel: str | None = setting(None, "Channel whose nuclear contrast is measured (default: the first other channel).")
    baseline: bool = setting(True, "Time the gradient (Wachter) baseline side by side.")
    baseline_steps: int = setting(1000, "Maximum optimisation steps of the gradient baseline.", minimum=1)
    baseline_lr: float = setting(0.01, "Adam step size of the gradient baseline (standardised units).", minimum=0, exclusive_minimum=True)
    proximity: float = setting(1.0, "Weight of the mean squared change in the gradient baseline.", minimum=0)
    baseline_patience: int = setting(50, "Steps between doublings of the gradient baseline's class-loss weight.", minimum=1)
    match_confidence: bool = setting(True, "Also run the gradient baseline until it reaches ECINN's alpha_1 confidence (a second, matched timing).")
    autoencoder: bool = setting(True, "Also run the autoencoder interpolation (when trained).")
    panels: int = setting(4, "Counterfactual panels in the report.", minimum=0)
    sweeps: int = setting(3, "Images with an alpha-sweep animation (GIF).", minimum=0)
    sweep_steps: int = setting(16, "Frames of each alpha sweep.", minimum=2, maximum=1000)
    inverse_tolerance: float | None = setting(
        None, "Relative residual at which each block's inverse stops (default: the model's, 1e-3).", minimum=0, exclusive_minimum=True
    )

    def check(self) -> None:
        """Rules between fields (see the class's Raises section)."""
        if self.inverse_tolerance is not None and self.inverse_tolerance >= 1:
            self.fail("inverse_tolerance", "must lie in (0, 1); 1e-3 keeps counterfactuals far below 8-bit quantisation")
        for name in ("target", "nucleus_channel", "signal_channel"):
            if getattr(self, name) is not None and not getattr(self, name).strip():
                self.fail(name, "name a class or channel, or leave the option out")
        if self.signal_channel is not None and self.signal_channel == self.nucleus_channel:
            self.fail("signal_channel", "must differ from --nucleus-channel: the signal is measured inside and outside that channel's nucleus")
