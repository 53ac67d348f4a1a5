"""Scoring a screen: the chunk reader (folders, manifests, Zarr), bad files, streamed predict and explain,
kill-and-resume and a 2-process Dask cluster all give the single-process, in-memory answers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import hypothesis
import numpy as np
import pandas as pd
import pytest
import tifffile

from phenolens.cli.main import run
from phenolens.core.errors import PhenolensError
from phenolens.data.chunks import ImageSource, auto_chunk_size, open_image_source
from phenolens.explain.attribution import AttributionSettings, inputs_per_pass, occlusion_geometry

TINY = ["--width", "0.125", "--blocks", "1,1", "--stem-stride", "1", "--epochs", "1", "--batch-size", "8", "--no-pseudo-labels"]


def _screen(root, per_class: int = 8, size: int = 16, seed: int = 0):
    """Two classes of 2-channel TIFF wells, the reporter spot inside or beside the 'nucleus'; wells w0..w3."""
    rng = np.random.default_rng(seed)
    for label in ("inside", "outside"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 30, size=(2, size, size)).astype(np.uint16)
            image[1, 5:9, 5:9] += 200
            image[0, slice(5, 9) if label == "inside" else slice(0, 3), 5:9] += 200
            tifffile.imwrite(root / label / f"w{i % 4}_{i}.tif", image)
    return root


@pytest.fixture(scope="module")
def screen(tmp_path_factory):
    root = tmp_path_factory.mktemp("screen")
    folder = _screen(root / "wells")
    model = root / "model"
    assert run(["train", "--folder", str(folder), "--channels", "GFP,DNA", "--out", str(model), *TINY]) == 0
    return folder, model


def _manifest(folder):
    rows = [{"path": str(p.relative_to(folder)), "label": p.parent.name, "well": p.name.split("_")[0]} for p in sorted(folder.glob("*/*.tif"))]
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


def _zarr(folder, store):
    import zarr

    paths = sorted(folder.glob("*/*.tif"))
    group = zarr.open_group(str(store), mode="w")
    group.create_array("images", data=np.stack([tifffile.imread(p) for p in paths]), chunks=(4, 2, 16, 16))
    group.attrs["channel_names"] = ["GFP", "DNA"]
    meta = {"source": [str(p) for p in paths], "label": [p.parent.name for p in paths], "well": [p.name.split("_")[0] for p in paths]}
    pd.DataFrame(meta).to_parquet(store / "metadata.parquet")
    return store


def test_folder_manifest_and_zarr_chunks_read_the_same_images(screen, tmp_path):
    folder, _ = screen
    sources = [
        open_image_source(folder=folder, channel_names=["GFP", "DNA"]).scan(),
        open_image_source(manifest=_manifest(folder), channel_names=["GFP", "DNA"]).scan(),
        open_image_source(zarr=_zarr(folder, tmp_path / "wells.zarr")).scan(),
    ]
    expected = np.stack([tifffile.imread(p) for p in sorted(folder.glob("*/*.tif"))])
    for source in sources:
        assert len(source) == 16 and source.largest_side == 16 and source.channel_names == ["GFP", "DNA"]
        chunks = source.chunks(5)
        assert [len(c) for c in chunks] == [5, 5, 5, 1] and [c.start for c in chunks] == [0, 5, 10, 15]
        images = [chunk.read()[0] for chunk in chunks]
        assert np.array_equal(np.concatenate([np.stack(list(i.images)) for i in images]), expected), source.kind
        assert list(np.concatenate([i.labels for i in images])) == [0] * 8 + [1] * 8
    assert auto_chunk_size(2, 64) == 1024 and auto_chunk_size(2, 348) == 34 and auto_chunk_size(3, 4096) == 16


@pytest.mark.parametrize("labels", ["nullable", "arrow"])
def test_integer_labels_of_a_zarr_metadata_table_name_the_same_classes_in_parquet_as_in_csv(tmp_path, labels):
    """A metadata table says the same thing as CSV or parquet: integer class labels with unlabelled images among them
    are classes '0' and '1' either way. From parquet they once crashed (pandas' nullable Int64 refused the empty
    string given to the missing labels) or became classes '0.0' and '1.0' (pandas reads int64 with nulls as floats)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zarr

    pixels = np.random.default_rng(0).uniform(size=(6, 2, 8, 8)).astype(np.float32)
    table = pd.DataFrame({"label": pd.array([0, 1, 0, 1, None, None], dtype="Int64"), "well": ["w0", "w1", "w0", "w1", "w2", "w2"]})
    sources = {}
    for kind in ("csv", "parquet"):
        store = tmp_path / f"{kind}.zarr"
        zarr.open_group(str(store), mode="w").create_array("images", data=pixels)
        if kind == "csv":
            table.to_csv(store / "metadata.csv", index=False)
        elif labels == "nullable":
            table.to_parquet(store / "metadata.parquet", index=False)
        else:  # written by another tool: no pandas metadata, int64 with nulls
            written = pa.table({"label": pa.array([0, 1, 0, 1, None, None], pa.int64()), "well": list(table["well"])})
            pq.write_table(written, store / "metadata.parquet")
        sources[kind] = open_image_source(zarr=store)
    for source in sources.values():
        assert source.class_names == ["0", "1"] and list(source.labels) == [0, 1, 0, 1, -1, -1]


def test_bad_files_are_one_line_before_any_output_or_skipped_with_a_reason(screen, tmp_path, capsys):
    folder, model = screen
    bad = tmp_path / "bad"
    _screen(bad)
    (bad / "inside" / "w0_0.tif").write_bytes(b"not a tiff at all")
    whole = (bad / "inside" / "w1_1.tif").read_bytes()
    (bad / "inside" / "w1_1.tif").write_bytes(whole[: len(whole) // 2])  # truncated: the header is fine, the pixels are not
    tifffile.imwrite(bad / "outside" / "w2_2.tif", np.zeros((3, 16, 16), np.uint16))  # a third channel
    out = tmp_path / "out"
    for command in (["images", "predict"], ["explain"]):
        assert run([*command, str(model), "--folder", str(bad), "--channels", "GFP,DNA", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "w0_0.tif" in err and "Traceback" not in err, err
        assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))
    assert run(["images", "predict", str(model), "--folder", str(bad), "--channels", "GFP,DNA", "--out", str(out), "--skip-bad"]) == 0
    skipped = pd.read_csv(out / "skipped.csv")
    assert [name.rsplit("/", 1)[-1] for name in skipped["source"]] == ["w0_0.tif", "w1_1.tif", "w2_2.tif"]
    assert "truncated" in skipped["reason"][1] and "3 channels but 2" in skipped["reason"][2]
    assert len(pd.read_parquet(out / "predictions.parquet")) == 13 and json.loads((out / "metrics.json").read_text())["n_skipped"] == 3


def test_streamed_predict_equals_in_memory_predict_for_folders_manifests_and_zarr(screen, tmp_path):
    from phenolens.data import read_image_folder
    from phenolens.training import ImageClassifier, ImagePredictionSettings, predict

    folder, model = screen
    classifier = ImageClassifier.load(model)
    expected = predict(classifier, read_image_folder(folder, ["GFP", "DNA"]), ImagePredictionSettings(embeddings=True))
    inputs = {
        "folder": ["--folder", str(folder)],
        "manifest": ["--manifest", str(_manifest(folder))],
        "zarr": ["--zarr", str(_zarr(folder, tmp_path / "z.zarr"))],
    }
    for kind, given in inputs.items():
        out = tmp_path / kind
        assert run(["images", "predict", str(model), *given, "--channels", "GFP,DNA", "--out", str(out), "--chunk-size", "5", "--embeddings"]) == 0
        table = pd.read_parquet(out / "predictions.parquet")
        assert np.array_equal(table[["p_inside", "p_outside"]].to_numpy(), expected.table[["p_inside", "p_outside"]].to_numpy()), kind
        assert list(table["predicted"]) == list(expected.table["predicted"]) and list(table["label"]) == list(expected.table["label"])
        embedded = pd.read_parquet(out / "embeddings.parquet").filter(like="e_").to_numpy()
        assert np.allclose(embedded, expected.embeddings.filter(like="e_").to_numpy(), atol=1e-6)  # batches of 5 vs 16: float32 rounding
        assert len(list((out / "predictions.parquet").glob("part-*.parquet"))) == 4


def test_a_screen_whose_first_chunk_is_unlabelled_reads_back_as_one_table(screen, tmp_path):
    """Control wells labelled, the first chunk's images not: the parts' label column is empty in the first part only."""
    folder, model = screen
    rows = [
        {"path": str(p.relative_to(folder)), "label": "" if i < 6 else p.parent.name, "well": p.name.split("_")[0]}
        for i, p in enumerate(sorted(folder.glob("*/*.tif")))
    ]
    pd.DataFrame(rows).to_csv(folder / "first-unlabelled.csv", index=False)
    out = tmp_path / "out"
    given = ["--manifest", str(folder / "first-unlabelled.csv"), "--channels", "GFP,DNA", "--chunk-size", "5"]
    assert run(["images", "predict", str(model), *given, "--out", str(out)]) == 0
    table = pd.read_parquet(out / "predictions.parquet")
    assert table["label"].isna().tolist() == [True] * 6 + [False] * 10
    assert table["label"][6:].tolist() == [p.parent.name for p in sorted(folder.glob("*/*.tif"))][6:]


def _undecodable(path):
    """Rewrite a TIFF compressed, its compressed pixels zeroed: the header passes the scan, decoding fails."""
    tifffile.imwrite(path, tifffile.imread(path), compression="zlib")
    with tifffile.TiffFile(path) as tiff:
        offset, count = tiff.pages[0].dataoffsets[0], tiff.pages[0].databytecounts[0]
    data = bytearray(path.read_bytes())
    data[offset : offset + count] = bytes(count)
    path.write_bytes(bytes(data))


def test_an_explained_screen_whose_first_chunk_cannot_be_decoded_keeps_every_row_and_writes_its_report(screen, tmp_path):
    """--skip-bad with the first chunk's 3 images undecodable: that chunk's part has no columns (the finished
    per_image.parquet read back without any), and the randomisation check had no image left (the report stopped on None)."""
    _, model = screen
    bad = _screen(tmp_path / "bad")
    for path in sorted(bad.glob("*/*.tif"))[:3]:
        _undecodable(path)
    out = tmp_path / "out"
    args = ["explain", str(model), "--folder", str(bad), "--channels", "GFP,DNA", "--chunk-size", "3", "--images", "all", "--skip-bad"]
    assert run([*args, "--methods", "gradcam", "--check-images", "2", "--sanity-images", "1", "--out", str(out)]) == 0
    rows = pd.read_parquet(out / "per_image.parquet")
    assert len(rows) == 13 and {"source", "label", "predicted"} <= set(rows.columns)
    assert len(pd.read_csv(out / "skipped.csv")) == 3


def test_a_predicted_screen_whose_first_chunk_cannot_be_decoded_skips_it(screen, tmp_path):
    """--skip-bad with a chunk none of whose images decodes: it stopped with a torch.cat traceback."""
    _, model = screen
    bad = _screen(tmp_path / "bad")
    for path in sorted(bad.glob("*/*.tif"))[:3]:
        _undecodable(path)
    out = tmp_path / "out"
    args = ["images", "predict", str(model), "--folder", str(bad), "--channels", "GFP,DNA", "--chunk-size", "3", "--skip-bad", "--embeddings"]
    assert run([*args, "--out", str(out)]) == 0
    predictions, embeddings = pd.read_parquet(out / "predictions.parquet"), pd.read_parquet(out / "embeddings.parquet")
    assert len(predictions) == len(embeddings) == 13 and predictions["p_inside"].dtype == np.float64
    assert predictions["source"].tolist() == [str(p) for p in sorted(bad.glob("*/*.tif"))[3:]] == embeddings["source"].tolist()
    assert json.loads((out / "metrics.json").read_text())["n_skipped"] == 3


def test_controls_give_z_factors_and_hits_of_a_known_screen():
    from phenolens.training.prediction import PREDICTED, control_readout, summarise
    from phenolens.training.settings import ImagePredictionSettings

    # 6 control wells with 10-30 % 'dead'; well T1 is 90 % dead (a hit), T2 like the controls.
    shares = {"C1": 1, "C2": 2, "C3": 3, "C4": 1, "C5": 2, "C6": 3, "T1": 9, "T2": 2}
    rows = [
        {"well": w, "kind": "dmso" if w.startswith("C") else "drug", PREDICTED: "dead" if i < k else "live", "label": None}
        for w, k in shares.items()
        for i in range(10)
    ]
    table = pd.DataFrame(rows)
    for name in ("dead", "live"):
        table[f"p_{name}"] = (table[PREDICTED] == name).astype(float)
    settings = ImagePredictionSettings(group_by="well", controls="kind == 'dmso'", fdr=0.05)
    groups, metrics = summarise([table.iloc[:37], table.iloc[37:]], ["dead", "live"], settings)
    assert list(groups["well"]) == list(shares) and list(groups["n_images"]) == [10] * 8
    assert np.allclose(groups["fraction_dead"], [k / 10 for k in shares.values()]) and groups["control"].sum() == 6
    reference = np.array([0.1, 0.2, 0.3, 0.1, 0.2, 0.3])
    z = (0.9 - reference.mean()) / reference.std(ddof=1)
    assert np.isclose(groups.loc[groups.well == "T1", "z_dead"].item(), z)
    assert groups["hit_dead"].tolist() == [False] * 6 + [True, False] and metrics["hits"] == {"dead": 1, "live": 1}
    treated = np.array([0.9, 0.2])
    expected = 1 - 3 * (treated.std(ddof=1) + reference.std(ddof=1)) / abs(treated.mean() - reference.mean())
    assert np.isclose(metrics["z_factor"]["dead"], expected) and metrics["n_control_groups"] == 6
    with pytest.raises(PhenolensError, match="two or more"):
        control_readout(groups.assign(control=[True] + [False] * 7), ["dead"], 0.05)


def test_predict_controls_are_checked_before_any_work(screen, tmp_path, capsys):
    folder, model = screen
    manifest = _manifest(folder)
    out = tmp_path / "out"
    args = ["images", "predict", str(model), "--manifest", str(manifest), "--channels", "GFP,DNA", "--out", str(out)]
    assert run([*args, "--controls", "well == 'w0'"]) == 2 and "needs --group-by" in capsys.readouterr().err
    one_file = str(folder / "inside" / "w0_0.tif")
    assert run([*args, "--group-by", "well", "--controls", f"source == '{one_file}'"]) == 2 and "both control and other" in capsys.readouterr().err
    assert run([*args, "--group-by", "well", "--controls", "well in ['w0', 'w1']"]) == 0
    groups = pd.read_parquet(out / "groups.parquet")
    assert groups["control"].tolist() == [True, True, False, False] and {"z_inside", "q_inside", "hit_inside"} <= set(groups.columns)


def _kill_after(parts: int, args: list[str]) -> subprocess.CompletedProcess:
    """Run the CLI in a child that SIGKILLs itself once `parts` row parts of the output are written."""
    script = textwrap.dedent(
        f"""
        import os, signal
        from phenolens.core import parts
        original, written = parts.PartStore.write_table, []
        def write_then_die(self, index, frame):
            path = original(self, index, frame)
            if self.folder.name in ("predictions.parquet", "per_image.parquet"):
                written.append(index)
                if len(written) == {parts}:
                    os.kill(os.getpid(), signal.SIGKILL)
            return path
        parts.PartStore.write_table = write_then_die
        from phenolens.cli.main import run
        run({args!r})
        """
    )
    return subprocess.run([sys.executable, "-c", script], capture_output=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def _maps(out) -> dict[str, np.ndarray]:
    import zarr

    group = zarr.open_group(str(out / "maps.zarr"), mode="r")
    return {name: group[name][:] for name in group.array_keys()}


@pytest.mark.slow
def test_a_killed_predict_and_explain_resume_to_the_uninterrupted_output(screen, tmp_path, capsys, caplog):
    folder, model = screen
    commands = {
        "predict": ["images", "predict", str(model), "--folder", str(folder), "--channels", "GFP,DNA", "--chunk-size", "3", "--group-by", "source"],
        "explain": ["explain", str(model), "--folder", str(folder), "--channels", "GFP,DNA", "--chunk-size", "3", "--images", "all"]
        + ["--methods", "gradcam,ig,occlusion", "--n-steps", "4", "--check-images", "5", "--sanity-images", "3", "--nucleus-channel", "DNA"],
    }
    for name, args in commands.items():
        whole, resumed = tmp_path / f"{name}-whole", tmp_path / f"{name}-resumed"
        assert run([*args, "--out", str(whole)]) == 0
        child = _kill_after(2, [*args, "--out", str(resumed)])
        assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
        assert not resumed.exists() and len(list(tmp_path.glob(f".{resumed.name}.partial-*"))) == 1
        capsys.readouterr()
        assert run([*args, "--out", str(resumed)]) == 2 and "--resume" in capsys.readouterr().err
        caplog.clear()
        assert run([*args, "--out", str(resumed), "--resume"]) == 0
        progress = caplog.text
        assert "chunk 1 of 6" not in progress and "chunk 2 of 6" not in progress and "chunk 3 of 6" in progress, progress  # done chunks are skipped
        table = "predictions.parquet" if name == "predict" else "per_image.parquet"
        pd.testing.assert_frame_equal(pd.read_parquet(resumed / table), pd.read_parquet(whole / table))
        if name == "explain":
            pd.testing.assert_frame_equal(pd.read_parquet(resumed / "checks.parquet"), pd.read_parquet(whole / "checks.parquet"))
            first, second = _maps(whole), _maps(resumed)
            assert first.keys() == second.keys() == {"gradcam", "integrated_gradients", "occlusion", "nucleus_masks"}
            assert all(np.array_equal(first[k], second[k]) for k in first)
            metrics = [json.loads((o / "metrics.json").read_text()) for o in (whole, resumed)]
            assert metrics[0]["faithfulness"] == metrics[1]["faithfulness"] and metrics[0]["check_images"] == 5
        else:
            pd.testing.assert_frame_equal(pd.read_parquet(resumed / "groups.parquet"), pd.read_parquet(whole / "groups.parquet"))
        assert not list(tmp_path.glob(".*.partial-*"))


def test_resume_refuses_the_channels_given_in_another_order(screen, tmp_path, capsys):
    """The chunks done before the kill read GFP,DNA; resumed with DNA,GFP the rest would read the channels swapped."""
    folder, model = screen
    args = ["images", "predict", str(model), "--folder", str(folder), "--chunk-size", "3", "--out", str(tmp_path / "run")]
    child = _kill_after(2, [*args, "--channels", "GFP,DNA"])
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    capsys.readouterr()
    assert run([*args, "--channels", "DNA,GFP", "--resume"]) == 2
    assert "had other options" in capsys.readouterr().err and not (tmp_path / "run").exists()
    assert run([*args, "--channels", "GFP,DNA", "--resume"]) == 0


@pytest.mark.slow
def test_a_two_worker_dask_cluster_equals_the_serial_run(screen, tmp_path):
    folder, model = screen
    explain = ["explain", str(model), "--folder", str(folder), "--channels", "GFP,DNA", "--chunk-size", "4", "--images", "all"]
    explain += ["--methods", "gradcam,ig", "--n-steps", "4", "--check-images", "6", "--sanity-images", "3"]
    predict = ["images", "predict", str(model), "--folder", str(folder), "--channels", "GFP,DNA", "--chunk-size", "4", "--group-by", "source"]
    for args, table in ((predict, "predictions.parquet"), (explain, "per_image.parquet")):
        serial, dask = tmp_path / f"serial-{table}", tmp_path / f"dask-{table}"
        assert run([*args, "--out", str(serial)]) == 0
        assert run([*args, "--out", str(dask), "--scheduler", "local:2"]) == 0
        pd.testing.assert_frame_equal(pd.read_parquet(dask / table), pd.read_parquet(serial / table))
        assert "LocalCluster of 2" in json.loads((dask / "run.json").read_text())["executor"]
        if table == "per_image.parquet":
            first, second = _maps(serial), _maps(dask)
            assert all(np.abs(first[k] - second[k]).max() <= 1e-6 for k in first)
            pd.testing.assert_frame_equal(pd.read_parquet(dask / "checks.parquet"), pd.read_parquet(serial / "checks.parquet"), atol=1e-6)


def test_occlusion_and_passes_scale_with_the_image():
    default = AttributionSettings()
    assert occlusion_geometry(default, 64) == (8, 4) and occlusion_geometry(default, 18) == (8, 4)
    assert occlusion_geometry(default, 348) == (44, 22) and occlusion_geometry(default, 6) == (6, 3)
    assert occlusion_geometry(AttributionSettings(window=5, stride=2), 348) == (5, 2)
    windows = ((348 - 44) // 22 + 1) ** 2
    assert 150 <= windows <= 250  # ~7,500 with the old fixed 8 px window and 4 px stride
    assert inputs_per_pass(512, 64) == 512 and inputs_per_pass(512, 20) == 512 and inputs_per_pass(512, 348) == 17
    assert inputs_per_pass(512, 348, copies=34) == 1 and inputs_per_pass(512, 64, copies=34) == 15


def test_memory_source_and_probe_check_names_before_reading(screen):
    from phenolens.data import read_image_folder
    from phenolens.training import ImageClassifier

    folder, model = screen
    images = read_image_folder(folder, ["GFP", "DNA"])
    source = ImageSource.from_images(images)
    assert source.scan() is source and np.array_equal(source.chunks(10)[1].read()[0].images, images.images[10:])
    classifier = ImageClassifier.load(model)
    classifier.conform(source.probe())
    with pytest.raises(PhenolensError, match="channels are A, B"):
        classifier.conform(open_image_source(folder=folder, channel_names=["A", "B"]).probe())


def _undecodable(path) -> None:
    """Rewrite `path` zlib-compressed, then overwrite its compressed strips with garbage of the same length: the
    header (shape, channels, byte counts) still passes the scan, decoding fails."""
    tifffile.imwrite(path, tifffile.imread(path), compression="zlib")
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tiff:
        strips = list(zip(tiff.pages[0].dataoffsets, tiff.pages[0].databytecounts))
    for offset, count in strips:
        data[offset : offset + count] = b"\xff" * count
    path.write_bytes(bytes(data))


def test_an_image_that_fails_to_decode_after_the_scan_is_an_error_or_skipped_without_nan_rows(screen, tmp_path, capsys):
    import zarr

    _, model = screen
    bad = _screen(tmp_path / "bad")
    _undecodable(bad / "inside" / "w1_5.tif")  # the 4th image: first of the second chunk of 3
    source = open_image_source(folder=bad, channel_names=["GFP", "DNA"]).scan()
    assert len(source) == 16 and source.skipped.empty  # the header passed
    commands = {
        "predict": ["images", "predict", str(model), "--folder", str(bad), "--channels", "GFP,DNA", "--chunk-size", "3"],
        "explain": ["explain", str(model), "--folder", str(bad), "--channels", "GFP,DNA", "--chunk-size", "3", "--images", "all"]
        + ["--methods", "gradcam,ig", "--n-steps", "4", "--check-images", "0", "--sanity-images", "3"],
    }
    for name, args in commands.items():
        out = tmp_path / name
        assert run([*args, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "w1_5.tif" in err and "Traceback" not in err, err
        assert not out.exists()  # nothing finished-looking
        assert run([*args, "--out", str(out), "--skip-bad", "--overwrite"]) == 0
        skipped = pd.read_csv(out / "skipped.csv")
        assert len(skipped) == 1 and skipped["source"][0].endswith("inside/w1_5.tif") and "cannot read image" in skipped["reason"][0]
        assert json.loads((out / "metrics.json").read_text())["n_skipped"] == 1
        if name == "predict":
            predictions = pd.read_parquet(out / "predictions.parquet")
            assert len(predictions) == 15 and not predictions.filter(like="p_").isna().any().any()
            continue
        rows, checks = pd.read_parquet(out / "per_image.parquet"), pd.read_parquet(out / "checks.parquet")
        assert list(rows["map_index"]) == list(range(15)) and not rows["source"].str.endswith("inside/w1_5.tif").any()
        assert sorted(checks["map_index"]) == list(range(15)) and not checks.filter(like="auc").isna().any().any()
        assert not rows.drop(columns=rows.filter(like="nucleus").columns).isna().any().any()
        group = zarr.open_group(str(out / "maps.zarr"), mode="r")
        for method in ("gradcam", "integrated_gradients"):
            maps = group[method][:]
            assert maps.shape == (15, 2, 16, 16) and np.isfinite(maps).all(), method
        assert json.loads((out / "metrics.json").read_text())["n_images"] == 15


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(cuts=hypothesis.strategies.lists(hypothesis.strategies.integers(0, 40), max_size=6))
def test_the_readout_of_a_screen_cut_into_any_chunks_equals_its_readout_in_one(cuts):
    """`summarise` adds chunks up: groups, Z-factors, hits and labelled metrics do not depend on where chunks are cut."""
    from phenolens.training.prediction import LABEL, PREDICTED, summarise
    from phenolens.training.settings import ImagePredictionSettings

    classes, rng = ["a", "b", "c"], np.random.default_rng(0)
    wells = rng.choice([f"w{i}" for i in range(8)], 40)
    table = pd.DataFrame({"well": wells, "kind": np.where(np.isin(wells, ["w0", "w1", "w2"]), "control", "drug")})
    proba = rng.dirichlet(np.ones(3), 40)
    for k, name in enumerate(classes):
        table[f"p_{name}"] = proba[:, k]
    table[PREDICTED] = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    table[LABEL] = pd.Series(np.where(rng.random(40) < 0.5, None, np.asarray(classes, dtype=object)[rng.integers(0, 3, 40)]), dtype=object)
    options = ImagePredictionSettings(group_by="well", controls="kind == 'control'")
    whole_groups, whole_metrics = summarise([table], classes, options)
    bounds = sorted(set(cuts))
    chunks = [table.iloc[start:end].reset_index(drop=True) for start, end in zip([0, *bounds], [*bounds, 40])]
    groups, metrics = summarise(chunks, classes, options)
    pd.testing.assert_frame_equal(groups, whole_groups)
    assert metrics == whole_metrics and metrics["n_groups"] == 8


def _kill_at(module: str, function: str, args: list[str]) -> subprocess.CompletedProcess:
    """Run the CLI in a child that SIGKILLs itself when `module.function` is called."""
    script = textwrap.dedent(
        f"""
        import importlib, os, signal
        setattr(importlib.import_module({module!r}), {function!r}, lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL))
        from phenolens.cli.main import run
        run({args!r})
        """
    )
    return subprocess.run([sys.executable, "-c", script], capture_output=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


@pytest.mark.slow
def test_a_run_killed_after_its_last_chunk_resumes_with_every_skipped_image(screen, tmp_path):
    """The skipped images' parts were deleted before the report's sample was drawn (predict) or the report built
    (explain): a kill there left a resumable folder without them, and the resumed run wrote no skipped.csv, n_skipped 0."""
    _, model = screen
    bad = _screen(tmp_path / "bad")
    _undecodable(bad / "inside" / "w1_5.tif")  # passes the scan, fails in its chunk
    commands = {
        "predict": (["images", "predict", str(model)], "phenolens.training.prediction", "predicted_sample"),
        "explain": (
            ["explain", str(model), "--images", "all", "--methods", "gradcam", "--check-images", "0", "--sanity-images", "1"],
            "phenolens.report.attribution",
            "explanation_section",
        ),
    }
    for name, (command, module, function) in commands.items():
        args = [*command, "--folder", str(bad), "--channels", "GFP,DNA", "--chunk-size", "3", "--skip-bad"]
        whole, resumed = tmp_path / f"{name}-whole", tmp_path / f"{name}-resumed"
        assert run([*args, "--out", str(whole)]) == 0
        child = _kill_at(module, function, [*args, "--out", str(resumed)])
        assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
        assert run([*args, "--out", str(resumed), "--resume"]) == 0
        pd.testing.assert_frame_equal(pd.read_csv(resumed / "skipped.csv"), pd.read_csv(whole / "skipped.csv"))
        assert json.loads((resumed / "metrics.json").read_text())["n_skipped"] == 1, name
        assert sorted(p.name for p in resumed.iterdir()) == sorted(p.name for p in whole.iterdir())


def test_the_parts_of_a_store_are_read_one_at_a_time_in_shard_order_past_a_million_shards(tmp_path):
    """Names stop sorting as shards past 999,999 chunks (part-1234567 sorts before part-999999)."""
    from phenolens.core.parts import PartStore
    from phenolens.training.prediction import read_parts

    parts = PartStore(tmp_path / "table.parquet")
    for index in (1_234_567, 999_999, 7):
        parts.write_table(index, pd.DataFrame({"shard": [index]}))
    assert [path.name for path in parts.paths()] == ["part-000007.parquet", "part-999999.parquet", "part-1234567.parquet"]
    assert [int(frame["shard"][0]) for frame in read_parts(parts)] == [7, 999_999, 1_234_567]
