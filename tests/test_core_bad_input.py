"""Bad input: one clear error naming the file or column, exit status 2, no finished-looking output."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

from phenolens.core.errors import PhenolensError
from phenolens.data import read_image_folder, read_manifest, read_profiles, read_signal


def _image_folder(root, channels=2, n=3):
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(n):
            tifffile.imwrite(root / label / f"{i}.tif", np.full((channels, 12, 10), i, dtype=np.uint8))
    return root


def test_image_folder_reads_classes_and_shapes(tmp_path):
    images = read_image_folder(_image_folder(tmp_path / "imgs"), channel_names=["GFP", "DNA"])
    assert images.images.shape == (6, 2, 12, 10)
    assert images.class_names == ["a", "b"] and images.labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_corrupt_tiff_is_named(tmp_path, cli):
    root = _image_folder(tmp_path / "imgs")
    corrupt = root / "b" / "1.tif"
    corrupt.write_bytes(b"II*\x00garbage")
    with pytest.raises(PhenolensError, match=f"{corrupt}: cannot read image"):
        read_image_folder(root)
    out = tmp_path / "summary"
    status, _, err = cli("data", "show", str(root), "--out", str(out))
    assert status == 2 and str(corrupt) in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".summary*"))


def test_wrong_channel_count_is_named(tmp_path, cli):
    root = _image_folder(tmp_path / "imgs", channels=2)
    tifffile.imwrite(root / "a" / "9.tif", np.zeros((3, 12, 10), dtype=np.uint8))
    with pytest.raises(PhenolensError, match=r"9.tif: has 3 channels but 2 are expected"):
        read_image_folder(root, channel_names=["GFP", "DNA"])
    status, _, err = cli("data", "show", str(root), "--channels", "GFP,DNA", "--out", str(tmp_path / "out"))
    assert status == 2 and "9.tif" in err and not (tmp_path / "out").exists()


def test_empty_folder(tmp_path):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(PhenolensError, match="no .* images"):
        read_image_folder(tmp_path / "empty")


def test_manifest_with_unknown_label_column(tmp_path):
    _image_folder(tmp_path)
    (tmp_path / "m.csv").write_text("file,label\na/0.tif,a\n")
    with pytest.raises(PhenolensError, match="m.csv: missing column 'path'"):
        read_manifest(tmp_path / "m.csv")
    (tmp_path / "m.csv").write_text("path,label,well\na/0.tif,a,A01\nb/0.tif,,A02\n")
    images = read_manifest(tmp_path / "m.csv", unlabelled="Unknown")
    assert images.labels.tolist() == [0, -1] and images.meta["well"].tolist() == ["A01", "A02"]


def _profiles(path, **overrides):
    table = pd.DataFrame({"Metadata_Plate": ["p1", "p1"], "Metadata_Well": ["A01", "A02"], "f1": [1.0, 2.0], "f2": [3.0, 4.0]})
    for column, values in overrides.items():
        table[column] = values
    table.to_csv(path, index=False)
    return path


def test_non_numeric_feature_column_is_named(tmp_path, cli):
    path = _profiles(tmp_path / "wells.csv", f2=["x", "y"])
    with pytest.raises(PhenolensError, match="wells.csv: feature column 'f2' is not numeric"):
        read_profiles(path)
    status, _, err = cli("data", "show", str(path), "--out", str(tmp_path / "out"))
    assert status == 2 and "'f2'" in err and not (tmp_path / "out").exists()


def test_missing_plate_column_is_named(tmp_path, cli):
    path = tmp_path / "wells.parquet"
    pd.read_csv(_profiles(tmp_path / "w.csv")).drop(columns="Metadata_Plate").to_parquet(path)
    with pytest.raises(PhenolensError, match="wells.parquet: missing metadata column 'Metadata_Plate'"):
        read_profiles(path)
    status, _, err = cli("data", "show", str(path), "--out", str(tmp_path / "out"))
    assert status == 2 and "Metadata_Plate" in err


def test_profiles_concatenate_and_keep_metadata(tmp_path):
    table = read_profiles([_profiles(tmp_path / "a.csv"), _profiles(tmp_path / "b.csv.gz")])
    assert table.shape == (4, 4) and table["f1"].tolist() == [1.0, 2.0, 1.0, 2.0]


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "empty"), ("1.0\nnan\n2.0\n", "NaN or infinite")],
)
def test_bad_signals(tmp_path, content, message):
    path = tmp_path / "scan.txt"
    path.write_text(content)
    with pytest.raises(PhenolensError, match=f"scan.txt: .*{message}"):
        read_signal(path)


def test_pickled_npy_is_refused(tmp_path):
    path = tmp_path / "scan.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(PhenolensError, match="scan.npy: cannot read the signal"):
        read_signal(path)


def test_unknown_dataset_exits_2(cli, tmp_path):
    status, _, err = cli("data", "show", "no-such-set", "--out", str(tmp_path / "o"))
    assert status == 2 and "neither a registered dataset" in err
