"""benchmarks/images_field_control.py: the field pairs and their kinds, the subsets, the chance of each reading, and the declared reading."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phenolens.data.containers import ImageSet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import images_field_control as bench  # noqa: E402

# bbbc021-cells' fields: B02 (4 fields, the only DMSO well), B03 (4), B04 (4) and B05 (1) of the inhibitor class
WELL_FIELDS = {"B02": 4, "B03": 4, "B04": 4, "B05": 1}


def _fields() -> pd.DataFrame:
    rows = [
        {"field": f"{well}_s{site}", "well": well, "label": "DMSO" if well == "B02" else "Protein synthesis"}
        for well, n in WELL_FIELDS.items()
        for site in range(1, n + 1)
    ]
    return pd.DataFrame(rows)


def _images(crops_per_field: int = 12) -> ImageSet:
    """Crops of bbbc021's field layout (tiny blank images: the readings take their features apart)."""
    table = _fields().loc[np.repeat(np.arange(13), crops_per_field)].reset_index(drop=True)
    labels = (table["label"] != "DMSO").to_numpy().astype(int)
    return ImageSet(np.zeros((len(table), 1, 2, 2)), labels, ["DMSO", "Protein synthesis"], ["DAPI"], table[["field", "well"]].astype(str))


def test_field_pairs_have_the_kinds_of_the_declaration():
    pairs = bench.field_pairs(_fields())
    counts = pairs["kind"].value_counts()
    assert (counts[bench.DIFFERENT], counts[bench.SAME], counts[bench.SINGLE]) == (24, 12, 6)
    kind = {(first, second): kind for first, second, kind in pairs.itertuples(index=False)}
    assert kind["B03_s1", "B04_s2"] == bench.DIFFERENT and kind["B04_s3", "B05_s1"] == bench.DIFFERENT
    assert kind["B03_s1", "B03_s4"] == bench.SAME and kind["B02_s1", "B02_s2"] == bench.SINGLE
    assert ("B02_s1", "B03_s1") not in kind  # two classes: the class tells them apart


def test_pairs_in_a_subset_have_both_fields_there():
    pairs = bench.field_pairs(_fields())
    trained = {"B02_s3", "B02_s4", "B03_s3", "B03_s4", "B04_s1", "B04_s2", "B04_s3", "B04_s4"}  # seed 0's split
    unseen = bench.pairs_in(pairs, trained, "unseen")
    assert sorted(map(tuple, unseen[["first", "second", "kind"]].to_numpy())) == [
        ("B02_s1", "B02_s2", bench.SINGLE),
        ("B03_s1", "B03_s2", bench.SAME),
        ("B03_s1", "B05_s1", bench.DIFFERENT),
        ("B03_s2", "B05_s1", bench.DIFFERENT),
    ]
    trained_pairs = bench.pairs_in(pairs, trained, "trained")
    assert len(trained_pairs) == 1 + 1 + 6 + 2 * 4  # B02, B03 and B04 pairs, B03 x B04
    assert len(bench.pairs_in(pairs, trained, "all")) == len(pairs)


def test_pair_readings_known_answers():
    fields = np.repeat(["a", "b", "c"], 10)
    separated = (fields == "b").astype(float)[:, None]  # tells b from the others
    blank = np.zeros((30, 1))  # tells nothing: every crop predicted the same, balanced accuracy 0.5
    pairs = pd.DataFrame({"first": ["a", "a"], "second": ["b", "c"]})
    assert bench.pair_readings(separated, fields, pairs, 0) == pytest.approx([0.5, 0.0])
    assert bench.pair_readings(blank, fields, pairs, 0) == pytest.approx([0.0, 0.0])


def test_seed_readings_chances_and_figures():
    images = _images()
    fields = images.meta["field"].to_numpy()
    features = (fields[:, None] == np.unique(fields)[None]).astype(float)  # each field its own direction: every field is readable
    trained = np.flatnonzero(~np.isin(fields, ["B02_s1", "B02_s2", "B03_s1", "B03_s2", "B05_s1"]))
    figures = bench.seed_readings(features, images, bench.field_pairs(_fields()), trained, seed=0)
    for subset in bench.SUBSETS:
        assert figures[subset][bench.DIFFERENT] == pytest.approx(0.5) and figures[subset][bench.SAME] == pytest.approx(0.5)
        assert figures[subset]["D - S"] == pytest.approx(0.0)
    assert figures["all"]["F chance"] == pytest.approx(0.25)  # B02, B03, B04: four fields each (B05, one field, never counts)
    assert figures["unseen"]["F chance"] == pytest.approx(0.5)  # B02 and B03: two unseen fields each
    assert figures["all"]["W chance"] == pytest.approx(1 / 3) and figures["unseen"]["W chance"] == pytest.approx(0.5)
    assert figures["unseen"]["W"] == pytest.approx(0.5)  # B03's two fields against B05's: the probe reads them perfectly


def test_a_subset_without_pairs_of_a_kind_is_undefined():
    images = _images()
    fields = images.meta["field"].to_numpy()
    trained = np.flatnonzero(~np.isin(fields, ["B04_s2", "B04_s3", "B04_s4"]))  # seed 5: the unseen inhibitor fields all of B04
    figures = bench.seed_readings(np.ones((len(fields), 1)), images, bench.field_pairs(_fields()), trained, seed=5)["unseen"]
    assert np.isnan(figures[bench.DIFFERENT]) and np.isnan(figures["D - S"]) and figures[bench.SAME] == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("differences", "same", "expected"),
    [
        ([0.10, 0.12, 0.08, 0.11], [0.0, 0.01, -0.01, 0.02], "the well beyond the field"),
        ([0.05, -0.06, 0.02, -0.03], [0.20, 0.18, 0.22, 0.19], "the field (S at or above part (b)'s line"),
        ([0.05, -0.06, 0.02, -0.03], [0.05, 0.06, 0.04, 0.05], "the field (S below part (b)'s line"),
        ([0.05, -0.06, 0.02, -0.03], [0.10, -0.08, 0.02, -0.05], "undecided"),
        ([0.3], [0.3], "undecided"),  # a single seed never settles
        ([float("nan")], [0.2, 0.2], "undecided (no seeds)"),
    ],
)
def test_reading_follows_the_declared_rule(differences, same, expected):
    assert bench.reading(differences, same).startswith(expected)
