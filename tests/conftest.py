"""Shared fixtures: the data mirror must be configured (CI and the Makefile set it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

MIRROR = os.environ.get("PHENOLENS_DATA_MIRROR") or str(Path(__file__).resolve().parents[2] / "shared" / "data")
os.environ.setdefault("PHENOLENS_DATA_MIRROR", MIRROR)
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The real-data mirror folder (tests read real data from it, never copies in the repo)."""
    root = Path(os.environ["PHENOLENS_DATA_MIRROR"])
    if not (root / "MANIFEST.tsv").is_file():
        pytest.fail(f"PHENOLENS_DATA_MIRROR={root} does not hold the data mirror; set it to ../shared/data")
    return root


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """A private, empty PHENOLENS_CACHE for tests that must not see or fill the user's cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("PHENOLENS_CACHE", str(cache))
    return cache


@pytest.fixture
def cli(capsys):
    """Run the phenolens CLI in-process: returns (exit status, stdout, stderr)."""
    from phenolens.cli.main import run

    def invoke(*args: str) -> tuple[int, str, str]:
        status = run([str(a) for a in args])
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return invoke


SIGN_CLASSES = ["Interphase", "Prometaphase"]


@pytest.fixture(scope="session")
def sign_workspace(tmp_path_factory):
    """A class-folder of 2 x 12 real MitoCheck nuclei, a tiny classifier trained on it and a SIGN fit."""
    import numpy as np
    import torch

    from phenolens.cli.main import run
    from phenolens.data import load

    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    root = tmp_path_factory.mktemp("sign")
    mitocheck = load("mitocheck")
    for name in SIGN_CLASSES:
        (root / "crops" / name).mkdir(parents=True)
        for i, index in enumerate(np.flatnonzero(mitocheck.labels == mitocheck.class_names.index(name))[:12]):
            np.save(root / "crops" / name / f"{i:02d}.npy", mitocheck.images[index][:, 16:48, 16:48])
    folder = ["--folder", str(root / "crops"), "--channels", "H2B"]
    train = [
        "train",
        *folder,
        "--out",
        str(root / "model"),
        "--width",
        "0.125",
        "--blocks",
        "1,1",
        "--stem-stride",
        "1",
        "--epochs",
        "2",
        "--batch-size",
        "8",
    ]
    assert run(train) == 0
    base = ["sign", "fit", str(root / "model"), *folder, "--epochs", "1", "--validation-fraction", "0.5"]
    assert run([*base, "--layers", "stage1,stage2", "--words", "6,5", "--out", str(root / "fit")]) == 0
    torch.set_num_threads(threads)
    return root, folder, base


@pytest.fixture
def one_thread():
    """Tiny tensors: one torch thread avoids paying thread hand-offs on every small operation."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


from browser import browser_type_launch_args, watched_page  # noqa: E402, F401  (browser fixtures, see tests/browser.py)
