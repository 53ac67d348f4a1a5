"""Settings of the SIGN commands: one frozen, validated object per step, shared by the API and the CLI.

`SignFitSettings` (`phenolens sign fit`), `SignGraphSettings` (`sign graph`), `MlpTrainingSettings`
(`sign train-mlp`), `SignHmmSettings` (`sign hmm`) and `WatermarkSettings`
(`sign watermark-experiment`). The command-line options are derived from these fields, so every
default is written here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from phenolens.core.settings import Settings, setting

DICTIONARY_LOSSES = ("discriminative", "generative")
RECEPTIVE_METHODS = ("trace", "probe")


@dataclass(frozen=True)
class SignFitSettings(Settings):
    """How `fit_sign` fits one visual-word dictionary per layer and counts its statistics.

    Parameters
    ----------
    layers : tuple of str
        Module names to model; empty: the output of every backbone stage.
    words : tuple of int
        Words K per layer: one number for every layer, or one per layer (>= 2 each).
    loss : str
        ``discriminative`` (bag-of-words cross-entropy) or ``generative`` (negative log-likelihood).
    epochs : int
        Epochs over the fitting images (discriminative loss).
    updates : int
        At most this many EM passes over the sampled activation columns (generative loss; scikit-learn's max_iter).
    batch_size : int
        Images per step of the discriminative loss.
    lr : float
        Adam learning rate of the discriminative dictionary training.
    temperature : float, optional
        Softening of the posteriors in the discriminative histograms (default: sqrt of the layer's channels).
    generative_weight : float
        Weight of the likelihood term that keeps discriminative words densities.
    max_columns : int
        At most this many activation columns per layer initialise and (generative) fit the words.
    receptive_method : str
        ``trace`` (exact, from the traced graph) or ``probe`` (gradient probing, for untraceable networks).
    nodes_per_layer : int
        Words selected per layer in the inference graphs.
    validation_fraction : float
        Share of the labelled images kept for statistics, purity and BoW testing (0 < f < 1).
    seed : int
        Seed of the split, the initialisation and the batching.
    """

    step: ClassVar[str] = "sign fit"

    layers: tuple[str, ...] = setting((), "Comma-separated module names to model (default: the output of every backbone stage).")
    words: tuple[int, ...] = setting((64,), "Words K per layer: one number, or one per layer.", minimum=2)
    loss: str = setting("discriminative", "Dictionary loss: BoW cross-entropy or negative log-likelihood.", choices=DICTIONARY_LOSSES)
    epochs: int = setting(8, "Epochs of discriminative dictionary training.", minimum=1)
    updates: int = setting(100, "At most this many EM passes over the activation columns (generative loss).", minimum=1)
    batch_size: int = setting(64, "Images per step of discriminative training.", minimum=1)
    lr: float = setting(0.02, "Adam learning rate of discriminative dictionary training.", minimum=0.0, exclusive_minimum=True)
    temperature: float | None = setting(None, "Posterior softening of the discriminative histograms (default: sqrt(channels)).", minimum=0.0,
                                        exclusive_minimum=True)  # fmt: skip
    generative_weight: float = setting(0.1, "Weight of the likelihood term in the discriminative loss.", minimum=0.0)
    max_columns: int = setting(200_000, "Activation columns sampled per layer to initialise (and generatively fit) the words.", minimum=1)
    receptive_method: str = setting("trace", "Receptive fields from the traced graph, or by gradient probing.", choices=RECEPTIVE_METHODS)
    nodes_per_layer: int = setting(3, "Words selected per layer in graphs.", minimum=1, option="--nodes")
    validation_fraction: float = setting(0.3, "Share of the labelled images kept for statistics, purity and BoW testing.", minimum=0.0,
                                         exclusive_minimum=True, maximum=0.9)  # fmt: skip
    seed: int = setting(0, "Seed of the split, initialisation and batching.", minimum=0)

    def check(self) -> None:
        """Words given per layer must match the layers given."""
        if self.layers and len(self.words) > 1 and len(self.words) != len(self.layers):
            self.fail("words", f"{len(self.words)} word counts for {len(self.layers)} layers ({', '.join(self.layers)}); give one K per layer")


@dataclass(frozen=True)
class SignGraphSettings(Settings):
    """Which graphs `phenolens sign graph` draws from a fitted SIGN run.

    Parameters
    ----------
    class_name : str
        A class name for its class graph; ``all`` draws every predicted class and one image graph per class.
        Empty when an image graph is asked for instead.
    nodes_per_layer : int
        Words per layer; 0 keeps the fit's setting.
    """

    step: ClassVar[str] = "sign graph"

    class_name: str = setting("", "Class name for a class graph; 'all' draws every class and one image graph per class.", option="--class")
    nodes_per_layer: int = setting(0, "Words per layer (0: the fit's setting).", minimum=0, option="--nodes")


@dataclass(frozen=True)
class MlpTrainingSettings(Settings):
    """How `train_mlp` trains a fully connected ReLU network for the SIGN HMM.

    Parameters
    ----------
    hidden : tuple of int
        Units per hidden layer, input to output.
    images : int
        Train on this many labelled images (a seeded sample); 0: all.
    epochs : int
        Training epochs.
    lr : float
        Adam learning rate.
    batch_size : int
        Images per step.
    random_labels : bool
        Replace every label by a seeded uniform draw (the memorisation experiment).
    seed : int
        Seed of the sample, the labels, the initialisation and the batching.
    """

    step: ClassVar[str] = "sign train-mlp"

    hidden: tuple[int, ...] = setting((256, 256, 256, 256), "Units per hidden layer, comma-separated.", minimum=1)
    images: int = setting(0, "Train on this many labelled images (seeded sample; 0: all).", minimum=0)
    epochs: int = setting(50, "Training epochs.", minimum=1)
    lr: float = setting(1e-3, "Adam learning rate.", minimum=0.0, exclusive_minimum=True)
    batch_size: int = setting(128, "Images per training step.", minimum=1)
    random_labels: bool = setting(False, "Replace every label by a random one (the memorisation experiment).")
    seed: int = setting(0, "Seed of the sample, the labels, initialisation and batching.", minimum=0)


@dataclass(frozen=True)
class SignHmmSettings(Settings):
    """How `model_paths` models an MLP's hidden layers with the rectified-Gaussian HMM.

    Parameters
    ----------
    states : tuple of int
        HMM states per hidden layer: one number for every layer, or one per layer.
    images : int
        Model this many labelled images (a seeded sample); 0: all. Not with `training_images`.
    training_images : bool
        Use exactly the images (and labels, e.g. random ones) the MLP was trained on.
    epochs : int
        Online-EM epochs.
    batch_size : int
        Examples per online-EM step.
    example : int
        The example whose Viterbi path is drawn as decision junctions.
    seed : int
        Seed of the sample and the initialisation.
    """

    step: ClassVar[str] = "sign hmm"

    states: tuple[int, ...] = setting((10,), "HMM states per hidden layer: one number, or one per layer.", minimum=1)
    images: int = setting(0, "Model this many labelled images (seeded sample; 0: all).", minimum=0)
    training_images: bool = setting(False, "Use exactly the images (and labels) the MLP was trained on, e.g. its random labels.")
    epochs: int = setting(10, "Online-EM epochs.", minimum=1)
    batch_size: int = setting(256, "Examples per online-EM step.", minimum=1)
    example: int = setting(0, "The example whose Viterbi path is drawn as decision junctions.", minimum=0)
    seed: int = setting(0, "Seed of the sample and the initialisation.", minimum=0)

    def check(self) -> None:
        """A sample size makes no sense for the MLP's own training images."""
        if self.training_images and self.images:
            self.fail("images", "--training-images models exactly the MLP's training images; leave --images at 0")


@dataclass(frozen=True)
class WatermarkSettings(Settings):
    """The biased-data experiment: a letter stamped into two Fashion-MNIST classes, found by their class graphs.

    Parameters
    ----------
    seeds : tuple of int
        Each seed stamps, trains and checks anew.
    stamped : tuple of str
        The Fashion-MNIST classes to stamp.
    letter : str
        The one character stamped (opacity 0.5, random position).
    glyph_size : int
        Side of the stamped letter in pixels.
    train_images : int
        Fashion-MNIST training images for the CNN.
    test_images : int
        Test images: half fit the dictionaries, half give the statistics.
    cnn_epochs : int
        CNN training epochs.
    words : int
        Words per modelled layer.
    epochs : int
        Dictionary training epochs.
    nodes_per_layer : int
        Words selected per layer.
    """

    step: ClassVar[str] = "sign watermark-experiment"

    seeds: tuple[int, ...] = setting((0, 1), "Seeds, comma-separated: each stamps, trains and checks anew.", minimum=0)
    stamped: tuple[str, ...] = setting(("Pullover", "Shirt"), "The Fashion-MNIST classes to stamp.")
    letter: str = setting("A", "The letter stamped (alpha 0.5, random position).")
    glyph_size: int = setting(10, "Side of the stamped letter in pixels.", minimum=3, maximum=28)
    train_images: int = setting(24000, "Fashion-MNIST training images for the CNN (fewer: it leans less on the letter).", minimum=10, maximum=60000)
    test_images: int = setting(2000, "Test images: half fit the dictionaries, half give the statistics.", minimum=10, maximum=10000)
    cnn_epochs: int = setting(12, "CNN training epochs.", minimum=1)
    words: int = setting(64, "Words per modelled layer.", minimum=2)
    epochs: int = setting(4, "Dictionary training epochs.", minimum=1)
    nodes_per_layer: int = setting(5, "Words selected per layer.", minimum=1, option="--nodes")

    def check(self) -> None:
        """At least one stamped class, named once each, and a one-character letter."""
        if not self.stamped:
            self.fail("stamped", "name at least one class to stamp")
        if len(set(self.stamped)) != len(self.stamped):
            self.fail("stamped", "each class once")
        if len(self.letter) != 1 or self.letter.isspace():
            self.fail("letter", "give one visible character")
        if not self.seeds:
            self.fail("seeds", "give at least one seed")
