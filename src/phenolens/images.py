"""`pl.images`: the image commands' functions under the names of the commands (`phenolens images train|predict|explain|visualise`).

Nothing is defined here: each name is the function or class of the package that owns it (training, explain,
data), imported on first use so that ``import phenolens`` stays fast. This module sits above the house's floors,
like ``phenolens/__init__.py``; the owning packages never import it.

=================  ===========================================  ==============================
name               is                                           as the command line
=================  ===========================================  ==============================
train              `phenolens.training.fit_classifier`          ``images train``
predict            `phenolens.training.predict` (in memory)     ``images predict``
predict_screen     `phenolens.training.predict_screen`          ``images predict`` (streamed)
explain            `phenolens.explain.explain_model`            ``images explain``
explain_screen     `phenolens.explain.explain_screen`           ``images explain`` (streamed)
visualise          `phenolens.explain.visualise_classes`        ``images visualise``
=================  ===========================================  ==============================

plus `attribute`, `explain_images`, `open_images` (`phenolens.data.open_image_source`), `ImageClassifier` and
the settings classes.
"""

from __future__ import annotations

from phenolens.core.lazy import lazy_exports

_ENTRY_POINTS = {
    "train": ("phenolens.training", "fit_classifier"),
    "predict": ("phenolens.training", "predict"),
    "predict_screen": ("phenolens.training", "predict_screen"),
    "explain": ("phenolens.explain", "explain_model"),
    "explain_images": ("phenolens.explain", "explain_images"),
    "explain_screen": ("phenolens.explain", "explain_screen"),
    "attribute": ("phenolens.explain", "attribute"),
    "visualise": ("phenolens.explain", "visualise_classes"),
    "open_images": ("phenolens.data", "open_image_source"),
    "ImageClassifier": ("phenolens.training", "ImageClassifier"),
    "ImageTrainingSettings": ("phenolens.training", "ImageTrainingSettings"),
    "ImagePredictionSettings": ("phenolens.training", "ImagePredictionSettings"),
    "AttributionSettings": ("phenolens.explain", "AttributionSettings"),
    "ClassModelSettings": ("phenolens.explain", "ClassModelSettings"),
    "ImageChunkSettings": ("phenolens.data", "ImageChunkSettings"),
}

__all__ = sorted(_ENTRY_POINTS)
__getattr__, __dir__ = lazy_exports(__name__, _ENTRY_POINTS)
