"""`pl.images`: the image commands' functions by the commands' names, each the owning package's own object."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import phenolens as pl
from phenolens import images
from tests.test_core_layering import SOURCE, imported_packages


def test_each_name_is_the_owning_packages_object():
    assert pl.images is images
    assert pl.images.predict is pl.training.predict and pl.images.predict_screen is pl.training.predict_screen
    assert pl.images.train is pl.training.fit_classifier and pl.images.visualise is pl.explain.visualise_classes
    assert pl.images.explain is pl.explain.explain_model and pl.images.explain_screen is pl.explain.explain_screen
    assert pl.images.open_images is pl.data.open_image_source and pl.images.ImageChunkSettings is pl.data.ImageChunkSettings
    for name in dir(pl.images):
        assert getattr(pl.images, name) is not None
    assert set(dir(pl.images)) >= {"train", "predict", "explain", "visualise", "AttributionSettings", "ImagePredictionSettings"}
    with pytest.raises(AttributeError, match="phenolens.images' has no attribute 'predcit'"):
        _ = pl.images.predcit


def test_the_namespace_loads_nothing_until_used_and_no_package_imports_it():
    code = "import sys, phenolens as pl; pl.images; assert 'torch' not in sys.modules and 'phenolens.training' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr.decode()
    importers = [
        path for path in SOURCE.rglob("*.py") if path.parent != SOURCE and any(t == "images" for _, t in imported_packages(path.read_text()))
    ]
    assert importers == []  # above the house: the floors never import it
