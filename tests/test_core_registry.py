"""Dataset registry: entries, resolution order, offline errors, checksum verification."""

from __future__ import annotations

import shutil

import pytest

from phenolens.core.errors import PhenolensError
from phenolens.data.registry import get_dataset, registry, resolve_file, sha256_of

MIRRORED = ["bbbc021-profiles", "lincs-plate", "bbbc013", "mitocheck", "bbbc021-cells", "echo-pulses"]


def test_every_mirrored_dataset_is_registered_with_sources_and_checksums(mirror):
    datasets = registry()
    assert set(MIRRORED + ["fashion-mnist"]) <= set(datasets)
    manifest = {line.split("\t")[0]: line.split("\t")[2].strip() for line in (mirror / "MANIFEST.tsv").read_text().splitlines()[1:]}
    for name in MIRRORED:
        dataset = datasets[name]
        assert dataset.licence and dataset.citation and len(dataset.commit) == 40
        for registered in dataset.files:
            assert manifest[registered.path] == registered.sha256
            # every file is either downloadable at a pinned commit or derived/mirror-only by design
            assert registered.url is None or dataset.commit in registered.url or "lincs-cell-painting" in registered.url
    assert sum(len(datasets[n].files) for n in MIRRORED) == len(manifest)


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(PhenolensError, match="choose one of: .*bbbc013"):
        get_dataset("bbbc0013")


def test_mirror_comes_first_then_cache(mirror, isolated_cache, monkeypatch):
    dataset = get_dataset("echo-pulses")
    registered = dataset.file("reference_signal_ultem_water.txt")
    assert resolve_file(dataset, registered) == mirror / registered.path
    monkeypatch.delenv("PHENOLENS_DATA_MIRROR")
    cached = isolated_cache / registered.path
    cached.parent.mkdir(parents=True)
    shutil.copy(mirror / registered.path, cached)
    assert resolve_file(dataset, registered) == cached


def test_offline_without_mirror_names_the_variable_and_the_url(isolated_cache, monkeypatch):
    monkeypatch.delenv("PHENOLENS_DATA_MIRROR")

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr("pooch.retrieve", offline)
    dataset = get_dataset("bbbc021-profiles")
    with pytest.raises(PhenolensError) as error:
        dataset.resolve("BBBC021_v1_moa.csv")
    message = str(error.value)
    assert "PHENOLENS_DATA_MIRROR" in message and "https://raw.githubusercontent.com/cytomining/cytominergallery/" in message
    assert not (isolated_cache / "bbbc021-profiles" / "BBBC021_v1_moa.csv").exists()


def test_download_is_checked_against_sha256(isolated_cache, monkeypatch, mirror):
    """The download path hands pooch the registered sha256 and returns the fetched file."""
    monkeypatch.delenv("PHENOLENS_DATA_MIRROR")
    seen = {}

    def fake_retrieve(url, known_hash, fname, path, progressbar):
        seen.update(url=url, known_hash=known_hash)
        target = path / fname
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(mirror / "bbbc021-profiles" / fname, target)
        return str(target)

    monkeypatch.setattr("pooch.retrieve", fake_retrieve)
    path = get_dataset("bbbc021-profiles").resolve("BBBC021_v1_moa.csv")
    assert path == isolated_cache / "bbbc021-profiles" / "BBBC021_v1_moa.csv"
    assert seen["known_hash"] == "sha256:" + sha256_of(path)


def test_mirror_only_files_explain_why(isolated_cache, monkeypatch):
    monkeypatch.delenv("PHENOLENS_DATA_MIRROR")
    dataset = get_dataset("echo-pulses")
    with pytest.raises(PhenolensError, match="refuses to unpickle.*PHENOLENS_DATA_MIRROR"):
        dataset.resolve("phantom2_5MHz_F1inc_D0p25_sn_D5628_pn13_0504_s.npy")


def _copy_dataset(mirror, tmp_path, name):
    copy = tmp_path / "mirror"
    shutil.copytree(mirror / name, copy / name)
    return copy


def test_verify_passes_on_the_mirror_and_names_a_tampered_file(cli, mirror, tmp_path, monkeypatch, isolated_cache):
    status, out, _ = cli("data", "verify", "echo-pulses", "bbbc021-profiles")
    assert status == 0, out
    assert "echo-pulses: 7 ok, 0 mismatched, 0 missing" in out

    copy = _copy_dataset(mirror, tmp_path, "echo-pulses")
    monkeypatch.setenv("PHENOLENS_DATA_MIRROR", str(copy))
    tampered = copy / "echo-pulses" / "reference_signal_ultem_water.txt"
    data = bytearray(tampered.read_bytes())
    data[10] ^= 0x01
    tampered.write_bytes(bytes(data))
    status, out, _ = cli("data", "verify", "echo-pulses")
    assert status == 1
    assert f"MISMATCH echo-pulses: {tampered}" in out


def test_verify_flags_a_partially_missing_dataset(cli, mirror, tmp_path, monkeypatch, isolated_cache):
    copy = _copy_dataset(mirror, tmp_path, "echo-pulses")
    (copy / "echo-pulses" / "LICENSE").unlink()
    monkeypatch.setenv("PHENOLENS_DATA_MIRROR", str(copy))
    status, out, _ = cli("data", "verify", "echo-pulses")
    assert status == 1 and "MISSING echo-pulses: 1 of 7 files" in out
