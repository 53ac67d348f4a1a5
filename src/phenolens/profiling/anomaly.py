"""AnomalyProfiler: the anomaly-based representation of wells, learned from negative controls only.

Per plate, control wells are split at random into train / validation / test. Features are
standardised with the training controls and selected on them (pycytominer); an autoencoder learns
the feature dependencies of the training controls (early stopping on the validation controls);
every well is then represented by its signed per-feature reconstruction error, z-scored against
the test controls' errors. Optionally a second autoencoder, whose latent code is trained to hide
the batch or plate from an adversary, gives `anomaly_adversarial`, and every representation gets a
sphered copy fitted on the training controls. Treated wells are never used to fit anything.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator

from phenolens.core.errors import PhenolensError
from phenolens.core.estimators import check_is_fitted
from phenolens.core.seeding import numpy_rng, seed_everything
from phenolens.nn.profile_autoencoder import ProfileAutoencoder, reconstruction_loss
from phenolens.nn.weights import ModelCard
from phenolens.profiling.adversarial import domain_accuracy, latent_codes, train_adversarial_autoencoder
from phenolens.profiling.identity import frame_ranks
from phenolens.profiling.inputs import PreparedProfiles, ProfileColumns, prepare_profiles
from phenolens.profiling.normalize import TEST, TRAIN, VALIDATION, Standardization, scale_keys_for, split_controls, standardize
from phenolens.profiling.select import select_features
from phenolens.profiling.settings import ProfilingSettings
from phenolens.profiling.sphering import SPHERED_SUFFIX, batch_icc, batch_icc_weights, fit_spherers, sphere, sphered, sphering_groups, sphering_layout
from phenolens.training import EarlyStopping, History, fit

ROLE_COLUMN = "Metadata_ControlSplit"
NULL_FOLDS = 5  # cross-fitting folds of the held-out controls when the sphering is fitted on all controls
UNUSED = "unused"  # training controls left out of the autoencoder by `max_train_controls`
REPRESENTATIONS = ("cellprofiler", "anomaly")
ADVERSARIAL = "anomaly_adversarial"  # the anomaly representation of the domain-adversarial autoencoder
NO_ADVERSARY = "none"


def _by_rank(mask: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """Row indices of `mask` in canonical order (`phenolens.profiling.identity.well_ranks`): what a seeded draw walks."""
    rows = np.flatnonzero(mask)
    return rows[np.argsort(ranks[rows], kind="stable")]


@contextlib.contextmanager
def single_torch_thread() -> Iterator[None]:
    """Run torch on one thread: for a network this small, synchronising threads costs more than it
    gains (100 epochs took 12x longer with 2 threads than with 1 on a busy 2-core machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass
class SearchTrial:
    """One hyper-parameter trial of `AnomalyProfiler`'s search and its best validation MSE over `epochs`."""

    learning_rate: float
    output_l2: float
    dropout: float
    validation_mse: float
    epochs: int


class AnomalyProfiler(BaseEstimator):
    """Fit on a well-level profile table; transform it into the `cellprofiler` and `anomaly` representations.

    A scikit-learn estimator: the constructor only stores `settings`, `fit` returns the profiler,
    learned state ends in ``_`` and `sklearn.base.clone` gives an unfitted copy. The caller's table
    is never modified.

    Parameters
    ----------
    settings : ProfilingSettings, optional
        Which wells are controls (`controls`, `plate`, `batch`), the control split, how the
        per-feature spread is pooled (`scale_pooling`), pycytominer feature-selection thresholds,
        the autoencoder's shape and training, an optional random hyper-parameter search
        (`search_trials`) scored on validation controls, `max_train_controls` and the seed.
        Default: ``ProfilingSettings()`` (which has no controls query: give one).

    Attributes
    ----------
    features_in_ : list of str
        Feature columns of the fit table (after dropping non-finite ones).
    batch_dominated_features_ : list of str
        Features dropped because their raw control wells' intraclass correlation between batches exceeds
        `batch_icc_max` (`sphering.batch_icc`; empty when it is 1).
    feature_batch_icc_ : pandas.Series or None
        Every input feature's intraclass correlation between batches on the raw control wells (None without a
        batch column); `sphering_batch_icc_weight` turns it into tvn's output weights (`sphering.batch_icc_weights`).
    selected_features_ : list of str
        Features kept by feature selection (the autoencoder's inputs).
    roles_ : numpy.ndarray
        Control split of the fit table's wells ('train', 'validation', 'test', 'unused' or '').
    input_standardization_, error_standardization_ : Standardization
        Per-plate centres and pooled spreads of the inputs and of the reconstruction errors.
    scale_keys_ : dict
        Plate -> the group its spread is pooled over.
    model_ : ProfileAutoencoder
        The trained autoencoder.
    history_ : History
        Its training history.
    chosen_hyperparameters_ : tuple
        (learning_rate, output_l2, dropout) of the best search trial.
    search_ : pandas.DataFrame
        Every search trial and its validation MSE.
    spherers_ : dict of str to Spherer or TypicalVariationNormalizer
        Representation -> its sphering, fitted on the training (or all, `sphering_controls`) controls (empty without `sphering`).
    adversary_ : AdversaryFit
        The domain-adversarial autoencoder of ``anomaly_adversarial`` (only with `adversary`).
    adversarial_error_standardization_ : Standardization
        Its error centres and spreads (only with `adversary`).
    domain_accuracy_ : dict
        How well the domain is predicted from the latent code of held-out controls, with and
        without the adversary (only with `adversary`).

    Examples
    --------
    >>> profiler = AnomalyProfiler(ProfilingSettings(controls="Metadata_PertType == 'control'"))  # doctest: +SKIP
    >>> representations = profiler.fit_transform(wells)  # doctest: +SKIP
    """

    def __init__(self, settings: ProfilingSettings | None = None):
        self.settings = settings

    @property
    def _settings(self) -> ProfilingSettings:
        settings = self.settings if self.settings is not None else ProfilingSettings()
        if not isinstance(settings, ProfilingSettings):
            raise PhenolensError(f"AnomalyProfiler(settings=...) takes a ProfilingSettings, not {type(settings).__name__}")
        if not settings.controls:
            raise PhenolensError("AnomalyProfiler: give ProfilingSettings(controls=...), the query selecting the negative-control wells")
        return settings

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, table: pd.DataFrame) -> AnomalyProfiler:
        """Learn standardisation, feature selection and the autoencoder from the control wells of `table`.

        Parameters
        ----------
        table : pandas.DataFrame
            Well-level profiles: ``Metadata_*`` columns and numeric features (not modified).

        Returns
        -------
        AnomalyProfiler
            The fitted profiler (``self``).

        Raises
        ------
        PhenolensError
            For a table that cannot be used (see `prepare_profiles`) or too few controls.
        """
        self.fit_transform(table)
        return self

    def fit_transform(self, table: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """Fit, then represent the same wells.

        Reference controls (training controls for the input standardisation, test controls for the
        error z-scores) are standardised leave-one-out, so they look like unseen wells;
        `fit(t).transform(t)` does not do this (like sklearn's TargetEncoder).

        Parameters
        ----------
        table : pandas.DataFrame
            Well-level profiles (not modified).

        Returns
        -------
        dict of str to pandas.DataFrame
            ``{"cellprofiler": ..., "anomaly": ...}`` (plus ``anomaly_adversarial`` with an adversary
            and ``<name>_sphered`` for each with sphering): metadata, the control-split role column
            and the selected features.

        Raises
        ------
        PhenolensError
            For a table that cannot be used, too few controls for a validation split, an adversary
            column with one value among the training controls, a per-batch sphering or adversary
            without a batch column, or a sphering that cannot be fitted.
        """
        settings = self._settings
        settings.check_batch_column()
        prepared = self._prepare(table)
        raw = prepared.table[prepared.features].to_numpy(dtype=np.float64)
        ranks = frame_ranks(prepared.table, settings.plate, raw)
        roles = split_controls(prepared.table[settings.plate], prepared.is_control, settings.control_split, settings.seed, ranks)
        if not (roles == VALIDATION).any():
            raise PhenolensError(
                f"{settings.controls!r}: too few control wells for a validation split; use more controls or a larger validation fraction"
            )
        train = roles == TRAIN
        plates = prepared.table[settings.plate].astype(str).to_numpy()
        scale_keys = scale_keys_for(prepared.table, settings.scale_pooling, settings.plate, settings.batch)
        standardized, input_standardization = standardize(raw, train, plates, scale_keys)
        frame = pd.DataFrame(standardized, columns=prepared.features)
        self.features_in_ = list(prepared.features)
        candidates = self._without_batch_dominated(prepared, raw)
        self.selected_features_ = select_features(frame[train], candidates, settings.corr_threshold, settings.freq_cut, settings.unique_cut)
        self.input_standardization_ = _restrict(input_standardization, prepared.features, self.selected_features_)
        inputs = frame[self.selected_features_].to_numpy(dtype=np.float32)
        roles = self._limit_training_controls(roles, settings, ranks)
        self.roles_ = roles
        # in canonical order: the same wells in another row order train the same model
        self._train_autoencoder(inputs[_by_rank(roles == TRAIN, ranks)], inputs[_by_rank(roles == VALIDATION, ranks)], settings)
        errors = self._errors(inputs)
        anomaly, self.error_standardization_ = standardize(errors, roles == TEST, plates, scale_keys)
        self.scale_keys_ = dict(zip(plates, scale_keys))
        representations = self._representations(prepared, inputs, anomaly, roles)
        if settings.adversary != NO_ADVERSARY:
            representations[ADVERSARIAL] = self._fit_adversary(prepared, inputs, roles, plates, scale_keys, settings, ranks)
        reference, groups, centring = self._sphering_layout(prepared, roles == TRAIN)
        weights = None
        if settings.sphering_batch_icc_weight > 0:
            weights = batch_icc_weights(self.feature_batch_icc_[self.selected_features_].to_numpy(), settings.sphering_batch_icc_weight)
        self.spherers_ = fit_spherers(representations, self.selected_features_, reference, groups, settings, centring, weights)
        sphered_frames = sphered(representations, self.spherers_, self.selected_features_, groups, centring)
        if settings.sphering_controls == "all":
            self._sphere_null_out_of_sample(
                sphered_frames, representations, reference, _by_rank(reference & (roles == TEST), ranks), (groups, centring, weights)
            )
        return {**representations, **sphered_frames}

    def _sphere_null_out_of_sample(self, frames, representations, reference, null: np.ndarray, layout) -> None:
        """Sphere the held-out (test) controls, the null of hits and Z-factors, with spherings fitted without them.

        With ``--sphering-controls all`` they are among the wells the sphering is fitted on, and sphered in-sample
        their anomaly scores are too small: in a screen without any effect every treatment was called a hit. Like the
        leave-one-out standardisation of reference controls, each of `NULL_FOLDS` seeded folds of them is sphered by
        a sphering fitted on every other reference control (cross-fitting), so they look like unseen wells. `null`
        holds their row indices in canonical order (`_by_rank`), so the folds do not depend on the row order.
        """
        groups, centring, weights = layout
        features = self.selected_features_
        rows = numpy_rng(self._settings.seed).permutation(null)
        for fold in np.array_split(rows, min(NULL_FOLDS, len(rows))) if len(rows) else []:
            without = reference.copy()
            without[fold] = False
            spherers = fit_spherers(representations, features, without, groups, self._settings, centring, weights)
            for name, spherer in spherers.items():
                values = representations[name][features].to_numpy(dtype=np.float64)[fold]
                out_of_sample = sphere(spherer, values, None if groups is None else groups[fold], None if centring is None else centring[fold])
                frame = frames[name + SPHERED_SUFFIX]
                frame.iloc[fold, frame.columns.get_indexer(features)] = out_of_sample

    def _without_batch_dominated(self, prepared: PreparedProfiles, raw: np.ndarray) -> list[str]:
        """The features left when those whose raw control wells vary mostly between batches (ICC above `batch_icc_max`) are dropped."""
        settings = self._settings
        self.batch_dominated_features_, self.feature_batch_icc_ = [], None
        if not settings.batch:
            return list(prepared.features)
        batches = prepared.table[settings.batch].astype(str).to_numpy()
        icc = batch_icc(raw[prepared.is_control], batches[prepared.is_control])
        self.feature_batch_icc_ = pd.Series(icc, index=prepared.features)
        if settings.batch_icc_max >= 1:
            return list(prepared.features)
        self.batch_dominated_features_ = [f for f, value in zip(prepared.features, icc) if value > settings.batch_icc_max]
        kept = [f for f, value in zip(prepared.features, icc) if not value > settings.batch_icc_max]
        if not kept:
            raise PhenolensError(f"every feature's control wells have a batch ICC above {settings.batch_icc_max}: raise --batch-icc-max")
        return kept

    def _fit_adversary(self, prepared, inputs, roles, plates, scale_keys, settings, ranks) -> pd.DataFrame:
        """Train the adversarial autoencoder on the controls in canonical order (`_by_rank`); its anomaly representation
        (errors z-scored against the test controls)."""
        column = settings.batch if settings.adversary == "batch" else settings.plate
        domains = prepared.table[column].astype(str).to_numpy()
        learning_rate, output_l2, dropout = self.chosen_hyperparameters_
        chosen = settings.replace(learning_rate=learning_rate, output_l2=output_l2, dropout=dropout)
        train = _by_rank(roles == TRAIN, ranks)
        with single_torch_thread():
            self.adversary_ = train_adversarial_autoencoder(
                inputs[train], domains[train], inputs[_by_rank(roles == VALIDATION, ranks)], chosen, column
            )
        errors, self.adversarial_error_standardization_ = standardize(self._errors(inputs, self.adversary_.model), roles == TEST, plates, scale_keys)
        held_out = roles == TEST
        self.domain_accuracy_ = {
            "column": column,
            "wells": "held-out (test) control wells",
            "anomaly": domain_accuracy(latent_codes(self.model_, inputs[held_out]), domains[held_out], settings.seed),
            ADVERSARIAL: domain_accuracy(latent_codes(self.adversary_.model, inputs[held_out]), domains[held_out], settings.seed),
        }
        return self._with_metadata(prepared, roles, errors)

    def _sphering_layout(self, prepared: PreparedProfiles, is_training: np.ndarray) -> tuple:
        settings = self._settings
        batches = prepared.table[settings.batch].astype(str).to_numpy() if settings.batch else None
        return sphering_layout(settings, prepared.is_control, is_training, batches, prepared.table[settings.plate].astype(str).to_numpy())

    def _prepare(self, table: pd.DataFrame) -> PreparedProfiles:
        settings = self._settings
        columns = ProfileColumns(controls=settings.controls, plate=settings.plate, batch=settings.batch)
        return prepare_profiles(table, columns, source="profile table", feature_set=settings.feature_set)

    @staticmethod
    def _limit_training_controls(roles: np.ndarray, settings: ProfilingSettings, ranks: np.ndarray) -> np.ndarray:
        train = _by_rank(roles == TRAIN, ranks)
        if settings.max_train_controls is None or settings.max_train_controls >= len(train):
            return roles
        dropped = numpy_rng(settings.seed + 1).permutation(train)[settings.max_train_controls :]
        roles = roles.copy()
        roles[dropped] = UNUSED
        return roles

    def _train_autoencoder(self, train: np.ndarray, validation: np.ndarray, settings: ProfilingSettings) -> None:
        base = (settings.learning_rate, settings.output_l2, settings.dropout)
        trials = [base]
        rng = numpy_rng(settings.seed)
        for _ in range(settings.search_trials):
            trials.append((10 ** rng.uniform(-4, -2), 10 ** rng.uniform(-5, -2), rng.uniform(0.0, 0.2)))
        results = []
        best = None
        for learning_rate, output_l2, dropout in trials:
            with single_torch_thread():
                model, history = _train_once(train, validation, settings.replace(learning_rate=learning_rate, output_l2=output_l2, dropout=dropout))
            score = min(history.column("val_loss"))
            results.append(SearchTrial(learning_rate, output_l2, dropout, score, len(history.epochs)))
            if best is None or score < best[0]:
                best = (score, model, history, (learning_rate, output_l2, dropout))
        _, self.model_, self.history_, self.chosen_hyperparameters_ = best
        self.search_ = pd.DataFrame([vars(r) for r in results])

    # -- representing ----------------------------------------------------------------------
    @torch.no_grad()
    def _errors(self, inputs: np.ndarray, model: torch.nn.Module | None = None) -> np.ndarray:
        model = self.model_ if model is None else model
        model.eval()
        x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
        with single_torch_thread():
            return (x - model(x)).numpy().astype(np.float64)

    def transform(self, table: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """Represent the wells of `table` (its plates must have been in the fit table)."""
        check_is_fitted(self, "model_")
        settings = self._settings
        prepared = self._prepare(table)
        missing = [f for f in self.selected_features_ if f not in prepared.features]
        if missing:
            raise PhenolensError(f"profile table: feature column {missing[0]!r} used by the fitted profiler is missing ({len(missing)} in all)")
        plates = prepared.table[settings.plate].astype(str).to_numpy()
        batches = prepared.table[settings.batch].astype(str).to_numpy() if settings.batch else None
        values = self.represent_values(prepared.table[self.selected_features_].to_numpy(dtype=np.float64), plates, batches)
        roles = np.where(prepared.is_control, "unseen", "")
        return {name: self._with_metadata(prepared, roles, block) for name, block in values.items()}

    def represent_values(self, raw: np.ndarray, plates: np.ndarray, batches: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Every representation of wells given as an array (a plate at a time): what `transform` gives, without the tables.

        Parameters
        ----------
        raw : numpy.ndarray
            (wells, selected features) raw values, columns in `selected_features_` order.
        plates : numpy.ndarray
            Plate of every well (each must have been in the fit table).
        batches : numpy.ndarray, optional
            Batch of every well; needed with per-batch sphering and tvn.

        Returns
        -------
        dict of str to numpy.ndarray
            ``cellprofiler`` (the standardised autoencoder inputs, float32), ``anomaly`` (z-scores,
            float64), ``anomaly_adversarial`` with an adversary and ``<name>_sphered`` for each with
            sphering, in the order of `fit_transform`'s representations.

        Raises
        ------
        PhenolensError
            For a plate (or sphering batch) the profiler was not fitted on.
        """
        check_is_fitted(self, "model_")
        unseen = sorted(map(str, set(plates) - set(self.scale_keys_)))
        if unseen:
            raise PhenolensError(f"plate {unseen[0]!r} was not in the table the profiler was fitted on; fit on a table that includes it")
        scale_keys = np.array([self.scale_keys_[p] for p in plates], dtype=object)
        inputs = self.input_standardization_.transform(raw, plates, scale_keys).astype(np.float32)
        values = {"cellprofiler": inputs, "anomaly": self.error_standardization_.transform(self._errors(inputs), plates, scale_keys)}
        if self._settings.adversary != NO_ADVERSARY:
            errors = self._errors(inputs, self.adversary_.model)
            values[ADVERSARIAL] = self.adversarial_error_standardization_.transform(errors, plates, scale_keys)
        groups, centring = sphering_groups(self._settings, batches, plates)
        for name, spherer in self.spherers_.items():
            values[name + SPHERED_SUFFIX] = sphere(spherer, values[name], groups, centring)
        return values

    def _representations(self, prepared: PreparedProfiles, inputs: np.ndarray, anomaly: np.ndarray, roles: np.ndarray) -> dict[str, pd.DataFrame]:
        return {"cellprofiler": self._with_metadata(prepared, roles, inputs), "anomaly": self._with_metadata(prepared, roles, anomaly)}

    def _with_metadata(self, prepared: PreparedProfiles, roles: np.ndarray, values: np.ndarray) -> pd.DataFrame:
        metadata = prepared.table[prepared.metadata].copy()
        metadata[ROLE_COLUMN] = roles
        return pd.concat([metadata, pd.DataFrame(values.astype(np.float64), columns=self.selected_features_)], axis=1)

    def standardized_inputs(self, representation: pd.DataFrame) -> np.ndarray:
        """The autoencoder inputs of wells of the `cellprofiler` representation (float32, selected features)."""
        return representation[self.selected_features_].to_numpy(dtype=np.float32, copy=True)

    def model_card(self, **extra) -> ModelCard:
        """What must travel with the autoencoder weights to apply it: features, standardisation, settings."""
        check_is_fitted(self, "model_")
        settings = self._settings
        learning_rate, output_l2, dropout = self.chosen_hyperparameters_
        return ModelCard(
            architecture="profile_autoencoder",
            hyperparameters={
                "n_features": len(self.selected_features_),
                "hidden": list(settings.hidden),
                "latent": settings.latent,
                "dropout": dropout,
            },
            channel_names=list(self.selected_features_),
            normalization={
                "input_center_by_plate": _as_json(self.input_standardization_.center),
                "input_scale": _as_json(self.input_standardization_.scale),
                "error_center_by_plate": _as_json(self.error_standardization_.center),
                "error_scale": _as_json(self.error_standardization_.scale),
                "scale_pooling": settings.scale_pooling,
            },
            extra={"learning_rate": learning_rate, "output_l2": output_l2, "epochs": len(self.history_.epochs), **extra},
        )


def _train_once(train: np.ndarray, validation: np.ndarray, settings: ProfilingSettings) -> tuple[ProfileAutoencoder, History]:
    """Train one autoencoder on the training controls with early stopping on the validation controls."""
    seed_everything(settings.seed)
    model = ProfileAutoencoder(train.shape[1], list(settings.hidden), settings.latent, settings.dropout)
    output_l2 = settings.output_l2

    def step(net, batch, epoch):
        return reconstruction_loss(net, batch[0], output_l2)

    def validation_step(net, batch, epoch):
        return reconstruction_loss(net, batch[0])

    history: History = fit(
        model,
        (torch.from_numpy(train),),
        step,
        val=(torch.from_numpy(validation),),
        val_step=validation_step,
        epochs=settings.max_epochs,
        batch_size=settings.batch_size,
        lr=settings.learning_rate,
        callbacks=[EarlyStopping(patience=settings.patience, monitor="val_loss")],
        seed=settings.seed,
        description="profile autoencoder",
    )
    return model, history


def _restrict(stats: Standardization, features: list[str], selected: list[str]) -> Standardization:
    index = [features.index(f) for f in selected]
    return Standardization(
        center=stats.center.iloc[:, index].set_axis(selected, axis=1),
        scale=stats.scale.iloc[:, index].set_axis(selected, axis=1),
    )


def _as_json(frame: pd.DataFrame) -> dict[str, list[float]]:
    return {str(key): [round(float(v), 6) for v in row] for key, row in zip(frame.index, frame.to_numpy())}
