"""Integrity of the data mirror: sha256 on first use, remembered by (path, size, mtime) (issue 23)."""

from __future__ import annotations

import importlib
import json
import os
import shutil

import pytest

from phenolens.core.errors import PhenolensError
from phenolens.data.registry import VERIFIED_FILE, get_dataset

registry_module = importlib.import_module("phenolens.data.registry")  # `phenolens.data.registry` is also a function

RELATIVE = "reference_signal_ultem_water.txt"


@pytest.fixture
def temporary_mirror(tmp_path, mirror, monkeypatch, isolated_cache):
    """A mirror holding one real file of echo-pulses, and a process that has verified nothing yet."""
    dataset = get_dataset("echo-pulses")
    registered = dataset.file(RELATIVE)
    copy = tmp_path / "mirror" / registered.path
    copy.parent.mkdir(parents=True)
    shutil.copyfile(mirror / registered.path, copy)
    monkeypatch.setenv("PHENOLENS_DATA_MIRROR", str(tmp_path / "mirror"))
    monkeypatch.setattr(registry_module, "_verified", {})
    hashed = []
    real_sha256 = registry_module.sha256_of
    monkeypatch.setattr(registry_module, "sha256_of", lambda path: hashed.append(path) or real_sha256(path))
    return dataset, copy, hashed


def test_first_use_hashes_once_and_later_runs_use_the_cache(temporary_mirror, isolated_cache):
    dataset, copy, hashed = temporary_mirror
    assert dataset.resolve(RELATIVE) == copy and dataset.resolve(RELATIVE) == copy
    assert hashed == [copy]  # once per process
    (record,) = [json.loads(line) for line in (isolated_cache / VERIFIED_FILE).read_text().splitlines()]
    assert record["path"] == str(copy.resolve()) and record["sha256"] == dataset.file(RELATIVE).sha256
    registry_module._verified.clear()  # a new process: the record file answers
    assert dataset.resolve(RELATIVE) == copy and hashed == [copy]


def test_tampered_file_of_the_same_size_is_refused(temporary_mirror):
    dataset, copy, hashed = temporary_mirror
    dataset.resolve(RELATIVE)
    data = bytearray(copy.read_bytes())
    data[10] = ord("7") if data[10] != ord("7") else ord("8")
    copy.write_bytes(bytes(data))
    stat = copy.stat()
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(PhenolensError, match=rf"{copy}: sha256 differs from the registry's .*`phenolens data verify echo-pulses`"):
        dataset.resolve(RELATIVE)
    assert len(hashed) == 2


def test_file_of_another_size_is_refused_without_hashing(temporary_mirror):
    dataset, copy, hashed = temporary_mirror
    copy.write_bytes(copy.read_bytes() + b"\n")
    with pytest.raises(PhenolensError, match=rf"{copy}: [\d,]+ bytes but the registry says [\d,]+; .*phenolens data verify"):
        dataset.resolve(RELATIVE)
    assert hashed == []


def test_unwritable_cache_only_costs_a_rehash(temporary_mirror, monkeypatch, tmp_path):
    dataset, copy, hashed = temporary_mirror
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("PHENOLENS_CACHE", str(blocker / "cache"))
    assert dataset.resolve(RELATIVE) == copy and hashed == [copy]


def test_a_torn_record_line_only_costs_a_rehash(temporary_mirror, isolated_cache):
    dataset, copy, hashed = temporary_mirror
    isolated_cache.mkdir(parents=True)
    (isolated_cache / VERIFIED_FILE).write_text('{"path": "/x", "size"\n[1, 2]\n')
    assert dataset.resolve(RELATIVE) == copy and hashed == [copy]
    assert len((isolated_cache / VERIFIED_FILE).read_text().splitlines()) == 3
