"""Training: one loop with callbacks, shared by every phenolens model; image classifiers on top of it.

Names load on first use (``phenolens.training.fit_classifier`` imports torch then), so that the
settings classes, and the command line built from them, load without torch.
"""

from __future__ import annotations

from phenolens.core.lazy import lazy_exports

_EXPORTS = {
    "CutMixBatch": "augment",
    "channel_gains": "augment",
    "cutmix": "augment",
    "dim": "augment",
    "flips_and_rotations": "augment",
    "gaussian_blur": "augment",
    "pseudo_label_weight": "augment",
    "random_blur": "augment",
    "ImageClassifier": "classifier",
    "TrainingRun": "evaluation",
    "save_with_held_out": "evaluation",
    "train_and_evaluate": "evaluation",
    "ImageClassifierEstimator": "fitting",
    "fit_classifier": "fitting",
    "Callback": "loop",
    "CosineAnnealing": "loop",
    "EarlyStopping": "loop",
    "History": "loop",
    "ReduceLROnPlateau": "loop",
    "fit": "loop",
    "make_loader": "loop",
    "Predictions": "prediction",
    "predict": "prediction",
    "predict_screen": "prediction",
    "ChannelNormalization": "preprocess",
    "CovariateEncoding": "preprocess",
    "padded_array": "preprocess",
    "ImagePredictionSettings": "settings",
    "ImageTrainingSettings": "settings",
    "stratified_folds": "splits",
    "stratified_split": "splits",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
