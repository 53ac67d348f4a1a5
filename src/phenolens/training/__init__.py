"""Training: one loop with callbacks, shared by every phenolens model."""

from phenolens.training.loop import Callback, EarlyStopping, History, ReduceLROnPlateau, fit, make_loader

__all__ = ["Callback", "EarlyStopping", "History", "ReduceLROnPlateau", "fit", "make_loader"]
