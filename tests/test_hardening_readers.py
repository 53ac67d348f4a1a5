"""Hardening of the readers: pixel limit before decoding, real-valued data only, unambiguous tables,
manifest paths kept inside the manifest's folder (issue 23)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from phenolens.core.errors import PhenolensError
from phenolens.data import read_image, read_image_folder, read_manifest, read_profiles, read_signal
from phenolens.data.readers import MAX_PIXELS, MAX_PIXELS_VARIABLE, is_manifest, pixel_limit


def _zlib_tiff(path, shape):
    tifffile.imwrite(path, np.zeros(shape, dtype=np.uint8), compression="zlib")
    return path


def test_compressed_tiff_above_the_limit_is_refused_before_decoding(tmp_path):
    bomb = _zlib_tiff(tmp_path / "bomb.tif", (2, 3000, 3000))  # 18 MB of pixels in ~20 kB
    assert bomb.stat().st_size < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(PhenolensError, match=rf"{bomb}: the image holds 18,000,000 values .* limit of 1,000,000 per image"):
            read_image(bomb, max_pixels=1_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000  # the pixels were never decoded
    assert read_image(bomb, max_pixels=18_000_000).shape == (2, 3000, 3000)


def test_pixel_limit_from_the_environment(tmp_path, monkeypatch):
    image = _zlib_tiff(tmp_path / "a.tif", (2, 30, 30))
    assert pixel_limit() == MAX_PIXELS == 10**8
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "1799")
    with pytest.raises(PhenolensError, match="1,800 values .* limit of 1,799 per image; .*PHENOLENS_MAX_PIXELS"):
        read_image(image)
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "1800")
    assert read_image(image).shape == (2, 30, 30)
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "lots")
    with pytest.raises(PhenolensError, match="PHENOLENS_MAX_PIXELS='lots' is not a positive integer"):
        read_image(image)


def test_png_and_npy_limits_count_channels(tmp_path):
    png = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((20, 10, 3), dtype=np.uint8)).save(png)
    with pytest.raises(PhenolensError, match="600 values"):
        read_image(png, max_pixels=599)
    assert read_image(png, max_pixels=600).shape == (3, 20, 10)
    npy = tmp_path / "a.npy"
    np.save(npy, np.ones((2, 20, 10), dtype=np.float32))
    with pytest.raises(PhenolensError, match="400 values"):
        read_image(npy, max_pixels=399)
    assert read_image(npy, max_pixels=400).sum() == 400


def test_palette_png_is_read_as_intensities_not_palette_indices(tmp_path):
    from phenolens.data.readers import image_header

    indices = np.tile(np.array([[2, 0], [1, 3]], dtype=np.uint8), (8, 5))  # 16 x 10 pixels
    grey = np.choose(indices, [200, 90, 0, 255]).astype(np.uint8)  # the table below maps index -> grey level
    table = {2: 0, 0: 200, 1: 90, 3: 255}
    palette = [v for i in range(256) for v in (table.get(i, 0),) * 3]
    image = Image.fromarray(indices, mode="P")
    image.putpalette(palette)
    image.save(tmp_path / "grey.png")
    assert image_header(tmp_path / "grey.png")[0] == 1
    np.testing.assert_array_equal(read_image(tmp_path / "grey.png")[0], grey)
    colour = Image.fromarray(indices, mode="P")
    colour.putpalette([v for i in range(256) for v in (i, 0, 255 - i)])  # index i -> red i, blue 255 - i
    colour.save(tmp_path / "colour.png")
    assert image_header(tmp_path / "colour.png")[0] == 3
    np.testing.assert_array_equal(read_image(tmp_path / "colour.png"), np.stack([indices, np.zeros_like(indices), 255 - indices]))


@pytest.mark.parametrize("values", [np.ones((4, 4), dtype=np.complex64), np.array([["a", "b"], ["c", "d"]])])
def test_images_that_are_not_real_numbers_are_refused(tmp_path, values):
    path = tmp_path / "odd.npy"
    np.save(path, values)
    with pytest.raises(PhenolensError, match=rf"{path}: pixels of type .* are not real numbers"):
        read_image(path)


def test_empty_class_folder_is_refused(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    tifffile.imwrite(tmp_path / "a" / "0.tif", np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(PhenolensError, match=rf"{tmp_path / 'b'}: a class sub-folder without"):
        read_image_folder(tmp_path)


def test_duplicate_csv_columns_are_refused_not_renamed(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("Metadata_Plate,f,f\np,1,2\n")
    assert list(pd.read_csv(path).columns) == ["Metadata_Plate", "f", "f.1"]  # what pandas alone does
    with pytest.raises(PhenolensError, match=rf"{path}: duplicate column name 'f'"):
        read_profiles(path)
    gz = tmp_path / "dup.csv.gz"
    pd.DataFrame([["p", 1, 2]], columns=["Metadata_Plate", "g", "g"]).to_csv(gz, index=False)
    with pytest.raises(PhenolensError, match="duplicate column name 'g'"):
        read_profiles(gz)


def test_duplicate_parquet_columns_are_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "dup.parquet"
    pq.write_table(pa.table([pa.array(["p"]), pa.array([1.0]), pa.array([2.0])], names=["Metadata_Plate", "f", "f"]), path)
    with pytest.raises(PhenolensError, match=rf"{path}: duplicate column name 'f'"):
        read_profiles(path)


def test_header_only_and_empty_tables_are_reported_as_such(tmp_path):
    header_only = tmp_path / "header.csv"
    header_only.write_text("Metadata_Plate,f1,f2\n")
    with pytest.raises(PhenolensError, match=rf"{header_only}: the table has 3 columns but no rows"):
        read_profiles(header_only)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(PhenolensError, match=rf"{empty}: the file is empty"):
        read_profiles(empty)
    with pytest.raises(PhenolensError, match=rf"{empty}: the file is empty"):
        is_manifest(empty)
    assert is_manifest(header_only) is False


def _manifest(tmp_path, rows, name="m.csv"):
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    tifffile.imwrite(folder / "in.tif", np.zeros((8, 8), dtype=np.uint8))
    tifffile.imwrite(tmp_path / "outside.tif", np.ones((8, 8), dtype=np.uint8))
    path = folder / name
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(path, index=False)
    return path


def test_manifest_with_only_empty_labels_is_refused(tmp_path):
    manifest = _manifest(tmp_path, [["in.tif", ""], ["in.tif", None]])
    with pytest.raises(PhenolensError, match=rf"{manifest}: every 'label' is empty"):
        read_manifest(manifest)
    assert read_manifest(manifest, class_names=["a", "b"]).labels.tolist() == [-1, -1]


def test_manifest_labels_that_pandas_reads_as_missing_stay_classes(tmp_path):
    """pandas reads 'None', 'NA', 'null', 'NaN', ... as missing: those classes were silently made unlabelled."""
    manifest = _manifest(tmp_path, [["in.tif", "None"], ["in.tif", "Mitosis"], ["in.tif", "NA"], ["in.tif", "null"], ["in.tif", ""]])
    images = read_manifest(manifest)
    assert images.class_names == ["Mitosis", "NA", "None", "null"]
    assert images.labels.tolist() == [2, 0, 1, 3, -1]


def test_zarr_metadata_labels_that_pandas_reads_as_missing_stay_classes(tmp_path):
    import zarr

    from phenolens.data.chunks import open_image_source

    store = tmp_path / "wells.zarr"
    zarr.open_group(str(store), mode="w").create_array("images", data=np.zeros((4, 1, 8, 8), dtype=np.uint8))
    pd.DataFrame({"label": ["None", "Mitosis", "NA", ""]}).to_csv(store / "metadata.csv", index=False)
    source = open_image_source(zarr=store)
    assert source.class_names == ["Mitosis", "NA", "None"] and source.labels.tolist() == [2, 0, 1, -1]


@pytest.mark.parametrize("outside", ["../outside.tif", "OUTSIDE_ABSOLUTE", "sub/../../outside.tif"])
def test_manifest_paths_leaving_the_folder_need_permission(tmp_path, outside):
    outside = str(tmp_path / "outside.tif") if outside == "OUTSIDE_ABSOLUTE" else outside
    manifest = _manifest(tmp_path, [["in.tif", "a"], [outside, "b"]])
    with pytest.raises(PhenolensError, match=rf"{manifest}: row 3 path .* leaves the manifest's folder.*--allow-outside-paths"):
        read_manifest(manifest)
    images = read_manifest(manifest, allow_outside_paths=True)
    assert images.images[:, 0].max(axis=(1, 2)).tolist() == [0, 1]


def test_manifest_row_without_a_path_is_named(tmp_path):
    manifest = _manifest(tmp_path, [["in.tif", "a"], [None, "b"]])
    with pytest.raises(PhenolensError, match=rf"{manifest}: row 3 has no image path"):
        read_manifest(manifest)


@pytest.mark.parametrize(
    "values, problem",
    [
        (np.ones(8, dtype=np.complex128), "complex128 are not real numbers"),
        (np.array(["1", "2"]), "<U1 are not real numbers"),
        (np.ones((8, 2)), "holds a 8x2 array, not one signal"),
    ],
)
def test_signals_that_are_not_one_real_column_are_refused(tmp_path, values, problem):
    path = tmp_path / "s.npy"
    np.save(path, values)
    with pytest.raises(PhenolensError, match=rf"{path}: .*{problem}"):
        read_signal(path)


def test_two_column_text_signal_is_refused_and_one_column_shapes_are_kept(tmp_path):
    text = tmp_path / "s.txt"
    text.write_text("1 2\n3 4\n5 6\n")
    with pytest.raises(PhenolensError, match="holds a 3x2 array, not one signal"):
        read_signal(text)
    column = tmp_path / "c.npy"
    np.save(column, np.arange(5.0)[:, None])
    assert read_signal(column).values.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_signal_parameters_must_be_a_finite_json_object(tmp_path):
    signal = tmp_path / "s.txt"
    signal.write_text("1\n2\n3\n")
    params = tmp_path / "p.json"
    params.write_text("[1, 2]")
    with pytest.raises(PhenolensError, match=rf"{params}: the signal parameters must be a JSON object, got list"):
        read_signal(signal, params)
    params.write_text('{"fs": NaN}')
    with pytest.raises(PhenolensError, match="NaN is not a finite number"):
        read_signal(signal, params)
    params.write_text('{"fs": 5e7}')
    assert read_signal(signal, params).params == {"fs": 5e7}


def test_tiff_with_a_damaged_tag_is_refused_not_read_wrong(tmp_path):
    path = tmp_path / "damaged.tif"
    tifffile.imwrite(path, (np.arange(288).reshape(2, 12, 12) % 200 + 1).astype(np.uint8))
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[0].tags["BitsPerSample"].offset
    data = bytearray(path.read_bytes())
    data[offset + 2 : offset + 4] = (158).to_bytes(2, "little")  # one byte: the tag's type becomes invalid
    path.write_bytes(bytes(data))
    with tifffile.TiffFile(path) as tif:  # what tifffile alone does: a warning, then booleans instead of uint8
        assert tif.asarray().dtype == bool
    with pytest.raises(PhenolensError, match=rf"{path}: cannot read image \(ValueError: damaged file: .*invalid data type 158"):
        read_image(path)


def test_cli_manifest_outside_paths_need_the_option(tmp_path, capsys):
    """`images train` refuses a manifest path through .. in one line; --allow-outside-paths reads it."""
    import numpy as np

    from phenolens.cli.image_inputs import read_images

    outside = tmp_path / "outside.npy"
    np.save(outside, np.ones((2, 8, 8), dtype=np.float32))
    folder = tmp_path / "m"
    folder.mkdir()
    np.save(folder / "inside.npy", np.zeros((2, 8, 8), dtype=np.float32))
    manifest = folder / "labels.csv"
    manifest.write_text("path,label\ninside.npy,A\n../outside.npy,B\n")
    with pytest.raises(PhenolensError, match="leaves the manifest's folder"):
        read_images(None, None, manifest)
    images = read_images(None, None, manifest, allow_outside_paths=True)
    assert len(images) == 2 and images.class_names == ["A", "B"]


def _every_missing_token_table(path):
    from pandas._libs.parsers import STR_NA_VALUES

    tokens = sorted(STR_NA_VALUES) + ["Mitosis", "0.5"]
    text = "label,path,value,note\n" + "".join(f"{t},{t},{t},{t}\n" for t in tokens) + "a,b,1.5,x\n"
    path.write_text(text)
    return path


def test_read_csv_as_written_agrees_with_pandas_read_twice(tmp_path):
    """The oracle is the former two reads: the literal columns as text, the others as pandas reads them."""
    from phenolens.data.readers import read_csv_as_written

    path = _every_missing_token_table(tmp_path / "t.csv")
    expected = pd.read_csv(path)
    expected[["label", "path"]] = pd.read_csv(path, usecols=["label", "path"], dtype=str, keep_default_na=False)[["label", "path"]]
    table = read_csv_as_written(path, ["label", "path", "absent"])
    pd.testing.assert_frame_equal(table, expected)
    assert table["label"].iloc[0] == "" and table["value"].isna().sum() == len(table) - 3  # every token but 0.5, Mitosis, 1.5


def test_read_csv_as_written_keeps_a_callers_column_types_beside_its_own(tmp_path):
    """`_read_csv` passes the identifier columns' text type while other columns are kept as written: both apply."""
    from phenolens.data.readers import read_csv_as_written

    path = tmp_path / "t.csv"
    path.write_text("label,Metadata_Plate,dose\nNA,0001,0.5\nMitosis,0002,NA\n")
    table = read_csv_as_written(path, ["label"], dtype={"Metadata_Plate": str})
    assert table["label"].tolist() == ["NA", "Mitosis"] and table["Metadata_Plate"].tolist() == ["0001", "0002"]
    assert table["dose"].iloc[0] == 0.5 and pd.isna(table["dose"].iloc[1])


def test_read_csv_as_written_parses_the_file_once(tmp_path, monkeypatch):
    from phenolens.data import readers

    path = _every_missing_token_table(tmp_path / "t.csv")
    parses, read_csv = [], pd.read_csv
    monkeypatch.setattr(readers.pd, "read_csv", lambda *a, **k: parses.append(k.get("nrows")) or read_csv(*a, **k))
    readers.read_csv_as_written(path, ["label"])
    assert [rows for rows in parses if rows != 0] == [None]  # one parse of the rows (and, at most, of the header alone)


def test_tab_separated_profile_tables_are_read_like_their_csv_and_a_misnamed_one_is_named(tmp_path):
    """A .tsv profile table was read as one comma-separated column and refused with "missing metadata column
    'Metadata_Plate'"; .tsv/.tsv.gz are now read as tab-separated (as `profile aggregate --platemap` reads a TSV plate map),
    and tab-separated text named .csv is refused as such, not as a missing column."""
    from phenolens.profiling.plates import study_shards

    table = pd.DataFrame({"Metadata_Plate": ["P1", "P1", "P2"], "Metadata_Well": ["A01", "A02", "A01"], "f0": [0.5, -1.0, 2.0], "f1": [1, 2, 3]})
    table.to_csv(tmp_path / "wells.csv", index=False)
    expected = read_profiles(tmp_path / "wells.csv")
    for name in ("wells.tsv", "wells.tsv.gz", "wells.TSV"):
        table.to_csv(tmp_path / name, sep="\t", index=False)
        pd.testing.assert_frame_equal(read_profiles(tmp_path / name), expected)
    table.to_csv(tmp_path / "tabs.csv", sep="\t", index=False)
    with pytest.raises(PhenolensError, match=r"tabs\.csv: tab-separated, but read as comma-separated; name it \.tsv"):
        read_profiles(tmp_path / "tabs.csv")
    folder = tmp_path / "study"
    folder.mkdir()
    table.to_csv(folder / "plates.tsv.gz", sep="\t", index=False)
    assert [shard.path for shard in study_shards([folder], [])] == [str(folder / "plates.tsv.gz")]
