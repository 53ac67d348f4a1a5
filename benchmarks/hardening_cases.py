"""Issue 23's hostile and careless inputs, each run through the `phenolens` command line as a user would.

    python benchmarks/hardening_cases.py            # prints the table: case, exit status, first line or traceback, left on disk
    python benchmarks/hardening_cases.py --check    # exit 1 on any traceback, exit status 1, wrong status or left-over
    python benchmarks/hardening_cases.py --only out --keep /tmp/cases   # cases whose name contains "out"; keep the folders

Each case runs ``python -m phenolens ...`` in a fresh process (PYTHONPATH = this checkout's src,
one thread, a private cache and HOME) in a folder of its own, next to shared inputs made once: a
folder of tiny two-channel crops, a tiny classifier trained on them, a synthetic profile table and
its `profile run`, a `sign fit` and a `counterfactual train`. After the case, the table says what it
left: its --out (expected only when it succeeds), staging folders (``.NAME.partial-*``) anywhere,
changed inputs, and any file a payload was meant to create. The peak memory (maxrss) of each
process is in the last column.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from targets import Targets, add_check_option  # noqa: E402 - the benchmarks folder is not a package

SRC = Path(__file__).resolve().parents[1] / "src"
TINY_IMAGES = ["--width", "0.125", "--blocks", "1,1", "--stem-stride", "1", "--batch-size", "8"]
PROFILE_COLUMNS = ["--controls", "Metadata_PertType == 'control'", "--treatment-column", "Metadata_Treatment"]
PROFILE_FAST = ["--moa-repeats", "2", "--classifiers", "lr", "--jobs", "1", "--null-repeats", "2", "--map-null-size", "100"]
PAYLOAD = "@pd.io.common.os.system('touch pwned') != 0 or Metadata_PertType == 'control'"


@dataclass
class Case:
    """One hostile or careless input.

    Attributes
    ----------
    name : str
        Short id (group/what).
    argv : callable
        ``argv(ws, here)`` -> the command line after ``phenolens`` (``here`` is the case's own folder).
    ok : set of int
        Exit statuses that count as handled (2: refused with one line; 0: the input is legitimate and handled).
    prepare : callable, optional
        ``prepare(ws, here)`` makes the case's own inputs.
    verify : callable, optional
        ``verify(ws, here, stderr)`` -> a problem sentence, or "" when the outcome is right.
    outputs : tuple of str
        Paths (relative to ``here``) a successful run may leave.
    env : dict
        Extra environment variables.
    """

    name: str
    argv: Callable[[Path, Path], list]
    ok: set[int] = field(default_factory=lambda: {2})
    prepare: Callable[[Path, Path], None] | None = None
    verify: Callable[[Path, Path, str], str] | None = None
    outputs: tuple[str, ...] = ("out",)
    env: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- running


def phenolens(argv: list, cwd: Path, ws: Path, env: dict[str, str] | None = None, timeout: float = 900) -> tuple[int, str, str, float]:
    """Run ``python -m phenolens argv`` in a fresh process; return (status, stdout, stderr, peak MiB)."""
    environment = {
        **os.environ,
        "PYTHONPATH": str(SRC),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PHENOLENS_CACHE": str(ws / "cache"),
        "HOME": str(ws / "home"),
        "MPLBACKEND": "Agg",
        "PYTHONWARNINGS": "default::RuntimeWarning",  # every RuntimeWarning is shown, so the table catches spam
        **(env or {}),
    }
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen([sys.executable, "-m", "phenolens", *map(str, argv)], cwd=cwd, env=environment, stdout=out, stderr=err)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
            time.sleep(0.05)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return process.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"), usage.ru_maxrss / 1024


def tree_digest(path: Path) -> str:
    """sha256 over the names and bytes of every file below `path` (or of the file)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(str(file.relative_to(path.parent)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def write_crops(root: Path, per_class: int = 8, size: int = 16, classes=("inside", "outside")) -> Path:
    """Two-channel crops of two classes (the GFP spot inside or outside the 'nucleus'), as .npy files."""
    import numpy as np

    rng = np.random.default_rng(0)
    for label in classes:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = rng.uniform(0, 20, size=(2, size, size)).astype(np.float32)
            image[0, (slice(5, 10) if label == classes[0] else slice(0, 3)), 5:10] += 200
            image[1, 5:10, 5:10] += 200
            np.save(root / label / f"{i}.npy", image)
    return root


def giant_tiff(path: Path, channels: int, side: int) -> Path:
    """A ~1 kB TIFF whose header declares `channels` x `side` x `side` pixels (a decompression bomb's header)."""
    import numpy as np
    import tifffile

    tifffile.imwrite(path, np.zeros((channels, 8, 8), dtype=np.uint8), compression="zlib")
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        for page in tif.pages:
            for name in ("ImageWidth", "ImageLength"):
                tag = page.tags[name]
                data[tag.valueoffset : tag.valueoffset + (2 if tag.dtype == 3 else 4)] = struct.pack("<H" if tag.dtype == 3 else "<I", side)
    path.write_bytes(bytes(data))
    return path


def edit_card(ws: Path, here: Path, change: Callable[[dict], None]) -> Path:
    """A copy of the tiny model whose model.json is changed by `change`."""
    model = here / "model"
    shutil.copytree(ws / "model", model)
    card = json.loads((model / "model.json").read_text())
    change(card)
    (model / "model.json").write_text(json.dumps(card))
    return model


def build_inputs(ws: Path) -> None:
    """The shared inputs: crops, a tiny classifier, a profile table and run, a sign fit, a counterfactual model, a scan."""
    import numpy as np

    from phenolens.profiling.synthetic import synthetic_screen

    for folder in ("home", "cache"):
        (ws / folder).mkdir(parents=True, exist_ok=True)
    (ws / "home" / "notes.txt").write_text("a user's file\n")
    write_crops(ws / "crops")
    screen = synthetic_screen(plates=6, controls_per_plate=8, moas=2, compounds_per_moa=5, doses=2, features=16, effect=8.0, seed=1)
    screen.to_csv(ws / "screen.csv", index=False)
    np.savetxt(ws / "scan.txt", np.sin(np.arange(4000) / 3.0) * np.exp(-np.arange(4000) / 800.0))
    folder = ["--folder", ws / "crops", "--channels", "GFP,DNA"]
    jobs = {
        "model": ["train", *folder, "--epochs", "1", *TINY_IMAGES, "--out", ws / "model"],
        "profile-run": [
            "profile",
            "run",
            ws / "screen.csv",
            *PROFILE_COLUMNS,
            "--max-epochs",
            "2",
            *PROFILE_FAST,
            "--no-curve",
            "--out",
            ws / "profile-run",
        ],
        "counterfactual": [
            "counterfactual",
            "train",
            *folder,
            "--size",
            "16",
            "--blocks",
            "1",
            "--hidden",
            "4",
            "--epochs",
            "1",
            "--autoencoder-epochs",
            "1",
            "--batch-size",
            "8",
            "--out",
            ws / "counterfactual",
        ],
    }
    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(jobs, pool.map(lambda argv: phenolens(argv, ws, ws), jobs.values())))
    sign = ["sign", "fit", ws / "model", *folder, "--epochs", "1", "--validation-fraction", "0.5", "--words", "4", "--out", ws / "sign-fit"]
    results["sign-fit"] = phenolens(sign, ws, ws)
    for name, (status, _, stderr, _) in results.items():
        if status != 0:
            raise SystemExit(f"could not build the input {name}: {stderr.strip().splitlines()[-1:]}")


# ------------------------------------------------------------------------------------------- the cases


def _copy(source_name: str, target_name: str | None = None):
    def prepare(ws: Path, here: Path) -> None:
        source = ws / source_name
        target = here / (target_name or source.name)
        shutil.copytree(source, target) if source.is_dir() else shutil.copyfile(source, target)
        (here / ".digest").write_text(tree_digest(target))

    return prepare


def _intact(name: str):
    def verify(ws: Path, here: Path, stderr: str) -> str:
        return "" if tree_digest(here / name) == (here / ".digest").read_text() else f"{name} was changed or deleted"

    return verify


def _only_file(name: str, text: str):
    def verify(ws: Path, here: Path, stderr: str) -> str:
        path = here / name
        unchanged = path.is_file() and path.read_text() == text and list(path.parent.iterdir()) == [path]
        return "" if unchanged else f"{path.parent.name} was changed"

    return verify


def _no_file(name: str):
    def verify(ws: Path, here: Path, stderr: str) -> str:
        return f"{name} was created: the payload ran" if (here / name).exists() or (ws / name).exists() else ""

    return verify


def _says(*texts: str, absent: tuple[str, ...] = ()):
    def verify(ws: Path, here: Path, stderr: str) -> str:
        missing = [t for t in texts if t not in stderr]
        present = [t for t in absent if t in stderr]
        return (f"message lacks {missing}" if missing else "") + (f" message has {present}" if present else "")

    return verify


def _all(*checks):
    def verify(ws: Path, here: Path, stderr: str) -> str:
        return "; ".join(problem for check in checks if (problem := check(ws, here, stderr)))

    return verify


def _write(name: str, content: str | bytes):
    def prepare(ws: Path, here: Path) -> None:
        path = here / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)

    return prepare


def _npy(name: str, make):
    def prepare(ws: Path, here: Path) -> None:
        import numpy as np

        path = here / name
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, make(np))

    return prepare


def _copy_then(source: str, target: str, change: Callable[[Path], None]):
    """Copy the shared input folder `source` to the case's `target`, then `change` the copy."""

    def prepare(ws: Path, here: Path) -> None:
        shutil.copytree(ws / source, here / target)
        change(here / target)

    return prepare


def _crops_with(extra: Callable[[Path], None]):
    return _copy_then("crops", "crops", extra)


def _profile_table(change: Callable):
    def prepare(ws: Path, here: Path) -> None:
        import pandas as pd

        table = pd.read_csv(ws / "screen.csv")
        change(table).to_csv(here / "table.csv", index=False)

    return prepare


def _run_copy(change: Callable[[Path], None]):
    return _copy_then("profile-run", "run", change)


def _card_case(name: str, change: Callable[[dict], None], message: str = "") -> Case:
    return Case(
        f"model.json/{name}",
        lambda ws, here: ["images", "predict", here / "model", "--folder", ws / "crops", "--channels", "GFP,DNA", "--out", here / "out"],
        prepare=lambda ws, here: edit_card(ws, here, change) and None,
        verify=_says(message) if message else None,
    )


def _stale_partial(ws: Path, here: Path) -> None:
    """A staging folder left by a killed run (its process id is gone), holding a loadable model."""
    shutil.copytree(ws / "model", here / ".model.partial-999999999-abc")


def _no_stale(ws: Path, here: Path, stderr: str) -> str:
    return "the stale staging folder is still there" if (here / ".model.partial-999999999-abc").exists() else ""


def _tampered_mirror(ws: Path, here: Path) -> None:
    """A private mirror holding echo-pulses, one file changed without changing its size."""
    import importlib

    registry = importlib.import_module("phenolens.data.registry")
    dataset = registry.get_dataset("echo-pulses")
    mirror = Path(os.environ.get("PHENOLENS_DATA_MIRROR", SRC.parents[1] / "shared" / "data"))
    for entry in dataset.files:
        copy = here / "mirror" / entry.path
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(mirror / entry.path, copy)
    target = here / "mirror" / dataset.file("reference_signal_ultem_water.txt").path
    data = bytearray(target.read_bytes())
    data[10] = ord("7") if data[10] != ord("7") else ord("8")
    target.write_bytes(bytes(data))


def _split_tampered(ws: Path, here: Path) -> None:
    shutil.copytree(ws / "sign-fit", here / "fit")
    (here / "fit" / "split.npz").write_bytes(b"not a zip file")


def cases() -> list[Case]:
    """Every case of issue 23 (severe 1-4, the tracebacks, the messages, manifest paths, crash leftovers, integrity)."""
    images = lambda ws: ["--folder", ws / "crops", "--channels", "GFP,DNA"]  # noqa: E731
    train = lambda ws, here, *extra: ["train", *images(ws), "--epochs", "1", *TINY_IMAGES, *extra, "--out", here / "out"]  # noqa: E731
    explain = lambda ws, here, *extra: ["images", "explain", ws / "model", *images(ws), "--methods", "saliency", *extra, "--out", here / "out"]  # noqa: E731

    def evaluate(table, *extra, controls="Metadata_PertType == 'control'"):
        return ["profile", "evaluate", table, "--controls", controls, "--treatment-column", "Metadata_Treatment", *PROFILE_FAST, *extra]

    cases = [
        # -- severe 1: code execution through query options
        Case(
            "exec/--controls @-payload",
            lambda ws, here: [*evaluate(ws / "screen.csv", controls=PAYLOAD), "--out", here / "out"],
            verify=_no_file("pwned"),
        ),
        Case(
            "exec/--positive-controls @-payload",
            lambda ws, here: [*evaluate(ws / "screen.csv", "--positive-controls", PAYLOAD), "--out", here / "out"],
            verify=_no_file("pwned"),
        ),
        Case(
            "exec/profile explain --group @-payload",
            lambda ws, here: ["profile", "explain", ws / "profile-run", "--group", PAYLOAD, "--out", here / "out"],
            verify=_no_file("pwned"),
        ),
        Case(
            "exec/--controls __import__",
            lambda ws, here: [*evaluate(ws / "screen.csv", controls="__import__('os').system('touch pwned') == 0"), "--out", here / "out"],
            verify=_no_file("pwned"),
        ),
        # -- severe 2: --out deletes what it names
        Case(
            "out/echoes detect --out = the scan's folder",
            lambda ws, here: ["echoes", "detect", here / "dz" / "scan.txt", "--methods", "omp", "--out", here / "dz"],
            prepare=lambda ws, here: (here / "dz").mkdir() or _copy("scan.txt", "dz/scan.txt")(ws, here),
            verify=_intact("dz/scan.txt"),
        ),
        Case(
            "out/train --out = the image folder",
            lambda ws, here: ["train", "--folder", here / "crops", "--channels", "GFP,DNA", "--out", here / "crops"],
            prepare=_copy("crops"),
            verify=_intact("crops"),
        ),
        Case(
            "out/--out ~ (a home folder)",
            lambda ws, here: ["echoes", "simulate", "--n-signals", "5", "--out", "~"],
            verify=lambda ws, here, err: "" if (ws / "home" / "notes.txt").is_file() else "the home folder's file is gone",
        ),
        Case(
            "out/non-empty folder, no --overwrite",
            lambda ws, here: ["echoes", "simulate", "--n-signals", "5", "--out", here / "mine"],
            prepare=_write("mine/keep.txt", "mine\n"),
            verify=_only_file("mine/keep.txt", "mine\n"),
            outputs=(),
        ),
        Case(
            "out/--overwrite of a folder phenolens did not write",
            lambda ws, here: ["echoes", "simulate", "--n-signals", "5", "--out", here / "mine", "--overwrite"],
            prepare=_write("mine/keep.txt", "mine\n"),
            verify=_only_file("mine/keep.txt", "mine\n"),
            outputs=(),
        ),
        Case("out/--out /proc/x", lambda ws, here: ["echoes", "simulate", "--n-signals", "5", "--out", "/proc/x"]),
        Case("out/--out .", lambda ws, here: ["echoes", "simulate", "--n-signals", "5", "--out", "."]),
        Case("out/--out ''", lambda ws, here: ["echoes", "simulate", "--n-signals", "5", "--out", ""]),
        Case("out/--out ..", lambda ws, here: ["echoes", "simulate", "--n-signals", "5", "--out", ".."]),
        Case("out/--out too-long name", lambda ws, here: ["echoes", "simulate", "--n-signals", "5", "--out", "x" * 300]),
        Case(
            "out/--out under a file",
            lambda ws, here: ["echoes", "simulate", "--n-signals", "5", "--out", here / "file.txt" / "out"],
            prepare=_write("file.txt", "x\n"),
            outputs=("file.txt",),
        ),
        # -- severe 3: silent wrong answers
        Case(
            "answers/explain: folder AAA is not a model class",
            lambda ws, here: [
                "images",
                "explain",
                ws / "model",
                "--folder",
                here / "crops",
                "--channels",
                "GFP,DNA",
                "--methods",
                "saliency",
                "--out",
                here / "out",
            ],
            prepare=lambda ws, here: write_crops(here / "crops", classes=("AAA", "outside")) and None,
        ),
        Case(
            "answers/counterfactual explain: folder AAA",
            lambda ws, here: [
                "counterfactual",
                "explain",
                ws / "counterfactual",
                "--folder",
                here / "crops",
                "--channels",
                "GFP,DNA",
                "--target",
                "inside",
                "--out",
                here / "out",
            ],
            prepare=lambda ws, here: write_crops(here / "crops", classes=("AAA", "outside")) and None,
        ),
        Case(
            "answers/--channels DNA,GFP on a GFP,DNA model (reordered by name)",
            lambda ws, here: ["images", "predict", ws / "model", "--folder", ws / "crops", "--channels", "DNA,GFP", "--out", here / "out"],
            ok={0},
        ),
        Case(
            "answers/--channels A,B on a GFP,DNA model",
            lambda ws, here: ["images", "predict", ws / "model", "--folder", ws / "crops", "--channels", "A,B", "--out", here / "out"],
        ),
        Case(
            "answers/profile evaluate with inf in 5 wells (dropped, counted)",
            lambda ws, here: [*evaluate(here / "table.csv"), "--out", here / "out"],
            prepare=_profile_table(lambda t: t.assign(**{t.columns[-1]: t[t.columns[-1]].mask(t.index < 5, float("inf"))})),
            ok={0},
        ),
        Case(
            "answers/duplicate column names",
            lambda ws, here: [*evaluate(here / "table.csv"), "--out", here / "out"],
            prepare=lambda ws, here: (here / "table.csv").write_text(_duplicate_header(ws / "screen.csv")),
        ),
        _card_case("std [0, 0]", lambda c: c["normalization"].update(std=[0.0, 0.0])),
        Case("answers/explain --baseline nan", lambda ws, here: explain(ws, here, "--baseline", "nan")),
        Case("answers/echoes simulate --snr nan", lambda ws, here: ["echoes", "simulate", "--snr", "nan", "--out", here / "out"]),
        Case("answers/train --epochs 0", lambda ws, here: train(ws, here, "--epochs", "0")),
        Case("answers/train --width 0", lambda ws, here: train(ws, here, "--width", "0")),
        Case(
            "answers/2-column signal file",
            lambda ws, here: ["echoes", "detect", here / "two.txt", "--methods", "omp", "--out", here / "out"],
            prepare=_write("two.txt", "".join(f"{i} {i * 0.5}\n" for i in range(200))),
        ),
        Case(
            "answers/complex .npy signal",
            lambda ws, here: ["echoes", "detect", here / "complex.npy", "--methods", "omp", "--out", here / "out"],
            prepare=_npy("complex.npy", lambda np: np.exp(1j * np.arange(300) / 5.0)),
        ),
        Case("answers/echoes simulate --fs 0", lambda ws, here: ["echoes", "simulate", "--fs", "0", "--out", here / "out"]),
        Case("answers/echoes simulate --mean-gap -1", lambda ws, here: ["echoes", "simulate", "--mean-gap", "-1", "--out", here / "out"]),
        Case(
            "answers/empty class sub-folder",
            lambda ws, here: ["train", "--folder", here / "crops", "--channels", "GFP,DNA", "--epochs", "1", *TINY_IMAGES, "--out", here / "out"],
            prepare=_crops_with(lambda c: (c / "empty").mkdir()),
        ),
        _card_case("3 class names on a 2-output model", lambda c: c.update(class_names=["a", "b", "c"])),
        # -- severe 4: unbounded memory from small inputs
        Case(
            "memory/zlib TIFF declaring 2 x 40,000 x 40,000",
            lambda ws, here: ["data", "show", here / "crops", "--out", here / "out"],
            prepare=_crops_with(lambda c: giant_tiff(c / "inside" / "bomb.tif", 2, 40_000)),
        ),
        Case(
            "inputs/data show on one image file",
            lambda ws, here: ["data", "show", here / "one.tif", "--out", here / "out"],
            prepare=lambda ws, here: giant_tiff(here / "one.tif", 2, 8) and None,
        ),
        Case(
            "memory/train --size 0 on a 20,000 x 20,000 image",
            lambda ws, here: ["train", "--folder", here / "crops", "--channels", "GFP,DNA", "--epochs", "1", *TINY_IMAGES, "--out", here / "out"],
            prepare=_crops_with(lambda c: giant_tiff(c / "inside" / "huge.tif", 2, 20_000)),
        ),
        _card_case("width 64", lambda c: c["hyperparameters"].update(width=64)),
        Case(
            "memory/echoes detect omp on 20,000 samples",
            lambda ws, here: ["echoes", "detect", here / "long.npy", "--methods", "omp", "--out", here / "out"],
            prepare=_npy("long.npy", lambda np: np.sin(np.arange(20_000) / 3.0)),
            ok={0},
        ),
        Case(
            "memory/echoes detect ista,smp on 200,000 samples",
            lambda ws, here: ["echoes", "detect", here / "long.npy", "--methods", "ista,smp", "--out", here / "out"],
            prepare=_npy("long.npy", lambda np: np.sin(np.arange(200_000) / 3.0) * (np.arange(200_000) % 500 < 40)),
            ok={0},
        ),
        # -- tracebacks to turn into one line
        *[
            Case(f"options/train {option} {value}", lambda ws, here, o=option, v=value: train(ws, here, o, v))
            for option, value in [("--batch-size", "0"), ("--lr", "-1"), ("--size", "-5")]
        ],
        *[
            Case(f"options/explain {option} {value}", lambda ws, here, o=option, v=value: explain(ws, here, o, v))
            for option, value in [("--window", "0"), ("--n-steps", "0"), ("--batch-size", "0")]
        ],
        *[
            Case(f"options/echoes train {option} {value}", lambda ws, here, o=option, v=value: ["echoes", "train", o, v, "--out", here / "out"])
            for option, value in [("--epochs", "0"), ("--batch-size", "0"), ("--lr", "nan")]
        ],
        Case(
            "options/echoes detect --fs 0",
            lambda ws, here: ["echoes", "detect", ws / "scan.txt", "--fs", "0", "--methods", "omp", "--out", here / "out"],
        ),
        Case("options/echoes simulate --sigma0 0", lambda ws, here: ["echoes", "simulate", "--sigma0", "0", "--out", here / "out"]),
        Case(
            "options/counterfactual train --size 0", lambda ws, here: ["counterfactual", "train", *images(ws), "--size", "0", "--out", here / "out"]
        ),
        _card_case("foreign architecture", lambda c: c.update(architecture="os.system")),
        _card_case("extra hyperparameter", lambda c: c["hyperparameters"].update(evil=1)),
        _card_case("list-typed hyperparameter", lambda c: c["hyperparameters"].update(width=[1, 2])),
        _card_case("string-typed hyperparameter", lambda c: c["hyperparameters"].update(in_channels="2")),
        _card_case("n_classes 1e9", lambda c: c["hyperparameters"].update(n_classes=1e9)),
        _card_case("normalization.size 100000", lambda c: c["normalization"].update(size=100000)),
        Case(
            "inputs/manifest whose labels are all empty",
            lambda ws, here: ["train", "--manifest", here / "manifest.csv", "--channels", "GFP,DNA", "--out", here / "out"],
            prepare=lambda ws, here: _manifest(ws, here, label=""),
        ),
        Case(
            "inputs/data show on an empty CSV",
            lambda ws, here: ["data", "show", here / "empty.csv", "--out", here / "out"],
            prepare=_write("empty.csv", ""),
        ),
        Case(
            "inputs/profile evaluate with an all-NaN column (dropped)",
            lambda ws, here: [*evaluate(here / "table.csv"), "--out", here / "out"],
            prepare=_profile_table(lambda t: t.assign(**{t.columns[-1]: float("nan")})),
            ok={0},
        ),
        Case(
            "inputs/profile evaluate with every feature constant",
            lambda ws, here: [*evaluate(here / "table.csv"), "--out", here / "out"],
            prepare=_profile_table(lambda t: t.assign(**{c: 1.0 for c in t.columns if not c.startswith("Metadata_")})),
        ),
        Case(
            "inputs/profile explain: bad metrics.json",
            lambda ws, here: ["profile", "explain", here / "run", "--group", "Metadata_MoA == 'moa0'", "--out", here / "out"],
            prepare=_run_copy(lambda run: (run / "metrics.json").write_text("{not json")),
        ),
        Case(
            "inputs/profile explain: bad parquet",
            lambda ws, here: ["profile", "explain", here / "run", "--group", "Metadata_MoA == 'moa0'", "--out", here / "out"],
            prepare=_run_copy(lambda run: [p.write_bytes(b"PAR1 broken") for p in run.glob("*.parquet")]),
        ),
        Case(
            "inputs/sign graph: tampered split.npz",
            lambda ws, here: ["sign", "graph", here / "fit", "--class", "inside", "--out", here / "out"],
            prepare=_split_tampered,
        ),
        Case(
            "inputs/string .npy image",
            lambda ws, here: ["train", "--folder", here / "crops", "--channels", "GFP,DNA", "--epochs", "1", *TINY_IMAGES, "--out", here / "out"],
            prepare=_crops_with(lambda c: __import__("numpy").save(c / "inside" / "text.npy", __import__("numpy").array(["a", "b"]))),
        ),
        # -- messages to fix
        Case(
            "message/header-only CSV",
            lambda ws, here: [*evaluate(here / "table.csv"), "--out", here / "out"],
            prepare=lambda ws, here: (here / "table.csv").write_text((ws / "screen.csv").read_text().splitlines()[0] + "\n"),
            verify=_says("", absent=("not numeric",)),
        ),
        Case(
            "message/state-dict mismatch",
            lambda ws, here: ["images", "predict", here / "model", *images(ws), "--out", here / "out"],
            prepare=lambda ws, here: (
                edit_card(ws, here, lambda c: None)
                and shutil.copyfile(ws / "counterfactual" / "model.safetensors", here / "model" / "model.safetensors")
                and None
            ),
            verify=_says("", absent=("(Error(s) in loading state_dict",)),
        ),
        Case(
            "message/profile explain on a wrong folder",
            lambda ws, here: ["profile", "explain", ws / "model", "--group", "Metadata_MoA == 'moa0'", "--out", here / "out"],
            verify=_says("", absent=("a phenolens train command",)),
        ),
        # -- manifest paths
        Case(
            "manifest/../x.npy",
            lambda ws, here: ["train", "--manifest", here / "m" / "manifest.csv", "--channels", "GFP,DNA", "--out", here / "out"],
            prepare=lambda ws, here: _manifest(ws, here, paths="parent"),
        ),
        Case(
            "manifest/absolute paths",
            lambda ws, here: ["train", "--manifest", here / "manifest.csv", "--channels", "GFP,DNA", "--out", here / "out"],
            prepare=lambda ws, here: _manifest(ws, here, paths="absolute"),
        ),
        Case(
            "manifest/absolute paths with --allow-outside-paths",
            lambda ws, here: [
                "train",
                "--manifest",
                here / "manifest.csv",
                "--channels",
                "GFP,DNA",
                "--allow-outside-paths",
                "--epochs",
                "1",
                *TINY_IMAGES,
                "--out",
                here / "out",
            ],
            prepare=lambda ws, here: _manifest(ws, here, paths="absolute"),
            ok={0},
        ),
        # -- crash leftovers
        Case(
            "leftovers/explain a killed run's staging folder",
            lambda ws, here: [
                "images",
                "explain",
                here / ".model.partial-999999999-abc",
                *images(ws),
                "--methods",
                "saliency",
                "--out",
                here / "out",
            ],
            prepare=_stale_partial,
            outputs=(".model.partial-999999999-abc",),
        ),
        Case(
            "leftovers/the next run removes a stale staging folder",
            lambda ws, here: ["echoes", "simulate", "--n-signals", "5", "--out", here / "model"],
            prepare=_stale_partial,
            verify=_no_stale,
            ok={0},
            outputs=("model",),
        ),
        # -- integrity
        Case(
            "integrity/tampered same-size mirror file",
            lambda ws, here: ["echoes", "detect", "--methods", "omp", "--out", here / "out"],
            prepare=_tampered_mirror,
            env={"PHENOLENS_DATA_MIRROR": "mirror"},
            verify=_says("sha256"),
            outputs=("mirror",),
        ),
        # -- resume of training (SIGKILL, then --resume)
        Case(
            "resume/images train killed after its first checkpoint, then --resume",
            lambda ws, here: [*train(ws, here, "--epochs", "4"), "--resume"],
            prepare=_killed_training,
            ok={0},
        ),
    ]
    return cases


def _duplicate_header(path: Path) -> str:
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    header[-1] = header[-2]
    return "\n".join([",".join(header), *lines[1:]]) + "\n"


def _manifest(ws: Path, here: Path, label: str | None = None, paths: str = "inside") -> None:
    """A manifest of the crops: beside them (``inside``), one folder down (``parent``: ``../crops/...``) or with absolute paths."""
    if paths != "absolute":
        shutil.copytree(ws / "crops", here / "crops")
    folder = here / "m" if paths == "parent" else here
    folder.mkdir(parents=True, exist_ok=True)
    prefix = {"inside": "crops/", "parent": "../crops/", "absolute": f"{ws / 'crops'}/"}[paths]
    rows = [
        f"{prefix}{image.parent.name}/{image.name},{image.parent.name if label is None else label}" for image in sorted((ws / "crops").rglob("*.npy"))
    ]
    (folder / "manifest.csv").write_text("\n".join(["path,label", *rows]) + "\n")


def _killed_training(ws: Path, here: Path) -> None:
    """Start the same training without --resume and SIGKILL it once its first checkpoint is on disk."""
    argv = ["train", "--folder", ws / "crops", "--channels", "GFP,DNA", "--epochs", "4", *TINY_IMAGES, "--out", here / "out"]
    environment = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "PHENOLENS_CACHE": str(ws / "cache"), "HOME": str(ws / "home")}
    process = subprocess.Popen([sys.executable, "-m", "phenolens", *map(str, argv)], cwd=here, env=environment, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while process.poll() is None and time.monotonic() < deadline and not list(here.glob(".out.partial-*/checkpoints/0000.safetensors")):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()


# ------------------------------------------------------------------------------------------- the table


def run_case(case: Case, ws: Path) -> dict:
    """Prepare, run and inspect one case (a failure of this script's own steps is a row too, never an escape)."""
    try:
        return _run_case(case, ws)
    except Exception as error:  # noqa: BLE001 - the table must show every case
        return {
            "case": case.name,
            "status": None,
            "line": f"HARNESS: {type(error).__name__}: {error}"[:160],
            "left": "?",
            "problem": "harness error",
            "peak_mib": 0,
            "seconds": 0,
            "handled": False,
        }


def _run_case(case: Case, ws: Path) -> dict:
    here = ws / "cases" / case.name.replace("/", "__").replace(" ", "_").replace("~", "home")[:120]
    here.mkdir(parents=True)
    if case.prepare:
        case.prepare(ws, here)
    before = {p for p in here.rglob("*")}
    env = {key: str(here / value) if key == "PHENOLENS_DATA_MIRROR" else value for key, value in case.env.items()}
    started = time.perf_counter()
    status, stdout, stderr, peak = phenolens(case.argv(ws, here), here, ws, env)
    seconds = time.perf_counter() - started
    lines = [line for line in stderr.splitlines() if line.strip()]
    traceback = any(line.startswith("Traceback") for line in lines)
    warnings = [line for line in lines if "RuntimeWarning" in line]
    message = (lines[-1] if lines else stdout.strip().splitlines()[-1] if stdout.strip() else "").strip()
    message = message.replace(str(here), "CASE").replace(str(ws), "WS")  # the case's own folder, the shared inputs' folder
    allowed = {here / name for name in case.outputs} if status == 0 else set()
    left = []
    for path in sorted(set(here.rglob("*")) - before):
        if not any(path == a or a in path.parents for a in allowed) and path.name != ".digest":
            left.append(str(path.relative_to(here)))
    left = [p for p in left if "/" not in p or not any(p.startswith(q + "/") for q in left)]  # top-most only
    inputs = [p for p in ws.iterdir() if p.name != "cases"]  # other cases run at the same time: look only at this one's folder and the inputs
    found = [p for root in inputs if root.is_dir() for p in root.rglob("*.partial-*")]  # (this case's own are in `left`)
    partials = [str(p.relative_to(ws)) for p in found if p.is_dir() and ".model.partial-999999999" not in p.name]
    problem = case.verify(ws, here, stderr) if case.verify else ""
    handled = status in case.ok and not traceback and not warnings and not left and not partials and not problem
    return {
        "case": case.name,
        "status": status,
        "line": ("TRACEBACK: " if traceback else "") + message[:160],
        "left": ", ".join(left + partials) or "nothing",
        "problem": "; ".join(filter(None, [problem, f"{len(warnings)} RuntimeWarning line(s)" if warnings else ""])),
        "peak_mib": round(peak),
        "seconds": round(seconds, 1),
        "handled": handled,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_check_option(parser)
    parser.add_argument("--only", default="", help="Run only the cases whose name contains this text.")
    parser.add_argument("--keep", type=Path, help="Build the inputs and cases in this (new) folder and keep it.")
    parser.add_argument("--jobs", type=int, default=3, help="Cases run at once.")
    parser.add_argument("--json", type=Path, help="Also write the rows as JSON here.")
    args = parser.parse_args()
    ws = args.keep or Path(tempfile.mkdtemp(prefix="phenolens-hardening-"))
    ws.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        if not (ws / "sign-fit" / "run.json").is_file():  # a kept folder's inputs are reused
            build_inputs(ws)
        shutil.rmtree(ws / "cases", ignore_errors=True)
        inputs = {name: tree_digest(ws / name) for name in ("crops", "model", "screen.csv", "profile-run", "sign-fit", "counterfactual", "scan.txt")}
        selected = [case for case in cases() if args.only in case.name]
        with ThreadPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(lambda case: run_case(case, ws), selected))
        changed = [name for name, digest in inputs.items() if tree_digest(ws / name) != digest]
    finally:
        if args.keep is None:
            shutil.rmtree(ws, ignore_errors=True)
    print("| case | exit | one line (or traceback) | left on disk | peak MiB | problem |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        line = row["line"].replace("|", "\\|")
        problem = row["problem"] or ("" if row["handled"] else "unexpected exit")
        print(f"| {row['case']} | {row['status']} | {line} | {row['left']} | {row['peak_mib']} | {problem} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    targets = Targets("hardening cases")
    targets.expect("cases handled (expected exit, one line, nothing left, no RuntimeWarning)", sum(r["handled"] for r in rows), "==", len(rows))
    targets.expect("cases ending in a traceback", sum(r["line"].startswith("TRACEBACK") for r in rows), "==", 0)
    targets.expect("cases with exit status 1", sum(r["status"] == 1 for r in rows), "==", 0)
    targets.expect("shared inputs changed by a case", len(changed), "==", 0)
    print(f"{len(rows)} cases in {time.perf_counter() - started:.0f} s")
    return targets.finish(args.check)


if __name__ == "__main__":
    sys.exit(main())
