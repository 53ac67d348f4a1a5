"""`fit_classifier`: train an image classifier on an ImageSet; `ImageClassifier`: apply, save, load it.

The trained object carries everything needed to use the model correctly later: class and channel
names, the crop size, the per-channel normalisation and the covariate encoding. It is saved with
`phenolens.nn.weights` (safetensors + JSON), so nothing is ever unpickled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from phenolens.core.errors import PhenolensError
from phenolens.core.logging import get_logger
from phenolens.core.seeding import seed_everything, torch_generator
from phenolens.data.containers import ImageSet
from phenolens.nn.backbones import Ensemble, ImageClassifierNet, build_backbone
from phenolens.nn.weights import ModelCard, load_model, save_model
from phenolens.training.augment import cutmix, dim, flips_and_rotations, pseudo_label_weight
from phenolens.training.loop import Callback, CosineAnnealing, EarlyStopping, History, ReduceLROnPlateau, fit
from phenolens.training.preprocess import ChannelNormalization, CovariateEncoding, padded_array
from phenolens.training.splits import group_column, stratified_split

log = get_logger(__name__)


class EpochLog(Callback):
    """Log each epoch's losses (visible with PHENOLENS_LOG=INFO when no progress bar is shown)."""

    def __init__(self, description: str):
        self.description = description

    def on_epoch_end(self, epoch: int, record: dict, model: torch.nn.Module) -> bool:
        log.info("%s: epoch %d train_loss %.4f val_loss %.4f", self.description, epoch, record["train_loss"], record.get("val_loss", float("nan")))
        return False


@dataclass
class ImageClassifier:
    """A trained image classifier and what it needs to be applied: names, size, normalisation."""

    model: ImageClassifierNet
    class_names: list[str]
    channel_names: list[str]
    size: int
    normalization: ChannelNormalization
    covariate: CovariateEncoding | None = None
    history: History | None = None
    settings: dict = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        return type(self.model).architecture_name

    def array(self, images: ImageSet | np.ndarray) -> np.ndarray:
        """Padded, checked and normalised (N, C, size, size) float32 array."""
        return self.normalization(padded_array(images, self.size, self.channel_names)).astype(np.float32)

    def tensor(self, images: ImageSet | np.ndarray) -> torch.Tensor:
        """The network input for `images` (see `array`)."""
        return torch.from_numpy(self.array(images))

    def covariates(self, images: ImageSet | np.ndarray) -> torch.Tensor | None:
        """One-hot covariates for `images`, or None when the model was trained without them."""
        if self.covariate is None:
            return None
        if not isinstance(images, ImageSet):
            raise PhenolensError(f"the model needs the covariate column {self.covariate.column!r}: pass an ImageSet with that metadata")
        return self.covariate(images)

    @torch.no_grad()
    def _batched(self, images: ImageSet | np.ndarray, function, batch_size: int) -> np.ndarray:
        inputs, covariates = self.tensor(images), self.covariates(images)
        self.model.eval()
        outputs = [
            function(inputs[i : i + batch_size], None if covariates is None else covariates[i : i + batch_size])
            for i in range(0, len(inputs), batch_size)
        ]
        return torch.cat(outputs).numpy()

    def logits(self, images: ImageSet | np.ndarray, batch_size: int = 256) -> np.ndarray:
        """(N, K) logits."""
        return self._batched(images, self.model, batch_size)

    def predict_proba(self, images: ImageSet | np.ndarray, batch_size: int = 256) -> np.ndarray:
        """(N, K) class probabilities (softmax of the logits), columns in `class_names` order."""
        return torch.softmax(torch.from_numpy(self.logits(images, batch_size)), dim=1).numpy()

    def predict(self, images: ImageSet | np.ndarray, batch_size: int = 256) -> np.ndarray:
        """(N,) predicted class indices."""
        return self.logits(images, batch_size).argmax(axis=1)

    def embed(self, images: ImageSet | np.ndarray, batch_size: int = 256) -> np.ndarray:
        """(N, D) penultimate features (pooled maps plus covariates)."""
        return self._batched(images, self.model.embed, batch_size)

    def class_index(self, name: str) -> int:
        """Index of a class name; a clear error names the known classes."""
        if name not in self.class_names:
            raise PhenolensError(f"unknown target class {name!r}; the model knows {', '.join(self.class_names)}")
        return self.class_names.index(name)

    def card(self, extra: dict | None = None) -> ModelCard:
        return ModelCard(
            architecture=self.architecture,
            hyperparameters=dict(self.settings.get("hyperparameters", {})),
            class_names=list(self.class_names),
            channel_names=list(self.channel_names),
            normalization={**self.normalization.to_dict(), "size": self.size},
            extra={
                "covariate": None if self.covariate is None else {"column": self.covariate.column, "categories": self.covariate.categories},
                "settings": {k: v for k, v in self.settings.items() if k != "hyperparameters"},
                "history": None if self.history is None else self.history.epochs,
                **(extra or {}),
            },
        )

    def save(self, folder: str | Path, extra: dict | None = None) -> Path:
        """Write `model.safetensors` + `model.json` into `folder`."""
        return save_model(self.model, folder, self.card(extra))

    @classmethod
    def load(cls, folder: str | Path) -> ImageClassifier:
        """Rebuild a classifier saved by `save` (errors name the file and what is wrong)."""
        model, card = load_model(folder)
        if not isinstance(model, ImageClassifierNet):
            raise PhenolensError(
                f"{Path(folder) / 'model.json'}: holds a {card.architecture!r} model, not an image classifier; pass a `phenolens train` output"
            )
        if model.in_channels != len(card.channel_names) or "size" not in card.normalization:
            raise PhenolensError(f"{Path(folder) / 'model.json'}: channel names or crop size do not match the weights; retrain or restore the file")
        covariate = card.extra.get("covariate")
        history = History(epochs=card.extra["history"]) if card.extra.get("history") else None
        return cls(
            model=model,
            class_names=card.class_names,
            channel_names=card.channel_names,
            size=int(card.normalization["size"]),
            normalization=ChannelNormalization.from_dict(card.normalization),
            covariate=CovariateEncoding(**covariate) if covariate else None,
            history=history,
            settings={**card.extra.get("settings", {}), "hyperparameters": card.hyperparameters},
        )


def fit_classifier(
    images: ImageSet,
    arch: str = "resnet18",
    *,
    width: float = 0.5,
    stem_stride: int = 1,
    blocks: list[int] | None = None,
    loss: str = "composite",
    size: int | None = None,
    epochs: int = 30,
    batch_size: int = 32,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    augment: bool = True,
    max_rotation: float = 10.0,
    cutmix_probability: float = 0.5,
    dimming: float = 0.0,
    pseudo_labels: bool = True,
    pseudo_start: int | None = None,
    pseudo_full: int | None = None,
    pseudo_weight: float = 0.5,
    balanced: bool = False,
    covariate: str | None = None,
    validation_fraction: float = 0.15,
    group_by: str | None = None,
    patience: int = 10,
    schedule: str = "plateau",
    seed: int = 0,
    members: int = 1,
    description: str = "training classifier",
) -> ImageClassifier:
    """Train a `arch` classifier on the labelled images of `images` and return it.

    - Images are centre-padded to `size` (default: the largest crop) and normalised per channel
      with statistics of the training images.
    - `validation_fraction` of the labelled images (stratified; grouped by the `group_by` metadata
      column when given) are held out for early stopping and learning-rate reduction; 0 trains for
      all `epochs` on everything.
    - `loss`: "softmax", "arcface" (s=30, m=0.5) or "composite" (0.2 ArcFace + 0.8 softmax).
    - `augment`: flips, 90-degree turns, rotations of up to `max_rotation` degrees, and CutMix on
      a `cutmix_probability` share of each batch; with `dimming` > 0, each image's brightness is
      also scaled by a gain drawn from U(1 - dimming, 1).
    - `pseudo_labels`: the unlabelled images of `images` (label -1), if any, join every batch with
      their current predicted class as the label and weight alpha(t) rising from 0 at epoch
      `pseudo_start` (default epochs // 4) to `pseudo_weight` at `pseudo_full` (default epochs // 2).
    - `balanced`: weight each labelled image's loss by the inverse frequency of its class.
    - `schedule`: "plateau" halves the learning rate when the validation loss stalls; "cosine"
      anneals it to 0 over `epochs` (best for a fixed, short budget).
    - `covariate`: a metadata column one-hot encoded and concatenated to the pooled features.
    - `members` > 1 trains a deep ensemble (`Ensemble`): member m starts from seed `seed + m`
      (initialisation, augmentation, batching) on the same split and normalisation; member 0 is the
      model `members=1` trains. The history kept is member 0's.
    """
    if not 0.0 <= cutmix_probability <= 1.0:
        raise PhenolensError(f"the CutMix share {cutmix_probability} must lie in [0, 1] (--cutmix); 0 turns CutMix off")
    if not 0.0 <= dimming < 1.0:
        raise PhenolensError(f"the dimming {dimming} must lie in [0, 1) (--dimming); 0 turns it off")
    if members < 1:
        raise PhenolensError(f"--members {members}: an ensemble needs at least 1 member (1 trains a single model)")
    labelled = images.labelled()
    present = np.unique(labelled.labels)
    if len(labelled) == 0 or len(present) < 2:
        raise PhenolensError(
            f"{images.name}: training needs labelled images of at least 2 classes, found {len(present)} class(es) in {len(labelled)} images"
        )
    size = int(size or images.shapes().max())
    raw = padded_array(labelled, size, images.channel_names)
    groups = group_column(labelled, group_by)
    if validation_fraction > 0:
        train_index, val_index = stratified_split(labelled.labels, validation_fraction, seed, groups)
    else:
        train_index, val_index = np.arange(len(labelled)), np.array([], dtype=int)
    normalization = ChannelNormalization.fit(raw[train_index])
    inputs = torch.from_numpy(normalization(raw))
    labels = torch.from_numpy(labelled.labels)
    encoding = CovariateEncoding.fit(images, covariate) if covariate else None
    extras = [encoding(labelled)] if encoding else []
    hyperparameters = {
        "in_channels": images.n_channels,
        "n_classes": len(images.class_names),
        "width": width,
        "stem_stride": stem_stride,
        "n_covariates": len(encoding.categories) if encoding else 0,
        "loss": loss,
        **({"blocks": list(blocks)} if blocks else {}),
    }
    pool = images.unlabelled() if pseudo_labels else None
    pool_inputs = torch.from_numpy(normalization(padded_array(pool, size, images.channel_names))) if pool is not None and len(pool) else None
    pool_extras = encoding(pool) if encoding and pool_inputs is not None else None
    start = epochs // 4 if pseudo_start is None else pseudo_start
    full = epochs // 2 if pseudo_full is None else pseudo_full

    black = torch.from_numpy(normalization.constant(0.0))
    counts = np.bincount(labelled.labels[train_index], minlength=len(images.class_names))
    inverse = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max((counts > 0).sum(), 1), 0.0)
    class_weights = torch.tensor(inverse if balanced else np.ones(len(counts)), dtype=torch.float32)
    tensors = (inputs, labels, *extras)
    train = tuple(t[train_index] for t in tensors)
    val = tuple(t[val_index] for t in tensors) if len(val_index) else None
    if schedule not in ("plateau", "cosine"):
        raise PhenolensError(f"unknown learning-rate schedule {schedule!r}; use plateau or cosine")

    def train_member(member_seed: int, member_description: str) -> tuple[ImageClassifierNet, History]:
        seed_everything(member_seed)
        generator = torch_generator(member_seed)
        model = build_backbone(arch, **hyperparameters)

        def augmented(x: torch.Tensor) -> torch.Tensor:
            if not augment:
                return x
            x = flips_and_rotations(x, generator, max_rotation, fill=black)
            return dim(x, generator, dimming, black) if dimming else x

        def train_step(net: ImageClassifierNet, batch, epoch: int) -> torch.Tensor:
            x, y, *cov = batch
            x = augmented(x)
            mixed = cutmix(x, y, generator, cutmix_probability if augment else 0.0)
            alpha = pseudo_label_weight(epoch, start, full, pseudo_weight) if pool_inputs is not None else 0.0
            covariates = cov[0] if cov else None
            if alpha > 0:
                pick = torch.randint(0, len(pool_inputs), (len(x),), generator=generator)
                x_all = torch.cat([mixed.images, augmented(pool_inputs[pick])])
                cov_all = torch.cat([covariates, pool_extras[pick]]) if covariates is not None else None
                features = net.embed(x_all, cov_all)
                labelled_features, pool_features = features[: len(x)], features[len(x) :]
                with torch.no_grad():
                    guesses = net.head(pool_features).argmax(1)
                pool_loss = alpha * net.head.loss(pool_features, guesses)
            else:
                labelled_features, pool_loss = net.embed(mixed.images, covariates), 0.0
            own = net.head.loss(labelled_features, mixed.labels, mixed.weight * class_weights[mixed.labels])
            partner = net.head.loss(labelled_features, mixed.partner_labels, (1.0 - mixed.weight) * class_weights[mixed.partner_labels])
            return own + partner + pool_loss

        def val_step(net: ImageClassifierNet, batch, epoch: int) -> torch.Tensor:
            x, y, *cov = batch
            return net.head.loss(net.embed(x, cov[0] if cov else None), y)

        callbacks: list[Callback] = [EarlyStopping(patience=patience)] if val else []
        if schedule == "cosine":
            callbacks.append(CosineAnnealing(epochs))
        elif val:
            callbacks.append(ReduceLROnPlateau(factor=0.5, patience=max(2, patience // 2)))
        callbacks.append(EpochLog(member_description))
        history = fit(
            model,
            train,
            train_step,
            val=val,
            val_step=val_step,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            callbacks=callbacks,
            seed=member_seed,
            description=member_description,
        )
        return model, history

    trained = [
        train_member(seed + member, description if members == 1 else f"{description}, member {member + 1}/{members}") for member in range(members)
    ]
    model, history = trained[0]
    if members > 1:
        hyperparameters = {"member_architecture": arch, "n_members": members, **hyperparameters}
        model = Ensemble(**hyperparameters)
        model.members = torch.nn.ModuleList(net for net, _ in trained)
        model.eval()
    settings = {
        "hyperparameters": hyperparameters,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "augment": augment,
        "max_rotation": max_rotation,
        "cutmix_probability": cutmix_probability,
        "dimming": dimming,
        "pseudo_labels": pool_inputs is not None,
        "pseudo_schedule": {"start": start, "full": full, "weight": pseudo_weight},
        "balanced": balanced,
        "schedule": schedule,
        "validation_fraction": validation_fraction,
        "group_by": group_by,
        "seed": seed,
        "members": members,
        "n_train": int(len(train_index)),
        "n_validation": int(len(val_index)),
        "n_unlabelled": 0 if pool_inputs is None else len(pool_inputs),
    }
    log.info("trained %d %s on %d images (%d epochs run by the first)", members, arch, len(train_index), len(history.epochs))
    return ImageClassifier(model, list(images.class_names), list(images.channel_names), size, normalization, encoding, history, settings)
