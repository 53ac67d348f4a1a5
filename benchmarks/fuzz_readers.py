"""Fuzz every reader with hypothesis: only `PhenolensError` may escape, and memory stays bounded.

Each reader gets inputs made from a valid file (an image, a table, a signal, a model folder, a run
folder) by structured mutations: byte flips, insertions, deletions, truncation, and interesting
integers written over header fields (which is how a small file claims a huge shape); JSON files also
get values, keys and types replaced. Every example is read in a fresh temporary folder.

    python benchmarks/fuzz_readers.py --small --check        # CI: a few dozen examples per reader
    python benchmarks/fuzz_readers.py --check                # >= 10,000 examples per reader
    python benchmarks/fuzz_readers.py --examples 500 --readers tiff,png

Per reader it prints the examples run, how many were read and refused, the time, the peak resident
memory of the process that ran them and its growth over the process's start, and any exception other
than `PhenolensError` (type, message, first input that raised it). Each reader runs in its own forked
process so its peak memory is its own. `--check` fails when anything but `PhenolensError` escaped or a
reader's memory grew by more than `--rss-bound-mb` (default 512 MiB) with the pixel limit set to
`--max-pixels` (default 10^6 values per image).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import multiprocessing
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))

from targets import Targets, add_check_option  # noqa: E402

from phenolens.core.errors import PhenolensError  # noqa: E402
from phenolens.core.settings import Settings, setting  # noqa: E402

SMALL_EXAMPLES = 25
FULL_EXAMPLES = 10_000

# Values that break header arithmetic: zero, sign and width boundaries, sizes that multiply past int64.
INTERESTING = [0, 1, 2, 7, 8, 255, 256, 32767, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1, 40_000, 10**9]


@st.composite
def mutated(draw, seed: bytes) -> bytes:
    """`seed` with up to five byte-level mutations (most examples keep the header parseable)."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "integer"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[position : position + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del data[position:]
        elif kind == "integer":
            width = draw(st.sampled_from([1, 2, 4, 8]))
            value = draw(st.sampled_from(INTERESTING)) % (1 << (8 * width))
            data[position : position + width] = value.to_bytes(width, draw(st.sampled_from(["little", "big"])))
    return bytes(data)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.sampled_from(INTERESTING) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def mutated_json(draw, seed: dict) -> bytes:
    """`seed` with values replaced, keys dropped or added (at any depth), then possibly byte-mutated."""
    document = json.loads(json.dumps(seed))
    for _ in range(draw(st.integers(1, 3))):
        container = document
        while isinstance(container, (dict, list)) and container and draw(st.booleans()):
            keys = list(container) if isinstance(container, dict) else list(range(len(container)))
            child = container[draw(st.sampled_from(keys))]
            if not isinstance(child, (dict, list)):
                break
            container = child
        if isinstance(container, dict):
            action = draw(st.sampled_from(["replace", "drop", "add"])) if container else "add"
            if action == "add":
                container[draw(st.text(max_size=12))] = draw(JSON_VALUES)
            else:
                key = draw(st.sampled_from(list(container)))
                if action == "drop":
                    del container[key]
                else:
                    container[key] = draw(JSON_VALUES)
        elif isinstance(container, list) and container:
            container[draw(st.integers(0, len(container) - 1))] = draw(JSON_VALUES)
    text = json.dumps(document).encode()
    return draw(mutated(text)) if draw(st.booleans()) else text


def _array(draw, kinds: list[str], max_dims: int = 3) -> np.ndarray:
    shape = tuple(draw(st.lists(st.integers(1, 12), min_size=1, max_size=max_dims)))
    dtype = np.dtype(draw(st.sampled_from(kinds)))
    values = np.arange(int(np.prod(shape))).reshape(shape) % 200
    return values.astype(dtype)


def _saved(save: Callable[[io.BytesIO], None]) -> bytes:
    buffer = io.BytesIO()
    save(buffer)
    return buffer.getvalue()


@st.composite
def tiff_files(draw) -> dict[str, bytes]:
    import tifffile

    array = _array(draw, ["uint8", "uint16", "float32", "int16", "complex64"])
    compression = draw(st.sampled_from([None, "zlib"]))
    return {"image.tif": draw(mutated(_saved(lambda b: tifffile.imwrite(b, array, compression=compression))))}


@st.composite
def png_files(draw) -> dict[str, bytes]:
    from PIL import Image

    mode, channels = draw(st.sampled_from([("L", None), ("RGB", 3), ("RGBA", 4), ("I;16", None)]))  # the modes PIL writes
    height, width = draw(st.integers(1, 16)), draw(st.integers(1, 16))
    shape = (height, width) if channels is None else (height, width, channels)
    array = (np.arange(np.prod(shape)).reshape(shape) % 250).astype(np.uint16 if mode == "I;16" else np.uint8)
    image = Image.fromarray(array)  # uint16 2-D arrays become mode I;16
    return {"image.png": draw(mutated(_saved(lambda b: image.save(b, format="PNG"))))}


def _npy_seed(draw) -> bytes:
    kind = draw(st.sampled_from(["uint8", "float32", "float64", "bool", "complex128", "<U3", "object"]))
    if kind == "object":
        array = np.array([1, "a", None], dtype=object)
    else:
        array = _array(draw, [kind])
    return _saved(lambda b: np.save(b, array, allow_pickle=True))


@st.composite
def npy_files(draw) -> dict[str, bytes]:
    return {"image.npy": draw(mutated(_npy_seed(draw)))}


CELLS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(-1e3, 1e3).map(repr),
    st.integers(-(10**6), 10**6).map(str),
    st.sampled_from(["", "nan", "inf", "-inf", "x", '"a,b"', "1e999", "NA", "True"]),
)
COLUMN_NAMES = st.sampled_from(["Metadata_Plate", "Metadata_Well", "f1", "f2", "f2", "Metadata_x", "", " ", "1"])


@st.composite
def _profile_csv(draw) -> bytes:
    columns = ["Metadata_Plate"] * draw(st.booleans()) + draw(st.lists(COLUMN_NAMES, min_size=0, max_size=5))  # often readable
    rows = draw(st.lists(st.lists(CELLS, min_size=len(columns), max_size=len(columns)), max_size=6))
    lines = [",".join(columns)] * draw(st.sampled_from([0, 1, 1, 1])) + [",".join(row) for row in rows]
    return draw(mutated("\n".join(lines).encode()))


@st.composite
def csv_files(draw) -> dict[str, bytes]:
    return {"profiles.csv": draw(_profile_csv())}


@st.composite
def csv_gz_files(draw) -> dict[str, bytes]:
    return {"profiles.csv.gz": draw(mutated(gzip.compress(draw(_profile_csv()), mtime=0)))}


@st.composite
def parquet_files(draw) -> dict[str, bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = draw(st.lists(COLUMN_NAMES, min_size=1, max_size=4))
    rows = draw(st.integers(0, 5))
    columns = [pa.array([f"p{i}" for i in range(rows)]) if draw(st.booleans()) else pa.array(np.arange(rows, dtype=np.float64) / 3) for _ in names]
    return {"profiles.parquet": draw(mutated(_saved(lambda b: pq.write_table(pa.table(columns, names=names), b))))}


@st.composite
def signal_files(draw) -> dict[str, bytes]:
    if draw(st.booleans()):
        return {"signal.npy": draw(mutated(_npy_seed(draw)))}
    lines = draw(st.lists(st.lists(CELLS, min_size=1, max_size=2).map(" ".join), max_size=20))
    files = {"signal.txt": draw(mutated("\n".join(lines).encode()))}
    if draw(st.booleans()):
        files["params.json"] = draw(mutated_json({"fs": 5e7, "c": 2470.0, "thickness": [1.0, 2.0]}))
    return files


@st.composite
def manifest_files(draw) -> dict[str, bytes]:
    import tifffile

    image = _saved(lambda b: tifffile.imwrite(b, np.zeros((2, 6, 6), dtype=np.uint8)))
    paths = st.sampled_from(["a.tif", "b.tif", "../a.tif", "/etc/hostname", "", "sub/../a.tif", "missing.tif", "a.png", "a.tif\x00"])
    labels = st.sampled_from(["x", "y", "", "Unknown", "nan"])
    rows = draw(st.lists(st.tuples(paths, labels, CELLS), min_size=0, max_size=5))
    header = draw(st.sampled_from(["path,label,well", "path,label,path", "label,well", "path,label"]))
    text = "\n".join([header] + [",".join(row[: header.count(",") + 1]) for row in rows])
    return {"manifest.csv": draw(mutated(text.encode())), "a.tif": image, "b.tif": draw(mutated(image))}


@dataclass
class ModelSeeds:
    """A tiny saved ResNet and MLP (config and weights), made once per process."""

    folders: dict[str, dict[str, bytes]]


_MODEL_SEEDS: ModelSeeds | None = None


def model_seeds() -> ModelSeeds:
    """The saved tiny models every model example mutates (built on first use)."""
    global _MODEL_SEEDS
    if _MODEL_SEEDS is None:
        import torch

        from phenolens.nn.backbones import ResNet18
        from phenolens.nn.mlp import MLP
        from phenolens.nn.weights import ModelCard, save_model

        torch.manual_seed(0)
        resnet = {"in_channels": 2, "n_classes": 2, "width": 0.0625, "blocks": [1, 1]}
        cards = {
            "resnet18": (
                ResNet18(**resnet),
                ModelCard("resnet18", resnet, ["a", "b"], ["c0", "c1"], {"mean": [0.0, 0.0], "std": [1.0, 1.0], "size": 16}),
            ),
            "mlp": (
                MLP(8, [4], 2),
                ModelCard("mlp", {"in_features": 8, "hidden": [4], "n_classes": 2}, ["a", "b"], ["c0"], {"mean": 0.0, "std": 1.0, "size": 2}),
            ),
        }
        folders = {}
        with tempfile.TemporaryDirectory() as root:
            for name, (model, card) in cards.items():
                folder = save_model(model, Path(root) / name, card)
                folders[name] = {path.name: path.read_bytes() for path in folder.iterdir()}
        _MODEL_SEEDS = ModelSeeds(folders)
    return _MODEL_SEEDS


@st.composite
def model_files(draw) -> dict[str, bytes]:
    seed = model_seeds().folders[draw(st.sampled_from(["resnet18", "mlp"]))]
    config, weights = seed["model.json"], seed["model.safetensors"]
    target = draw(st.sampled_from(["config", "config", "weights", "both"]))
    if target in ("config", "both"):
        config = draw(mutated_json(json.loads(config)))
    if target in ("weights", "both"):
        weights = draw(mutated(weights))
    return {"model/model.json": config, "model/model.safetensors": weights}


def _run_record() -> dict:
    """A finished run's record as `RunWriter` writes it, with one real settings class."""
    from phenolens.core.runs import RunWriter

    with tempfile.TemporaryDirectory() as root:
        with RunWriter(Path(root) / "run", command="fuzz readers", settings=[FuzzRunSettings()]) as run:
            run.write_metrics({"accuracy": 0.5, "counts": [1, 2]})
        return {name: json.loads((Path(root) / "run" / name).read_text()) for name in ("run.json", "metrics.json")}


@dataclass(frozen=True)
class FuzzRunSettings(Settings):
    """Settings of the run folder the run-folder reader is fuzzed with: one field of each kind."""

    epochs: int = setting(3, "Epochs.", minimum=1)
    rate: float = setting(0.1, "Rate.", minimum=0, exclusive_minimum=True)
    mode: str = setting("a", "Mode.", choices=("a", "b"))
    sizes: tuple[int, ...] = setting((1, 2), "Sizes.")


_RUN_SEED: dict | None = None


@st.composite
def run_files(draw) -> dict[str, bytes]:
    global _RUN_SEED
    if _RUN_SEED is None:
        _RUN_SEED = _run_record()
    files = {f"run/{name}": json.dumps(value).encode() for name, value in _RUN_SEED.items()}
    name = draw(st.sampled_from(["run.json", "run.json", "metrics.json"]))
    files[f"run/{name}"] = draw(mutated_json(_RUN_SEED[name]))
    return files


def _read_profiles(folder: Path, files: dict[str, bytes]) -> object:
    from phenolens.data import read_profiles

    return read_profiles(folder / next(iter(files)))


def _read_image(folder: Path, files: dict[str, bytes]) -> object:
    from phenolens.data import read_image

    return read_image(folder / next(iter(files)))


def _read_signal(folder: Path, files: dict[str, bytes]) -> object:
    from phenolens.data import read_signal

    signal = next(name for name in files if name.startswith("signal"))
    return read_signal(folder / signal, folder / "params.json" if "params.json" in files else None)


def _read_manifest(folder: Path, files: dict[str, bytes]) -> object:
    from phenolens.data import read_manifest

    return read_manifest(folder / "manifest.csv", unlabelled="Unknown")


def _load_model(folder: Path, files: dict[str, bytes]) -> object:
    from phenolens.nn.weights import load_model

    return load_model(folder / "model")


def _load_run(folder: Path, files: dict[str, bytes]) -> object:
    from phenolens.core.runs import load_run

    return load_run(folder / "run")


@dataclass(frozen=True)
class Reader:
    """One fuzzed reader: how its inputs are made and how they are read."""

    files: Callable[[], st.SearchStrategy]
    read: Callable[[Path, dict[str, bytes]], object]


READERS: dict[str, Reader] = {
    "tiff": Reader(tiff_files, _read_image),
    "png": Reader(png_files, _read_image),
    "npy": Reader(npy_files, _read_image),
    "csv": Reader(csv_files, _read_profiles),
    "csv.gz": Reader(csv_gz_files, _read_profiles),
    "parquet": Reader(parquet_files, _read_profiles),
    "signal": Reader(signal_files, _read_signal),
    "manifest": Reader(manifest_files, _read_manifest),
    "model": Reader(model_files, _load_model),
    "run": Reader(run_files, _load_run),
}


def read_one(name: str, files: dict[str, bytes]) -> bool:
    """Write `files` into a fresh folder and read them with reader `name`.

    Parameters
    ----------
    name : str
        A key of `READERS`.
    files : dict of str to bytes
        Relative paths and contents.

    Returns
    -------
    bool
        True when the input was read, False when it was refused with a `PhenolensError`.
        Any other exception propagates.
    """
    with tempfile.TemporaryDirectory() as root:
        folder = Path(root)
        for relative, content in files.items():
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            (folder / relative).write_bytes(content)
        try:
            READERS[name].read(folder, files)
        except PhenolensError as error:
            if "\n" in str(error):
                raise AssertionError(f"a PhenolensError of more than one line: {error!r}") from None
            return False
    return True


@dataclass
class Outcome:
    """What fuzzing one reader found."""

    reader: str
    examples: int = 0
    read: int = 0
    refused: int = 0
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    rss_growth_mb: float = 0.0
    escaped: list[str] | None = None


def fuzz(name: str, examples: int, seed: int) -> Outcome:
    """Run `examples` generated inputs through reader `name`, recording every escaped exception.

    Parameters
    ----------
    name : str
        A key of `READERS`.
    examples : int
        How many inputs hypothesis generates (no shrinking: escapes are recorded, not minimised).
    seed : int
        The generation seed.

    Returns
    -------
    Outcome
        Counts, time, memory and the escaped exceptions (type, message and a prefix of the input).
    """
    outcome = Outcome(name, escaped=[])
    start_rss = _memory_mb("VmRSS")
    started = time.perf_counter()

    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(READERS[name].files())
    def run(files):
        outcome.examples += 1
        try:
            if read_one(name, files):
                outcome.read += 1
            else:
                outcome.refused += 1
        except Exception as error:  # the point of the benchmark: record what escaped
            where = traceback.extract_tb(error.__traceback__)[-1]
            first = {k: v[:80] for k, v in files.items()}
            outcome.escaped.append(f"{type(error).__name__}: {str(error)[:200]} at {where.filename}:{where.lineno} for {first!r}")

    import hypothesis

    hypothesis.seed(seed)(run)()
    outcome.seconds = time.perf_counter() - started
    outcome.peak_rss_mb = _memory_mb("VmHWM")
    outcome.rss_growth_mb = max(0.0, outcome.peak_rss_mb - start_rss)
    return outcome


def _memory_mb(field: str) -> float:
    """VmRSS (resident now) or VmHWM (resident peak) of this process, in MB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(f"{field}:")) / 1024


def _fuzz_in_child(name: str, examples: int, seed: int, connection) -> None:
    connection.send(fuzz(name, examples, seed))
    connection.close()


def fuzz_in_own_process(name: str, examples: int, seed: int) -> Outcome:
    """`fuzz` in a forked process, so that the peak memory reported is this reader's alone.

    Parameters
    ----------
    name, examples, seed
        As for `fuzz`.

    Returns
    -------
    Outcome
        As `fuzz` returns it; a child that died is reported as one escape.
    """
    receiver, sender = multiprocessing.get_context("fork").Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(target=_fuzz_in_child, args=(name, examples, seed, sender))
    child.start()
    sender.close()
    try:
        outcome = receiver.recv()
    except EOFError:
        outcome = Outcome(name, escaped=[f"the process died (exit status {child.exitcode})"])
    child.join()
    if child.exitcode not in (0, None):
        outcome.escaped.append(f"the process ended with status {child.exitcode}")
    return outcome


# Small files that claim huge allocations: each is read in a fresh interpreter whose peak memory is measured.
# The peak is VmHWM, the high-water mark of the interpreter's own memory: after fork + exec, getrusage's
# ru_maxrss starts at the parent's resident size, so it would report the benchmark's memory, not the case's.
BOMB_CHILD = """
import json, sys
sys.path[:0] = {paths!r}
try:
{code}
    outcome = "read without error"
except BaseException as error:
    outcome = f"{{type(error).__name__}}: {{str(error).splitlines()[0] if str(error) else ''}}"
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({{"outcome": outcome, "peak_mb": int(status["VmHWM"].split()[0]) / 1024}}))
"""


def make_bombs(folder: Path) -> dict[str, str]:
    """Write the memory cases of issue 23 into `folder`; return the code that reads each.

    Parameters
    ----------
    folder : Path
        An empty folder for the files.

    Returns
    -------
    dict of str to str
        Case name -> Python statements (indented for `BOMB_CHILD`) that read the case.
    """
    import tifffile
    import torch

    from phenolens.nn.backbones import ResNet18
    from phenolens.nn.weights import ModelCard, save_model

    bomb = folder / "bomb.tif"
    tile = np.zeros((2048, 2048), dtype=np.uint8)
    tiles = (tile for _ in range(2 * 20 * 20))  # 2 planes of 20 x 20 tiles cover 40,000 x 40,000
    tifffile.imwrite(bomb, data=tiles, shape=(2, 40_000, 40_000), dtype=np.uint8, tile=(2048, 2048), compression="zlib")
    torch.manual_seed(0)
    resnet = {"in_channels": 2, "n_classes": 2, "width": 0.5, "blocks": [2, 2, 2, 2]}
    cases = {
        f"zlib TIFF 2x40000x40000 ({bomb.stat().st_size / 1e6:.2f} MB)": f"    from phenolens.data import read_image\n    read_image({str(bomb)!r})",
    }
    for name, change in {"width 64": {"width": 64}, "n_classes 10^9": {"n_classes": 10**9}}.items():
        model = save_model(ResNet18(**resnet), folder / name.replace(" ", "_"), ModelCard("resnet18", dict(resnet), [], ["a", "b"]))
        config = json.loads((model / "model.json").read_text())
        config["hyperparameters"].update(change)
        (model / "model.json").write_text(json.dumps(config))
        cases[f"model.json {name}"] = f"    from phenolens.nn.weights import load_model\n    load_model({str(model)!r})"
    forged = folder / "forged.npy"
    np.save(forged, np.zeros(4))
    forged.write_bytes(forged.read_bytes().replace(b"(4,)", b"(4000000000,)"))
    cases["signal .npy claiming 4e9 samples"] = f"    from phenolens.data import read_signal\n    read_signal({str(forged)!r})"
    return cases


def measure_bombs(bound_mb: float, targets: Targets) -> None:
    """Read each memory case in its own interpreter; print its outcome and peak memory, record the targets.

    Parameters
    ----------
    bound_mb : float
        The largest peak resident memory allowed for one case (the interpreter, numpy and torch included).
    targets : Targets
        Where each case's peak memory and outcome are recorded.
    """
    import subprocess

    paths = [p for p in sys.path if p]
    with tempfile.TemporaryDirectory() as root:
        started = time.perf_counter()
        cases = make_bombs(Path(root))
        print(f"memory cases written in {time.perf_counter() - started:.1f} s")
        environment = {k: v for k, v in os.environ.items() if k != "PHENOLENS_MAX_PIXELS"}  # the default limit
        for name, code in cases.items():
            child = subprocess.run(
                [sys.executable, "-c", BOMB_CHILD.format(paths=paths, code=code)], capture_output=True, text=True, env=environment, check=False
            )
            result = (
                json.loads(child.stdout.strip().splitlines()[-1])
                if child.stdout.strip()
                else {"outcome": child.stderr[-300:], "peak_mb": float("inf")}
            )
            print(f"{name}: peak {result['peak_mb']:.0f} MB; {result['outcome'][:220]}")
            targets.expect(f"{name}: peak MB", result["peak_mb"], "<=", bound_mb)
            targets.expect(f"{name}: refused with PhenolensError", float(result["outcome"].startswith("PhenolensError")), "==", 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=FULL_EXAMPLES, help=f"inputs per reader (default {FULL_EXAMPLES:,})")
    parser.add_argument("--small", action="store_true", help=f"CI mode: {SMALL_EXAMPLES} inputs per reader")
    parser.add_argument("--readers", default=",".join(READERS), help="comma-separated readers to fuzz")
    parser.add_argument("--seed", type=int, default=0, help="generation seed")
    parser.add_argument("--max-pixels", type=int, default=10**6, help="PHENOLENS_MAX_PIXELS while fuzzing")
    parser.add_argument("--rss-bound-mb", type=float, default=512.0, help="largest memory growth of one reader's process")
    parser.add_argument(
        "--bombs", action="store_true", help="also read the memory cases of issue 23 (a 3 MB TIFF of 3.2 GB, model.json width 64, ...)"
    )
    parser.add_argument("--bomb-bound-mb", type=float, default=1024.0, help="largest peak memory of the interpreter reading one memory case")
    add_check_option(parser)
    args = parser.parse_args()
    os.environ["PHENOLENS_MAX_PIXELS"] = str(args.max_pixels)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    examples = SMALL_EXAMPLES if args.small else args.examples
    names = [n.strip() for n in args.readers.split(",") if n.strip()]
    unknown = sorted(set(names) - set(READERS))
    if unknown:
        parser.error(f"unknown readers {unknown}; choose from {', '.join(READERS)}")
    model_seeds()  # built before forking, so every model example starts from the same files
    targets = Targets("fuzz readers")
    if args.bombs:
        measure_bombs(args.bomb_bound_mb, targets)
    if not names:
        return targets.finish(args.check)
    print(f"{'reader':<10}{'examples':>10}{'read':>8}{'refused':>9}{'escaped':>9}{'seconds':>9}{'peak MB':>9}{'growth MB':>11}")
    outcomes = []
    for name in names:
        outcome = fuzz_in_own_process(name, examples, args.seed)
        outcomes.append(outcome)
        print(
            f"{name:<10}{outcome.examples:>10}{outcome.read:>8}{outcome.refused:>9}{len(outcome.escaped):>9}"
            f"{outcome.seconds:>9.1f}{outcome.peak_rss_mb:>9.0f}{outcome.rss_growth_mb:>11.0f}",
            flush=True,
        )
        for line in outcome.escaped[:5]:
            print(f"    ESCAPED {line}")
    targets.expect("exceptions other than PhenolensError", sum(len(o.escaped) for o in outcomes), "==", 0)
    targets.expect("largest memory growth of one reader (MB)", max(o.rss_growth_mb for o in outcomes), "<=", args.rss_bound_mb)
    targets.expect("fewest examples run by a reader", min(o.examples for o in outcomes), ">=", examples)
    return targets.finish(args.check)


if __name__ == "__main__":
    sys.exit(main())
