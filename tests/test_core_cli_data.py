"""`phenolens data show` and the demo's dataset summaries on the real data."""

from __future__ import annotations

import json


def test_data_show_bbbc013_writes_counts_and_report(cli, tmp_path):
    out = tmp_path / "X"
    status, stdout, _ = cli("data", "show", "bbbc013", "--out", str(out))
    assert status == 0, stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["class_counts"] == {"NoGFP": 59, "CytoplasmicGFP": 80, "NuclearGFP": 59, "Unknown": 596}
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "FKHR-GFP" in html
    assert (out / "figures" / "bbbc013_montage.png").stat().st_size > 10_000


def test_data_show_profiles_and_signals(cli, tmp_path):
    status, _, _ = cli("data", "show", "bbbc021-profiles", "--out", str(tmp_path / "p"))
    assert status == 0
    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert summary["n_wells"] == 632 and summary["n_features"] == 516 and summary["n_treatments"] == 104
    assert summary["counts_by_PertType"] == {"control": 330, "trt": 302}
    status, _, _ = cli("data", "show", "echo-pulses", "--out", str(tmp_path / "s"))
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["signals"]["reference_signal_ultem_water"]["samples"] == 424


def test_demo_datasets_step_covers_every_mirrored_dataset(cli, tmp_path):
    out = tmp_path / "demo"
    status, _, _ = cli("demo", "--only", "datasets", "--out", str(out))
    assert status == 0
    metrics = json.loads((out / "metrics.json").read_text())["datasets"]
    for name in ["bbbc021-profiles", "lincs-plate", "bbbc013", "mitocheck", "bbbc021-cells", "echo-pulses"]:
        assert name in metrics
        assert (out / "figures" / f"{name}_montage.png").is_file()
    assert metrics["mitocheck"]["n_images"] == 3277
    recorded = set(json.loads((out / "run.json").read_text())["datasets"])  # registry names, not step names
    assert recorded - {"fashion-mnist"} == {"bbbc021-profiles", "lincs-plate", "bbbc013", "mitocheck", "bbbc021-cells", "echo-pulses"}
    html = (out / "report.html").read_text()
    assert html.count("Profile montage") >= 2
    # a second demo into the same folder needs --overwrite (as `make demo` passes), and then replaces it
    status, _, stderr = cli("demo", "--only", "datasets", "--out", str(out))
    assert status == 2 and "--overwrite" in stderr
    assert cli("demo", "--only", "datasets", "--out", str(out), "--overwrite")[0] == 0 and (out / "run.json").is_file()


def test_data_show_never_writes_over_its_input_or_a_foreign_folder(cli, tmp_path):
    table = tmp_path / "plate.csv"
    table.write_text("Metadata_Well,f1\nA01,1.0\nA02,2.0\n")
    status, _, stderr = cli("data", "show", str(table), "--out", str(tmp_path), "--overwrite")
    assert status == 2 and "contains the input" in stderr and table.is_file()
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    status, _, stderr = cli("data", "show", str(table), "--out", str(foreign), "--overwrite")
    assert status == 2 and "not written by phenolens" in stderr and (foreign / "keep.txt").read_text() == "mine"


def test_data_show_on_one_image_file_says_what_to_give(cli, tmp_path):
    import numpy as np
    import tifffile

    tifffile.imwrite(tmp_path / "one.tif", np.zeros((2, 8, 8), dtype=np.uint8))
    status, _, stderr = cli("data", "show", tmp_path / "one.tif", "--out", tmp_path / "out")
    assert status == 2 and "one.tif: a single image; give a folder with one sub-folder of images per class" in stderr
    assert not (tmp_path / "out").exists()


def test_data_list_never_downloads_or_decodes_a_dataset(cli, tmp_path, monkeypatch):
    """It resolved every dataset's first file to say whether it was local: a download (or a BBBC013 decoding) per dataset."""
    import pooch

    from phenolens.data.registry import registry

    downloads = []
    monkeypatch.delenv("PHENOLENS_DATA_MIRROR", raising=False)
    monkeypatch.setenv("PHENOLENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(pooch, "retrieve", lambda url, **options: downloads.append(url) or str(tmp_path / "never"))
    status, stdout, _ = cli("data", "list")
    assert status == 0 and downloads == [] and not (tmp_path / "cache").exists()
    rows = [line for line in stdout.splitlines() if any(f" {name} " in line for name in registry())]
    assert len(rows) == len(registry())
    assert all(" no " in line for line in rows if "fashion-mnist" not in line)  # fashion-mnist may sit in a system folder
