"""A SIGN fit read back by `load_sign` (what `phenolens sign graph` does) counts the statistics the fit counted."""

from __future__ import annotations

import numpy as np
import pytest
from test_images_intensity import _fields

from phenolens.core.runs import RunWriter, load_run
from phenolens.explain.sign.pipeline import SOURCE_KEYS, fit_sign, load_sign, save_sign
from phenolens.explain.sign.settings import SignFitSettings
from phenolens.training import fit_classifier

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_field_normalised_model_graphs_the_validation_images_the_fit_counted(tmp_path):
    """The per-field brightness was taken over the validation images alone on reload (all labelled images in the fit):
    other network inputs, other word maps, other co-occurrence counts than the fit's report."""
    images = _fields(48)
    training = {"width": 0.125, "blocks": (1, 1), "stem_stride": 1, "epochs": 1, "batch_size": 8, "validation_fraction": 0.0}
    classifier = fit_classifier(images, "resnet18", intensity_normalization="field", **training)
    settings = SignFitSettings(layers=("stage1", "stage2"), words=(4, 3), epochs=1, validation_fraction=0.5)
    fitted = fit_sign(classifier, images, settings)
    with RunWriter(tmp_path / "fit", command="sign fit", settings=settings) as run:
        save_sign(fitted, run.path, dict.fromkeys(SOURCE_KEYS))
    loaded = load_sign(load_run(tmp_path / "fit"), lambda source: images)
    np.testing.assert_array_equal(loaded.validation_index, fitted.validation_index)
    np.testing.assert_array_equal(loaded.builder.maps_.predictions, fitted.builder.maps_.predictions)
    for layer, counts in fitted.builder.statistics_.pair_counts.items():
        np.testing.assert_array_equal(loaded.builder.statistics_.pair_counts[layer], counts, err_msg=layer)
