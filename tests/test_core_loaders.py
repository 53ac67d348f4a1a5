"""Loader counts are exactly those of the published datasets."""

from __future__ import annotations

import numpy as np
import pytest

import phenolens as pl
from phenolens.data.piximi import convert_piximi_project, decode_piximi_project


def test_bbbc021_profiles_counts():
    wells = pl.data.load("bbbc021-profiles")
    features = pl.data.feature_columns(wells)
    assert wells.shape == (632, 516 + len(pl.data.metadata_columns(wells)))
    assert len(features) == 516 and all(np.issubdtype(wells[c].dtype, np.number) for c in features)
    for column in ["Plate", "Well", "Compound", "Concentration", "Replicate", "Batch", "MoA", "PertType"]:
        assert f"Metadata_{column}" in wells
    controls = wells.query("Metadata_PertType == 'control'")
    treated = wells.query("Metadata_PertType == 'trt'")
    assert len(controls) == 330 and set(controls["Metadata_Compound"]) == {"DMSO"}
    assert treated.groupby(["Metadata_Compound", "Metadata_Concentration"]).ngroups == 103
    assert treated["Metadata_Compound"].nunique() == 38
    assert treated["Metadata_MoA"].nunique() == 12
    assert wells["Metadata_Plate"].nunique() == 55 and wells["Metadata_Batch"].nunique() == 10
    assert (controls.groupby("Metadata_Plate").size() == 6).all()
    assert treated.groupby("Metadata_Treatment").size().median() == 3


def test_lincs_plate_uses_pycytominer_names():
    plate = pl.data.load("lincs-plate")
    assert plate.shape[0] == 384
    assert len(pl.data.feature_columns(plate)) == 454
    assert (plate["Metadata_pert_type"] == "control").sum() == 24


def test_bbbc013_crops():
    cells = pl.data.load("bbbc013")
    assert len(cells) == 794 and cells.channel_names == ["FKHR-GFP", "DNA"]
    assert cells.class_counts() == {"NoGFP": 59, "CytoplasmicGFP": 80, "NuclearGFP": 59, "Unknown": 596}
    shapes = cells.shapes()
    assert shapes.min() >= 9 and shapes.max() <= 115
    assert all(image.dtype == np.uint8 and image.shape[0] == 2 for image in cells.images)
    assert len(cells.labelled()) == 198 and len(cells.unlabelled()) == 596
    padded = cells.labelled().padded(64)
    assert padded.shape == (198, 2, 64, 64)


def test_piximi_conversion_matches_the_decoded_crops(mirror, tmp_path):
    images, table = decode_piximi_project(mirror / "bbbc013" / "BBBC013ExampleProject.json")
    assert len(images) == 794
    cells = pl.data.load("bbbc013")
    by_source = {source.split("/")[-1].removesuffix(".tif"): image for source, image in zip(cells.meta["source"], cells.images)}
    assert set(by_source) == set(table["name"])
    assert all(np.array_equal(by_source[name], image) for name, image in zip(table["name"], images))
    assert table["label"].value_counts().to_dict() == {"Unknown": 596, "CytoplasmicGFP": 80, "NoGFP": 59, "NuclearGFP": 59}
    out = convert_piximi_project(mirror / "bbbc013" / "BBBC013ExampleProject.json", tmp_path / "bbbc013")
    assert (out / "labels.csv").read_text() == (mirror / "bbbc013" / "labels.csv").read_text()


def test_mitocheck_nuclei():
    nuclei = pl.data.load("mitocheck")
    assert nuclei.images.shape == (3277, 1, 64, 64)
    assert len(nuclei.class_names) == 16
    counts = nuclei.class_counts()
    assert min(counts.values()) == 58 and max(counts.values()) == 473


def test_bbbc021_cells_with_well_and_site():
    cells = pl.data.load("bbbc021-cells")
    assert cells.images.shape == (800, 3, 68, 68) and cells.images.dtype == np.uint16
    assert cells.channel_names == ["DAPI", "Tubulin", "Actin"]
    assert cells.class_counts() == {"DMSO": 400, "Protein synthesis": 400}
    dmso = cells.meta[cells.labels == 0]
    assert set(dmso["well"]) == {"B02"}
    assert set(cells.meta.loc[cells.labels == 1, "well"]) == {"B03", "B04", "B05"}
    assert cells.meta["site"].str.fullmatch(r"s\d+").all()


def test_echo_pulses():
    signals = pl.data.load("echo-pulses")
    reference = signals["reference_signal_ultem_water"]
    assert reference.values.shape == (424,)
    aluminium = signals["phantom2_5MHz_F1inc_D0p25_sn_D5628_pn13_0504_s"]
    assert aluminium.values.shape == (2000,)
    assert aluminium.params["fc"] == pytest.approx(5.4138, abs=1e-3)
    assert sum(name.startswith("phantom1") for name in signals.names) == 3


def test_fashion_mnist_when_installed():
    try:
        images = pl.data.load("fashion-mnist")
    except pl.PhenolensError:
        pytest.skip("fashion-mnist files not available here")
    assert images.images.shape == (70000, 1, 28, 28)
    assert (images.meta["split"] == "test").sum() == 10000
    assert np.bincount(images.labels).tolist() == [7000] * 10
