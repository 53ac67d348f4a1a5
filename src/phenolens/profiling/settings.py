"""Settings of the profiling commands: `profile aggregate`, `profile run`, `profile evaluate`, `profile explain`.

One frozen, validated dataclass per step; the Python API (`AnomalyProfiler`, `run_profiling`,
`evaluate`, `explain_group`) and the CLI take the same objects, and the CLI options are derived from
their fields, so every default exists once. The column meanings (`ProfileColumns`) and the evaluation
options (`EvaluationFields`) are field groups shared by the steps that need them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields

from phenolens.core.errors import PhenolensError
from phenolens.core.settings import Settings, setting
from phenolens.data.query import parse_query
from phenolens.profiling.inputs import ProfileColumns
from phenolens.profiling.replicates import NULL_GROUPS_MINIMUM

CLASSIFIERS = ("lr", "mlp")  # the MoA classifiers compared: logistic regression and a multilayer perceptron
CONSENSUS = ("mean", "median", "modz")  # how replicate wells are combined into a treatment profile
MOA_PROJECTIONS = ("none", "lda")  # a second NSC/NSCB after a projection learnt from the other compounds' MoA
INNER_FOLDS = 3  # folds of the hyper-parameter search inside each outer training split
SCALE_POOLING = ("plate", "batch", "all")  # over which wells the feature spread is pooled

SPHERING = ("none", "global", "batch", "tvn")  # no sphering, one transform for all wells, one per batch, typical variation normalisation
GROUPED_SPHERING = ("batch", "tvn")  # variants that fit something per batch
SPHERING_CONTROLS = ("training", "all")  # which control wells the sphering is fitted on
SPHERING_METHODS = ("ZCA-cor", "ZCA", "PCA-cor", "PCA")  # pycytominer's Spherize methods
TVN_STEPS = (  # tvn-only options
    "sphering_plate_scaling",
    "sphering_yeo_johnson",
    "sphering_nuisance_components",
    "sphering_batch_icc_weight",
)
ADVERSARIES = ("none", "batch", "plate")  # what the adversary of `anomaly_adversarial` predicts from the latent code

REPLICATE_NORMALIZATION = ("whole_plate", "none")
FEATURE_SETS = ("intersection", "union")
MAP_NEGATIVES = ("all_wells", "plate_controls")


@dataclass(frozen=True)
class EvaluationFields:
    """How representations are evaluated: replicate reproducibility, mAP, MoA prediction, hits (defaults follow the method)."""

    null_repeats: int = setting(5, "Null groups drawn per treatment for percent replicating, at least.", minimum=1)
    null_minimum: int = setting(
        NULL_GROUPS_MINIMUM,
        "Null groups drawn in all for percent replicating, at least (more per treatment when treatments are few): its seed noise shrinks with this.",
        minimum=0,
    )
    replicate_percentile: float = setting(90.0, "Percentile of the null a treatment's replicate correlation must exceed.", minimum=0, maximum=100)
    replicate_normalization: str = setting("whole_plate", "Normalisation before replicate metrics.", choices=REPLICATE_NORMALIZATION)
    map_null_size: int = setting(10000, "Null size of copairs' mAP p-values.", minimum=1)
    moa_repeats: int = setting(10, "Repeats of the nested-CV MoA classifiers.", minimum=1)
    moa_folds: int = setting(5, "Folds of the nested-CV MoA classifiers.", minimum=2)
    min_treatments_per_moa: int = setting(5, "MoAs with fewer reproducible treatments are left out of the classifiers.", minimum=2)
    classifiers: tuple[str, ...] = setting(
        CLASSIFIERS, "Comma-separated MoA classifiers (lr: logistic regression, mlp: multilayer perceptron).", choices=CLASSIFIERS
    )
    consensus: str = setting(
        "mean",
        "How a treatment's replicate wells are combined into its profile for NSC/NSCB and the MoA classifiers: mean, median, "
        "or modz (LINCS moderated z-score: weighted by the replicates' Spearman correlation, as pycytominer's consensus).",
        choices=CONSENSUS,
    )
    moa_projection: str = setting(
        "none",
        "Also report NSC/NSCB (field definition, *_lda metrics) after a shrinkage LDA projection learnt from the MoA annotations of "
        "the OTHER compounds: refitted for every held-out compound on the other compounds' treated wells (leave-one-compound-out).",
        choices=MOA_PROJECTIONS,
    )
    fdr: float = setting(0.05, "False discovery rate of hit calls.", minimum=0, maximum=1, exclusive_minimum=True)
    seed: int = setting(0, "Seed of every random step (same seed, same metrics).", minimum=0)
    jobs: int = setting(2, "Processes for the MoA classifiers (results do not depend on it).", minimum=1)
    map_negatives: str = setting(
        "all_wells",
        "mAP negatives: every other treated well (all_wells; cost grows with the square of the wells) or the query's own plate's "
        "controls (plate_controls, as the JUMP evaluations; for whole studies).",
        choices=MAP_NEGATIVES,
    )
    feature_set: str = setting(
        "intersection",
        "Plates with different features: keep those every plate has, or all, imputing missing values from each plate's controls (flagged).",
        choices=FEATURE_SETS,
        option="--features",
    )


def _check_shared(settings: Settings) -> None:
    """Cross-field rules of the shared field groups: queries parse, column names are not blank, the
    MoA classes kept have enough treatments for the cross-validation folds."""
    for name, option in (("controls", "--controls"), ("positive_controls", "--positive-controls")):
        value = getattr(settings, name)
        if value is not None:
            try:
                parse_query(value, option)
            except PhenolensError as error:
                settings.fail(name, error.problem)
    for field in fields(ProfileColumns):
        value = getattr(settings, field.name)
        if isinstance(value, str) and not value.strip():
            settings.fail(field.name, "must not be blank; leave the option out instead")
    training_share = settings.min_treatments_per_moa * (settings.moa_folds - 1) // settings.moa_folds
    if settings.min_treatments_per_moa < settings.moa_folds or training_share < INNER_FOLDS:
        settings.fail(
            "min_treatments_per_moa",
            f"too few for {settings.moa_folds} outer and {INNER_FOLDS} inner folds; every fold needs each MoA (5 with 5 folds works)",
        )


@dataclass(frozen=True)
class ProfileEvaluationSettings(ProfileColumns, EvaluationFields, Settings):
    """Settings of `profile evaluate`: what the columns mean and how representations are evaluated.

    Every field is validated on construction (a bad value raises `PhenolensError` naming the field and its option).
    """

    step = "profile evaluate"

    def check(self) -> None:
        """Queries parse (nothing is evaluated); column names are not blank."""
        _check_shared(self)


@dataclass(frozen=True)
class ProfilingSettings(ProfileColumns, EvaluationFields, Settings):
    """Settings of `profile run` and of `AnomalyProfiler`: columns, control split, feature selection,
    autoencoder, evaluation, explanations and the control-count curve.

    Every field is validated on construction (a bad value raises `PhenolensError` naming the field and its option).
    """

    step = "profile run"

    control_split: tuple[float, ...] = setting((0.4, 0.1, 0.5), "Train, validation, test fractions of every plate's controls.", minimum=0)
    scale_pooling: str = setting("all", "Pool the per-feature spread over: plate, batch or all plates.", choices=SCALE_POOLING)
    corr_threshold: float = setting(0.9, "Drop one of each pair of features correlated above this (pycytominer).", minimum=0, maximum=1)
    batch_icc_max: float = setting(
        1.0,
        "Drop features whose raw control wells' intraclass correlation between batches exceeds this (batch-dominated; 1 keeps all).",
        minimum=0,
        maximum=1,
        exclusive_minimum=True,
    )
    freq_cut: float = setting(0.05, "pycytominer frequency_threshold freq_cut.", minimum=0, maximum=1)
    unique_cut: float = setting(0.01, "pycytominer frequency_threshold unique_cut.", minimum=0, maximum=1)
    hidden: tuple[int, ...] = setting((256, 128, 64), "Encoder layer widths.", minimum=1, maximum=65536)
    latent: int = setting(16, "Autoencoder code size.", minimum=1, maximum=65536)
    dropout: float = setting(0.1, "Encoder dropout.", minimum=0, maximum=0.95)
    learning_rate: float = setting(1e-3, "Autoencoder learning rate.", minimum=0, exclusive_minimum=True)
    output_l2: float = setting(1e-4, "L2 penalty on the reconstruction.", minimum=0)
    batch_size: int = setting(32, "Autoencoder batch size.", minimum=1)
    max_epochs: int = setting(300, "Autoencoder epoch limit (early stopping on validation controls).", minimum=1)
    patience: int = setting(20, "Epochs without validation improvement before stopping.", minimum=1)
    search_trials: int = setting(0, "Random hyper-parameter search trials (0 = defaults, no search).", minimum=0, option="--search")
    max_train_controls: int | None = setting(None, "Train the autoencoder on at most this many controls (learning curves).", minimum=2, cli=False)
    curve: bool = setting(True, "Also train on fewer training controls (learning curve).")
    curve_fractions: tuple[float, ...] = setting((0.25, 0.5), "Fractions of the training controls of the curve.", minimum=0, maximum=1, cli=False)
    sphering: str = setting(
        "none",
        "Add <representation>_sphered: pycytominer Spherize fitted on control wells, globally or per batch, or tvn: global sphering, "
        "then each batch's control covariance aligned to the global one (CORAL, shrunk by --sphering-shrinkage).",
        choices=SPHERING,
    )
    sphering_controls: str = setting(
        "training",
        "Control wells the sphering is fitted on: the training split or all (the held-out controls, the null of hits and "
        "Z-factors, are then sphered out of sample by spherings fitted without them, in 5 folds).",
        choices=SPHERING_CONTROLS,
    )
    sphering_method: str = setting("ZCA-cor", "Sphering method (pycytominer Spherize).", choices=SPHERING_METHODS)
    sphering_epsilon: float = setting(10.0, "pycytominer Spherize epsilon: added to the control matrix's singular values (regularises).", minimum=0)
    sphering_shrinkage: float = setting(
        0.5, "tvn: weight of the global control covariance in each batch's (1: no per-batch alignment).", minimum=0, maximum=1, exclusive_minimum=True
    )
    sphering_plate_centring: bool = setting(True, "tvn: first centre each plate on the median of its sphering controls (robust, per plate).")
    sphering_plate_scaling: bool = setting(
        False, "tvn: also divide each plate by its sphering controls' robust spread (1.4826 x MAD; pycytominer mad_robustize against controls)."
    )
    sphering_yeo_johnson: bool = setting(False, "tvn: first variance-stabilise every feature (Yeo-Johnson power transform fitted on the controls).")
    sphering_nuisance_components: int = setting(
        0, "tvn: project out this many leading principal directions of the normalised controls (nuisance variation).", minimum=0
    )
    sphering_batch_icc_weight: float = setting(
        0.0,
        "tvn: finally multiply every feature by (1 - ICC) to this power, ICC being the intraclass correlation between batches of "
        "its raw control wells (soft down-weighting of batch-dominated features; 0: off).",
        minimum=0,
    )
    adversary: str = setting(
        "none",
        "Add anomaly_adversarial: an autoencoder whose latent code learns to hide the batch or plate (gradient reversal).",
        choices=ADVERSARIES,
    )
    adversary_lambda: float = setting(1.0, "Final gradient-reversal strength of the adversary (Ganin-Lempitsky schedule from 0).", minimum=0)
    explain_features: int = setting(3, "Worst-reconstructed features explained with SHAP (0 = none).", minimum=0)
    explain_nsamples: int = setting(500, "Kernel SHAP coalition samples per well.", minimum=10)

    def check(self) -> None:
        """Queries parse; the control split has three fractions that sum to 1."""
        _check_shared(self)
        if len(self.control_split) != 3 or not math.isclose(sum(self.control_split), 1.0, abs_tol=1e-9):
            self.fail("control_split", "give three fractions (train, validation, test) that sum to 1")
        if self.control_split[0] == 0 or self.control_split[1] == 0:
            self.fail("control_split", "the train and validation fractions must be > 0")
        if self.sphering != "tvn":
            for name in TVN_STEPS:
                if getattr(self, name) != getattr(type(self), name):
                    self.fail(name, f"applies to --sphering tvn only (got --sphering {self.sphering})")

    def check_batch_column(self) -> None:
        """A sphering, adversary or spread pooling that works per batch has a batch column to read.

        Checked when the profiler is fitted, not on construction: ``--dataset`` fills the batch column in
        after the command-line options are read.

        Raises
        ------
        PhenolensError
            For ``--sphering batch|tvn``, ``--adversary batch``, ``--batch-icc-max`` < 1 or ``--scale-pooling batch``
            without a batch column.
        """
        for name, per_batch in (("sphering", GROUPED_SPHERING), ("adversary", ("batch",))):
            if getattr(self, name) in per_batch and not self.batch:
                self.fail(name, f"{getattr(self, name)!r} needs a batch column: give --batch-column")
        if self.batch_icc_max < 1 and not self.batch:
            self.fail("batch_icc_max", "needs a batch column: give --batch-column")
        if self.scale_pooling == "batch" and not self.batch:  # it pooled over all plates while run.json said 'batch'
            self.fail("scale_pooling", "'batch' needs a batch column: give --batch-column (or pool over 'all' plates)")

    def unsphered(self) -> ProfilingSettings:
        """The same settings without sphering (tvn's optional steps back at their defaults)."""
        return self.replace(sphering="none", **{name: getattr(type(self), name) for name in TVN_STEPS})

    def evaluation(self) -> ProfileEvaluationSettings:
        """The evaluation part (columns + evaluation fields), as `profile evaluate` takes it."""
        names = {f.name for f in fields(ProfileEvaluationSettings)}
        return ProfileEvaluationSettings(**{name: value for name, value in self.to_dict().items() if name in names})


@dataclass(frozen=True)
class ProfileExplanationSettings(Settings):
    """Settings of `profile explain`: which wells, how many features, Kernel SHAP's budget.

    Every field is validated on construction (a bad value raises `PhenolensError` naming the field and its option).
    """

    step = "profile explain"

    group: str | None = setting(None, "Row query selecting the wells to explain, e.g. \"Metadata_MoA == 'Eg5 inhibitors'\".")
    features: int = setting(3, "How many worst-reconstructed features to explain.", minimum=1)
    nsamples: int = setting(1000, "Kernel SHAP coalition samples per well.", minimum=10)
    background_size: int = setting(20, "Held-out control wells used as the SHAP background.", minimum=2)
    seed: int = setting(0, "Seed of Kernel SHAP's sampling and the background draw.", minimum=0)

    def check(self) -> None:
        """The group query parses (nothing is evaluated)."""
        if self.group is not None:
            try:
                parse_query(self.group, "--group")
            except PhenolensError as error:
                self.fail("group", error.problem)


AGGREGATION_OPERATIONS = ("median", "mean")  # pycytominer.aggregate's operations
_SQL_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


@dataclass(frozen=True)
class ProfileAggregationSettings(Settings):
    """Settings of `profile aggregate`: single cells (CellProfiler output) to one profile per plate x well.

    Every field is validated on construction (a bad value raises `PhenolensError` naming the field and its option).
    """

    step = "profile aggregate"

    operation: str = setting("median", "How the cells of a well are combined (pycytominer aggregate).", choices=AGGREGATION_OPERATIONS)
    compartments: tuple[str, ...] = setting(
        ("cells", "cytoplasm", "nuclei"),
        "Compartments: SQLite tables, or feature prefixes of a joined table; the first one's objects are counted per well.",
    )
    image_table: str = setting("Image", "The SQLite table of per-image measurements (plate, well, site).")
    plate_column: str | None = setting(
        None, "Plate column of the Image table or single-cell table (default: Metadata_Plate, else Image_Metadata_Plate)."
    )
    well_column: str | None = setting(None, "Well column of the Image table or single-cell table (default: Metadata_Well, else Image_Metadata_Well).")
    features: tuple[str, ...] = setting(
        (), "Aggregate only these feature columns (default: every numeric column with a compartment prefix).", option="--feature-columns"
    )

    def check(self) -> None:
        """Table and compartment names are plain identifiers; no compartment is named twice."""
        for name in (*self.compartments, self.image_table):
            if not _SQL_IDENTIFIER.fullmatch(name):
                self.fail("compartments" if name in self.compartments else "image_table", f"{name!r} is not a table name (letters, digits, _)")
        if not self.compartments:
            self.fail("compartments", "name at least one compartment, e.g. cells")
        if len({c.lower() for c in self.compartments}) != len(self.compartments):
            self.fail("compartments", "names a compartment twice")
        for name in ("plate_column", "well_column"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                self.fail(name, "must not be blank; leave the option out instead")
