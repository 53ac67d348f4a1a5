"""Training: one loop with callbacks, shared by every phenolens model; image classifiers on top of it."""

from phenolens.training.augment import CutMixBatch, cutmix, dim, flips_and_rotations, pseudo_label_weight
from phenolens.training.classifier import ImageClassifier
from phenolens.training.evaluation import TrainingRun, save_with_held_out, train_and_evaluate
from phenolens.training.fitting import ImageClassifierEstimator, fit_classifier
from phenolens.training.loop import Callback, CosineAnnealing, EarlyStopping, History, ReduceLROnPlateau, fit, make_loader
from phenolens.training.prediction import ImagePredictionSettings, Predictions, predict
from phenolens.training.preprocess import ChannelNormalization, CovariateEncoding, padded_array
from phenolens.training.settings import ImageTrainingSettings
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
    "ImageClassifierEstimator",
    "ImagePredictionSettings",
    "ImageTrainingSettings",
    "Predictions",
    "ReduceLROnPlateau",
    "TrainingRun",
    "cutmix",
    "dim",
    "fit",
    "fit_classifier",
    "flips_and_rotations",
    "make_loader",
    "padded_array",
    "predict",
    "pseudo_label_weight",
    "save_with_held_out",
    "stratified_folds",
    "stratified_split",
    "train_and_evaluate",
]
