"""Fuzzing every reader (issue 23): only PhenolensError may escape, in one line.

A small, derandomised example count per reader keeps this file to seconds in CI; the benchmark
`benchmarks/fuzz_readers.py` runs the same generators at >= 10,000 examples per reader and measures memory.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import fuzz_readers  # noqa: E402

EXAMPLES = 12


@pytest.fixture(autouse=True)
def small_pixel_limit(monkeypatch):
    monkeypatch.setenv("PHENOLENS_MAX_PIXELS", str(10**6))


@pytest.mark.parametrize("reader", list(fuzz_readers.READERS))
def test_only_phenolens_errors_escape(reader, one_thread):
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(fuzz_readers.READERS[reader].files())
    def read(files):
        fuzz_readers.read_one(reader, files)  # True (read) or False (refused in one line); anything else fails

    read()


def test_a_forged_npy_header_is_refused_without_allocating(tmp_path):
    import numpy as np

    from phenolens.core.errors import PhenolensError
    from phenolens.data import read_signal

    path = tmp_path / "forged.npy"
    np.save(path, np.zeros(4))
    path.write_bytes(path.read_bytes().replace(b"(4,)", b"(4000000000,)"))
    with pytest.raises(PhenolensError, match=f"{path}: cannot read the signal"):
        read_signal(path)


def test_a_run_record_whose_settings_are_not_a_list_is_refused(tmp_path):
    """Found by the fuzzer: `"settings": null` escaped as a TypeError from load_run."""
    record = fuzz_readers._run_record()
    record["run.json"]["settings"] = None
    files = {f"run/{name}": fuzz_readers.json.dumps(value).encode() for name, value in record.items()}
    assert fuzz_readers.read_one("run", files) is False
