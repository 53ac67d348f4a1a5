"""`ImageTrainingSettings`: every choice of `fit_classifier` and `phenolens images train`, with one default each;
`ImagePredictionSettings`: those of `predict` and `phenolens images predict`.

The same object configures the Python API (`fit_classifier`, `ImageClassifierEstimator`,
`train_and_evaluate`) and the command line (its options are derived from these fields), so the words
``width 0.25`` mean the same model everywhere. A bad value is refused on construction, naming the
field and its option, before any image is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from phenolens.core.settings import Settings, setting

# Written out rather than read from the registries of phenolens.nn, so that the command line (built
# from these classes) starts without importing torch; tests/test_images_settings.py checks that they
# equal the registered architectures and losses.
IMAGE_ARCHITECTURES = ("densenet", "resnet18", "vgg")
LOSSES = ("softmax", "arcface", "composite")
SCHEDULES = ("plateau", "cosine")
ADVERSARY_LOSSES = ("reversal", "confusion")
INTENSITY_NORMALIZATIONS = ("none", "field", "field-quantile", "crop")
ADVERSARY_UNLABELLED = ("none", "evaluation")
PREDICTION_BATCH = 256  # images per forward pass when applying a model: memory stays bounded by one batch


@dataclass(frozen=True)
class ImageTrainingSettings(Settings):
    """How an image classifier is trained and evaluated.

    The defaults are those of the documented `phenolens train` runs: a ResNet-18 layout at quarter
    width with a stride-2 stem (a quarter of the cost of a full-resolution stem). `test_fraction`
    and `cv` choose the held-out evaluation of `train_and_evaluate`; `fit_classifier` itself trains
    on all the images it is given (less its `validation_fraction`).

    Raises
    ------
    PhenolensError
        On construction, for any value outside its allowed range, naming the field and its option.
    """

    step: ClassVar[str] = "image classifier training"

    arch: str = setting("resnet18", "Backbone architecture.", choices=IMAGE_ARCHITECTURES)
    width: float = setting(0.25, "Width multiplier of every channel count.", minimum=0.0, exclusive_minimum=True, maximum=4.0)
    stem_stride: int = setting(2, "Stride of the first convolution (1 keeps full resolution; 2 is 4x cheaper).", choices=(1, 2))
    blocks: tuple[int, ...] | None = setting(
        None,
        "Blocks per stage, comma-separated (default: 2,2,2,2 for resnet18; 1,2,2 for vgg (convs after the stem); 6,12,24,16 for densenet).",
        minimum=1,
    )
    loss: str = setting("composite", "Loss: softmax, arcface (s=30, m=0.5) or composite (0.2 ArcFace + 0.8 softmax).", choices=LOSSES)
    size: int | None = setting(None, "Crop size after centre padding (default: the largest image; larger crops are centre-cropped).", minimum=1)
    epochs: int = setting(30, "Maximum epochs (early stopping on a validation split ends sooner).", minimum=1)
    batch_size: int = setting(32, "Labelled images per batch (as many pseudo-labelled ones join it).", minimum=1)
    lr: float = setting(2e-3, "Adam learning rate.", minimum=0.0, exclusive_minimum=True)
    weight_decay: float = setting(1e-4, "Adam weight decay.", minimum=0.0)
    schedule: str = setting("plateau", "Learning rate: plateau (halve when validation stalls) or cosine (to 0 over --epochs).", choices=SCHEDULES)
    patience: int = setting(10, "Epochs without a better validation loss before early stopping (half as many halve the rate).", minimum=1)
    augment: bool = setting(True, "Flips, 90-degree turns, small rotations and CutMix.")
    max_rotation: float = setting(10.0, "Largest rotation (degrees) of the augmentation.", minimum=0.0, maximum=180.0)
    cutmix_probability: float = setting(
        0.5, "Share of each batch given CutMix (with --augment); 0 turns it off.", minimum=0.0, maximum=1.0, option="--cutmix"
    )
    dimming: float = setting(
        0.0,
        "With --augment, scale each crop's brightness by one gain from U(1 - DIMMING, 1), so that the dimmed copies integrated gradients "
        "passes through on its way from a black baseline are images the model has seen; 0 turns it off; below 1.",
        minimum=0.0,
    )
    channel_gain: float = setting(
        0.0,
        "With --augment, scale each stain of each crop by its own gain from U(1 - GAIN, 1 + GAIN), so that how bright a stain came out "
        "in a field or well does not mark its crops; 0 turns it off; below 1.",
        minimum=0.0,
    )
    blur_augmentation: float = setting(
        0.0,
        "With --augment, blur each crop by a Gaussian whose standard deviation (pixels) is drawn from U(0, SIGMA), so that how sharp "
        "a field came out (focus, position under the objective) does not mark its crops; 0 turns it off.",
        minimum=0.0,
        maximum=10.0,
    )
    intensity_normalization: str = setting(
        "none",
        "Correct each stain of each image before the per-channel standardisation: field divides by a robust brightness (the median "
        "over the images of its field of view, --intensity-column, of their mean intensity: illumination and staining correction per "
        "field), field-quantile maps the field's intensity distribution (the medians over its images of their 1st-99th percentiles) "
        "piecewise-linearly onto that of the training fields (background, gain and contrast per field), crop divides by the image's own "
        "mean intensity; stored with the model, so predict and explain apply it too.",
        choices=INTENSITY_NORMALIZATIONS,
    )
    intensity_column: str = setting(
        "field", "Metadata column naming each image's field of view, for --intensity-normalization field or field-quantile."
    )
    pseudo_labels: bool = setting(True, "Use the unlabelled images as a pseudo-labelled pool.")
    pseudo_start: int | None = setting(None, "Epoch at which pseudo-labels start to count (default: epochs // 4).", minimum=0)
    pseudo_full: int | None = setting(None, "Epoch at which pseudo-labels reach their full weight (default: epochs // 2).", minimum=0)
    pseudo_weight: float = setting(0.5, "Full loss weight of the pseudo-labelled images.", minimum=0.0)
    balanced: bool = setting(False, "Weight the loss by inverse class frequency (for unbalanced classes).")
    covariate: str | None = setting(None, "Metadata column one-hot encoded and concatenated to the pooled features.")
    group_by: str | None = setting(None, "Metadata column (well, site, field) whose groups never straddle a split.")
    adversary_column: str | None = setting(
        None,
        "Metadata column (well, plate, batch) that an adversary predicts from the embedding through a gradient reversal layer "
        "(Ganin & Lempitsky 2015), so that the network learns to hide it.",
    )
    adversary_weight: float = setting(3.0, "Weight of the adversary's loss (with --adversary-column).", minimum=0.0, exclusive_minimum=True)
    adversary_lambda: float = setting(
        1.0, "Final strength of the gradient reversal; it ramps up as 2 / (1 + exp(-10 p)) - 1 over training progress p.", minimum=0.0
    )
    adversary_loss: str = setting(
        "confusion",
        "The network's adversarial loss: reversal (the adversary's cross-entropy through the gradient reversal layer, Ganin & Lempitsky 2015) "
        "or confusion (cross-entropy of the adversary's prediction to the uniform distribution over the domains of the image's class, "
        "Tzeng et al. 2015).",
        choices=ADVERSARY_LOSSES,
    )
    adversary_steps: int = setting(5, "Adversary updates (on the batch's detached embeddings) per training step.", minimum=1)
    adversary_lr: float | None = setting(None, "The adversary's Adam learning rate (default: --lr).", minimum=0.0, exclusive_minimum=True)
    adversary_depth: int = setting(1, "Hidden layers of the adversary (64 units each; 0: a linear adversary).", minimum=0)
    adversary_reset: int = setting(5, "Draw a fresh adversary every this many epochs (0: never).", minimum=0)
    adversary_refit: bool = setting(
        False,
        "After every epoch, fit a fresh adversary to convergence on the embeddings of all the unaugmented training images, "
        "so that each epoch's network faces the best adversary its embedding allows (--adversary-reset is then moot).",
    )
    adversary_by_class: bool = setting(
        True,
        "Tell the adversary each image's class, so that it removes only the domain information the class does not explain "
        "(off: Ganin & Lempitsky's adversary, which also removes class information confounded with the domain).",
    )
    adversary_unlabelled: str = setting(
        "none",
        "evaluation: the adversary (never the classifier) also trains on the crops the network does not train on (held-out and "
        "early-stopping fields), their domain read from metadata and their class never used (the adversary is told the network's "
        "prediction): Ganin & Lempitsky's transductive setting, reported as such; none: training crops only.",
        choices=ADVERSARY_UNLABELLED,
    )
    erase_column: str | None = setting(
        None,
        "Metadata column (well, plate) erased from the embedding after training, in closed form: LEACE (Belrose et al. 2023) fitted "
        "on the training images to the column's contrasts within each class (so the class is kept), inserted as a fixed affine layer "
        "before the head, which is then refitted; stored with the model, so predict and explain apply it too.",
    )
    style_mixing: float = setting(
        0.0,
        "MixStyle (Zhou et al. 2021): in training only, with this probability per batch, mix each image's per-channel feature "
        "statistics after every stage but the first and the last (after stages 1-3 of a ResNet-18) with those of another image of "
        "the batch (weights from Beta(0.1, 0.1)), so that the network cannot rely on the look of its training fields or plates; "
        "the paper's value is 0.5; 0 turns it off; nothing of it is stored with the model.",
        minimum=0.0,
        maximum=1.0,
    )
    probe_column: str | None = setting(
        None,
        "Metadata column (well, plate) read from the trained network's embedding by a linear probe, as --adversary-column's "
        "report does (metrics.json 'probe'): how much of it a classifier could learn.",
    )
    adversary_baseline: bool = setting(
        True, "With --adversary-column, also train the same network without the adversary, to compare the two (twice the training time)."
    )
    validation_fraction: float = setting(0.15, "Share of the training images held out for early stopping; 0 trains on all.", minimum=0.0)
    test_fraction: float = setting(0.2, "Held-out share of the labelled images (without --cv).", minimum=0.0, exclusive_minimum=True)
    cv: int = setting(0, "k-fold cross-validation (k >= 2; 0 holds out --test-fraction); fold models are kept in folds/.", minimum=0, option="--cv")
    members: int = setting(
        1,
        "Train a deep ensemble of this many networks (member m from seed SEED + m, same split) and predict with their mean logit; "
        "explanations average the members'. Training takes MEMBERS times as long.",
        minimum=1,
    )
    seed: int = setting(0, "Seed of splits, initialisation, augmentation and batching.", minimum=0)

    def check(self) -> None:
        """Rules that bounds alone cannot say: half-open intervals, the number of folds, options that do not combine."""
        if self.channel_gain >= 1.0:
            self.fail("channel_gain", "must lie in [0, 1); 0 turns it off")
        if self.dimming >= 1.0:
            self.fail("dimming", "must lie in [0, 1); 0 turns it off")
        if self.validation_fraction >= 1.0:
            self.fail("validation_fraction", "must lie in [0, 1); 0 trains on all the images")
        if self.test_fraction >= 1.0:
            self.fail("test_fraction", "must lie in (0, 1)")
        if self.blocks is not None and not 1 <= len(self.blocks) <= 4:
            self.fail("blocks", "give 1 to 4 stages of at least one block each, such as 2,2,2,2")
        if self.cv == 1:
            self.fail("cv", "cross-validation needs at least 2 folds; 0 holds out --test-fraction instead")
        if self.erase_column is not None and self.adversary_column is not None:
            self.fail("erase_column", "does not combine with --adversary-column; each is compared with the same network without it")
        if self.erase_column is not None and self.members > 1:
            self.fail("erase_column", "is fitted for a single network; use --members 1")
        if self.adversary_unlabelled != "none" and self.adversary_refit:
            self.fail("adversary_unlabelled", "does not combine with --adversary-refit, whose refits read the training images only")

    def pseudo_schedule(self) -> tuple[int, int]:
        """(start, full) epochs of the pseudo-label weight ramp, defaults filled in.

        Returns
        -------
        tuple of int
            The epoch the weight starts rising and the epoch it reaches `pseudo_weight`.
        """
        start = self.epochs // 4 if self.pseudo_start is None else self.pseudo_start
        full = self.epochs // 2 if self.pseudo_full is None else self.pseudo_full
        return start, full


@dataclass(frozen=True)
class ImagePredictionSettings(Settings):
    """How a trained image classifier is applied to new images.

    Raises
    ------
    PhenolensError
        On construction, for a batch size below 1, an FDR outside (0, 1], or controls without a grouping column.
    """

    step: ClassVar[str] = "image prediction"

    batch_size: int = setting(PREDICTION_BATCH, "Images per forward pass (memory grows with it, not with the number of images).", minimum=1)
    embeddings: bool = setting(False, "Also write the pooled features of every image (embeddings.parquet).")
    group_by: str | None = setting(None, "Metadata column (well, plate, ...): adds the fraction of each predicted class per group (groups.parquet).")
    controls: str | None = setting(
        None,
        "Which images are negative controls, a query on their metadata such as \"treatment == 'DMSO'\" (with --group-by): adds each "
        "class's Z-factor and the groups whose class fraction differs from the control groups' (z-score, Benjamini-Hochberg).",
    )
    fdr: float = setting(0.05, "False discovery rate of the hits against --controls.", minimum=0.0, exclusive_minimum=True, maximum=1.0)

    def check(self) -> None:
        """Controls are compared group by group, so they need a grouping column."""
        if self.controls is not None and self.group_by is None:
            self.fail("controls", "needs --group-by (the controls are compared group by group, e.g. --group-by well)")
