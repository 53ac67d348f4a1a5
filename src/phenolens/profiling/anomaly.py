"""AnomalyProfiler: the anomaly-based representation of wells, learned from negative controls only.

Per plate, control wells are split at random into train / validation / test. Features are
standardised with the training controls and selected on them (pycytominer); an autoencoder learns
the feature dependencies of the training controls (early stopping on the validation controls);
every well is then represented by its signed per-feature reconstruction error, z-scored against
the test controls' errors. Treated wells are never used to fit anything.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from phenolens.core.errors import PhenolensError
from phenolens.core.seeding import numpy_rng, seed_everything
from phenolens.nn.profile_autoencoder import ProfileAutoencoder, reconstruction_loss
from phenolens.nn.weights import ModelCard
from phenolens.profiling.inputs import PreparedProfiles, ProfileColumns, prepare_profiles
from phenolens.profiling.normalize import TEST, TRAIN, VALIDATION, Standardization, scale_keys_for, split_controls, standardize
from phenolens.profiling.select import select_features
from phenolens.training import EarlyStopping, History, fit

ROLE_COLUMN = "Metadata_ControlSplit"
UNUSED = "unused"  # training controls left out of the autoencoder by `max_train_controls`
REPRESENTATIONS = ("cellprofiler", "anomaly")


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
    learning_rate: float
    output_l2: float
    dropout: float
    validation_mse: float
    epochs: int


class AnomalyProfiler:
    """Fit on a well-level profile table; transform it into the `cellprofiler` and `anomaly` representations.

    Parameters follow the method: control split fractions, how the per-feature spread is pooled
    when plates have few controls (`scale_pooling`: 'plate', 'batch' or 'all'), pycytominer
    feature-selection thresholds, the autoencoder's shape and training settings, an optional
    random hyper-parameter search (`search_trials` > 0) scored on validation controls, and
    `max_train_controls` to train the autoencoder on fewer controls (for learning curves).

    Learned attributes: `features_in_`, `selected_features_`, `roles_` (control split of the fit
    table), `input_standardization_`, `error_standardization_`, `model_`, `history_`, `search_`.
    """

    def __init__(
        self,
        controls: str = "Metadata_PertType == 'control'",
        plate_column: str = "Metadata_Plate",
        batch_column: str | None = None,
        split: tuple[float, float, float] = (0.4, 0.1, 0.5),
        scale_pooling: str = "all",
        corr_threshold: float = 0.9,
        freq_cut: float = 0.05,
        unique_cut: float = 0.01,
        hidden: tuple[int, ...] = (256, 128, 64),
        latent: int = 16,
        dropout: float = 0.1,
        learning_rate: float = 1e-3,
        output_l2: float = 1e-4,
        batch_size: int = 32,
        max_epochs: int = 300,
        patience: int = 20,
        search_trials: int = 0,
        max_train_controls: int | None = None,
        seed: int = 0,
    ):
        self.controls, self.plate_column, self.batch_column = controls, plate_column, batch_column
        self.split, self.scale_pooling = tuple(split), scale_pooling
        self.corr_threshold, self.freq_cut, self.unique_cut = corr_threshold, freq_cut, unique_cut
        self.hidden, self.latent, self.dropout = tuple(hidden), latent, dropout
        self.learning_rate, self.output_l2, self.batch_size = learning_rate, output_l2, batch_size
        self.max_epochs, self.patience, self.search_trials = max_epochs, patience, search_trials
        self.max_train_controls, self.seed = max_train_controls, seed

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, table: pd.DataFrame) -> AnomalyProfiler:
        """Learn standardisation, feature selection and the autoencoder from the control wells of `table`."""
        self.fit_transform(table)
        return self

    def fit_transform(self, table: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """Fit, then represent the same wells. Reference controls (training controls for the input
        standardisation, test controls for the error z-scores) are standardised leave-one-out, so
        they look like unseen wells; `fit(t).transform(t)` does not do this (like sklearn's TargetEncoder)."""
        prepared = self._prepare(table)
        roles = split_controls(prepared.table[self.plate_column], prepared.is_control, self.split, self.seed)
        if not (roles == VALIDATION).any():
            raise PhenolensError(
                f"{self.controls!r}: too few control wells for a validation split; use more controls or a larger validation fraction"
            )
        train = roles == TRAIN
        plates = prepared.table[self.plate_column].astype(str).to_numpy()
        scale_keys = scale_keys_for(prepared.table, self.scale_pooling, self.plate_column, self.batch_column)
        raw = prepared.table[prepared.features].to_numpy(dtype=np.float64)
        standardized, self.input_standardization_ = standardize(raw, train, plates, scale_keys)
        frame = pd.DataFrame(standardized, columns=prepared.features)
        self.features_in_ = list(prepared.features)
        self.selected_features_ = select_features(frame[train], prepared.features, self.corr_threshold, self.freq_cut, self.unique_cut)
        self.input_standardization_ = _restrict(self.input_standardization_, prepared.features, self.selected_features_)
        inputs = frame[self.selected_features_].to_numpy(dtype=np.float32)
        roles = self._limit_training_controls(roles)
        self.roles_ = roles
        self._train_autoencoder(inputs[roles == TRAIN], inputs[roles == VALIDATION])
        errors = self._errors(inputs)
        anomaly, self.error_standardization_ = standardize(errors, roles == TEST, plates, scale_keys)
        self.scale_keys_ = dict(zip(plates, scale_keys))
        return self._representations(prepared, inputs, anomaly, roles)

    def _prepare(self, table: pd.DataFrame) -> PreparedProfiles:
        columns = ProfileColumns(controls=self.controls, plate=self.plate_column, treatment=None, batch=self.batch_column)
        return prepare_profiles(table, columns, source="profile table")

    def _limit_training_controls(self, roles: np.ndarray) -> np.ndarray:
        train = np.flatnonzero(roles == TRAIN)
        if self.max_train_controls is None or self.max_train_controls >= len(train):
            return roles
        if self.max_train_controls < 2:
            raise PhenolensError(f"max_train_controls={self.max_train_controls}: the autoencoder needs at least 2 training controls")
        dropped = numpy_rng(self.seed + 1).permutation(train)[self.max_train_controls :]
        roles = roles.copy()
        roles[dropped] = UNUSED
        return roles

    def _train_autoencoder(self, train: np.ndarray, validation: np.ndarray) -> None:
        base = (self.learning_rate, self.output_l2, self.dropout)
        trials = [base]
        rng = numpy_rng(self.seed)
        for _ in range(self.search_trials):
            trials.append((10 ** rng.uniform(-4, -2), 10 ** rng.uniform(-5, -2), rng.uniform(0.0, 0.2)))
        results = []
        best = None
        for learning_rate, output_l2, dropout in trials:
            with single_torch_thread():
                model, history = self._train_once(train, validation, learning_rate, output_l2, dropout)
            score = min(history.column("val_loss"))
            results.append(SearchTrial(learning_rate, output_l2, dropout, score, len(history.epochs)))
            if best is None or score < best[0]:
                best = (score, model, history, (learning_rate, output_l2, dropout))
        _, self.model_, self.history_, self.chosen_hyperparameters_ = best
        self.search_ = pd.DataFrame([vars(r) for r in results])

    def _train_once(self, train: np.ndarray, validation: np.ndarray, learning_rate: float, output_l2: float, dropout: float):
        seed_everything(self.seed)
        model = ProfileAutoencoder(train.shape[1], list(self.hidden), self.latent, dropout)

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
            epochs=self.max_epochs,
            batch_size=self.batch_size,
            lr=learning_rate,
            callbacks=[EarlyStopping(patience=self.patience, monitor="val_loss")],
            seed=self.seed,
            description="profile autoencoder",
        )
        return model, history

    # -- representing ----------------------------------------------------------------------
    @torch.no_grad()
    def _errors(self, inputs: np.ndarray) -> np.ndarray:
        self.model_.eval()
        x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
        with single_torch_thread():
            return (x - self.model_(x)).numpy().astype(np.float64)

    def transform(self, table: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """Represent the wells of `table` (its plates must have been in the fit table)."""
        if not hasattr(self, "model_"):
            raise PhenolensError("the AnomalyProfiler is not fitted yet; call fit() first")
        prepared = self._prepare(table)
        missing = [f for f in self.selected_features_ if f not in prepared.features]
        if missing:
            raise PhenolensError(f"profile table: feature column {missing[0]!r} used by the fitted profiler is missing ({len(missing)} in all)")
        plates = prepared.table[self.plate_column].astype(str).to_numpy()
        unseen = sorted(map(str, set(plates) - set(self.scale_keys_)))
        if unseen:
            raise PhenolensError(f"plate {unseen[0]!r} was not in the table the profiler was fitted on; fit on a table that includes it")
        scale_keys = np.array([self.scale_keys_[p] for p in plates], dtype=object)
        raw = prepared.table[self.selected_features_].to_numpy(dtype=np.float64)
        inputs = self.input_standardization_.transform(raw, plates, scale_keys).astype(np.float32)
        anomaly = self.error_standardization_.transform(self._errors(inputs), plates, scale_keys)
        roles = np.where(prepared.is_control, "unseen", "")
        return self._representations(prepared, inputs, anomaly, roles)

    def _representations(self, prepared: PreparedProfiles, inputs: np.ndarray, anomaly: np.ndarray, roles: np.ndarray) -> dict[str, pd.DataFrame]:
        metadata = prepared.table[prepared.metadata].copy()
        metadata[ROLE_COLUMN] = roles
        return {
            "cellprofiler": pd.concat([metadata, pd.DataFrame(inputs.astype(np.float64), columns=self.selected_features_)], axis=1),
            "anomaly": pd.concat([metadata, pd.DataFrame(anomaly, columns=self.selected_features_)], axis=1),
        }

    def standardized_inputs(self, representation: pd.DataFrame) -> np.ndarray:
        """The autoencoder inputs of wells of the `cellprofiler` representation (float32, selected features)."""
        return representation[self.selected_features_].to_numpy(dtype=np.float32, copy=True)

    def model_card(self, **extra) -> ModelCard:
        """What must travel with the autoencoder weights to apply it: features, standardisation, settings."""
        learning_rate, output_l2, dropout = self.chosen_hyperparameters_
        return ModelCard(
            architecture="profile_autoencoder",
            hyperparameters={"n_features": len(self.selected_features_), "hidden": list(self.hidden), "latent": self.latent, "dropout": dropout},
            channel_names=list(self.selected_features_),
            normalization={
                "input_center_by_plate": _as_json(self.input_standardization_.center),
                "input_scale": _as_json(self.input_standardization_.scale),
                "error_center_by_plate": _as_json(self.error_standardization_.center),
                "error_scale": _as_json(self.error_standardization_.scale),
                "scale_pooling": self.scale_pooling,
            },
            extra={"learning_rate": learning_rate, "output_l2": output_l2, "epochs": len(self.history_.epochs), **extra},
        )


def _restrict(stats: Standardization, features: list[str], selected: list[str]) -> Standardization:
    index = [features.index(f) for f in selected]
    return Standardization(
        center=stats.center.iloc[:, index].set_axis(selected, axis=1),
        scale=stats.scale.iloc[:, index].set_axis(selected, axis=1),
    )


def _as_json(frame: pd.DataFrame) -> dict[str, list[float]]:
    return {str(key): [round(float(v), 6) for v in row] for key, row in zip(frame.index, frame.to_numpy())}
