"""Training: one loop with callbacks, shared by every phenolens model; image classifiers on top of it."""

from phenolens.training.augment import CutMixBatch, cutmix, dim, flips_and_rotations, pseudo_label_weight
from phenolens.training.classifier import ImageClassifier, fit_classifier
from phenolens.training.loop import Callback, CosineAnnealing, EarlyStopping, History, ReduceLROnPlateau, fit, make_loader
from phenolens.training.preprocess import ChannelNormalization, CovariateEncoding, padded_array
from phenolens.training.splits import stratified_folds, stratified_split

__all__ = [
    "Callback",
    "ChannelNormalization",
    "CosineAnnealing",
    "CovariateEncoding",
    "CutMixBatch",
    "EarlyStopping",
    "History",
    "ImageClassifier",
    "ReduceLROnPlateau",
    "cutmix",
    "dim",
    "fit",
    "fit_classifier",
    "flips_and_rotations",
    "make_loader",
    "padded_array",
    "pseudo_label_weight",
    "stratified_folds",
    "stratified_split",
]
