"""Loaders for the registered real datasets: typed containers, not loose tuples."""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from phenolens.core.errors import PhenolensError
from phenolens.data.containers import UNLABELLED, ImageSet, SignalSet
from phenolens.data.readers import read_images, read_signal
from phenolens.data.registry import Dataset, get_dataset

LOADERS: dict[str, Callable[[Dataset], object]] = {}


_RECORDERS: list[set[str]] = []  # the open `recorded_loads` blocks, innermost last


def _loader(name: str):
    def register(function):
        LOADERS[name] = function
        return function

    return register


def load(name: str):
    """Load a registered dataset by name.

    Parameters
    ----------
    name : str
        A registry name (`phenolens data list`): ``bbbc021-profiles``, ``lincs-plate``, ``bbbc013``,
        ``mitocheck``, ``bbbc021-cells``, ``echo-pulses`` or ``fashion-mnist``.

    Returns
    -------
    pandas.DataFrame, ImageSet or SignalSet
        A DataFrame for profile sets (`Metadata_*` columns + numeric features), an `ImageSet` for
        image sets and a `SignalSet` for signal sets.

    Raises
    ------
    PhenolensError
        For an unknown name, or files that are neither local nor downloadable.
    """
    dataset = get_dataset(name)
    loaded = LOADERS[name](dataset)
    for recorder in _RECORDERS:
        recorder.add(name)
    return loaded


@contextmanager
def recorded_loads() -> Iterator[set[str]]:
    """Collect the registry names `load` reads inside the block (the provenance of a run made of several steps).

    Yields
    ------
    set of str
        Filled as datasets are loaded; complete when the block ends.
    """
    names: set[str] = set()
    _RECORDERS.append(names)
    try:
        yield names
    finally:
        _RECORDERS.remove(names)


def _files_under(dataset: Dataset, prefix: str, suffix: str) -> list[str]:
    return sorted(f.relative for f in dataset.files if f.relative.startswith(prefix) and f.relative.endswith(suffix))


def _class_folders(dataset: Dataset, suffix: str, channels: int) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """A dataset of one folder per class: its files (sorted), the classes (sorted folder names), the images stacked
    and each image's class index."""
    relatives = _files_under(dataset, "", suffix)
    classes = sorted({r.split("/")[0] for r in relatives})
    images = np.stack(read_images([dataset.resolve(r) for r in relatives], channels=channels))
    labels = np.array([classes.index(r.split("/")[0]) for r in relatives])
    return relatives, classes, images, labels


@_loader("bbbc021-profiles")
def load_bbbc021_profiles(dataset: Dataset) -> pd.DataFrame:
    """632 wells x 516 features with Plate, Well, Compound, Concentration, Replicate, Batch, MoA,
    PertType metadata (DMSO wells are the controls).

    Parameters
    ----------
    dataset : Dataset
        Its registry entry (files resolved through the mirror, the cache or a download).

    Returns
    -------
    pandas.DataFrame
        `Metadata_*` columns, then the features.
    """
    wells = pd.read_csv(dataset.resolve("ljosa_jbiomolscreen_2013_per_well_mean.csv.gz"))
    images = pd.read_csv(dataset.resolve("BBBC021_v1_image.csv.gz"))
    moa = pd.read_csv(dataset.resolve("BBBC021_v1_moa.csv"))
    keys = images[
        ["Image_Metadata_Plate_DAPI", "Image_Metadata_Well_DAPI", "Replicate", "Image_Metadata_Compound", "Image_Metadata_Concentration"]
    ].drop_duplicates()
    keys.columns = ["Metadata_Plate", "Metadata_Well", "Metadata_Replicate", "Metadata_Compound", "Metadata_Concentration"]
    moa.columns = ["Metadata_Compound", "Metadata_Concentration", "Metadata_MoA"]
    wells = wells.rename(columns={"Image_Metadata_Plate": "Metadata_Plate", "Image_Metadata_Well": "Metadata_Well"})
    table = wells.merge(keys, on=["Metadata_Plate", "Metadata_Well"], how="left", validate="one_to_one")
    table = table.merge(moa, on=["Metadata_Compound", "Metadata_Concentration"], how="left", validate="many_to_one")
    if table["Metadata_MoA"].isna().any():
        raise PhenolensError(f"{dataset.name}: {table['Metadata_MoA'].isna().sum()} wells lack a MoA after the join")
    derived = pd.DataFrame(
        {
            "Metadata_Batch": table["Metadata_Plate"].str.split("_").str[0],
            "Metadata_PertType": np.where(table["Metadata_Compound"] == "DMSO", "control", "trt"),
            "Metadata_Treatment": table["Metadata_Compound"] + "@" + table["Metadata_Concentration"].map("{:g}".format),
        }
    )
    table = pd.concat([table, derived], axis=1)
    metadata = [c for c in table.columns if c.startswith("Metadata_")]
    features = [c for c in table.columns if not c.startswith("Metadata_")]
    return table[metadata + features]


@_loader("lincs-plate")
def load_lincs_plate(dataset: Dataset) -> pd.DataFrame:
    """One LINCS Cell Painting plate, 384 wells x 454 features, pycytominer naming.

    Parameters
    ----------
    dataset : Dataset
        Its registry entry (files resolved through the mirror, the cache or a download).

    Returns
    -------
    pandas.DataFrame
        `Metadata_*` columns, then the features.
    """
    return pd.read_csv(dataset.resolve("SQ00015054_normalized_feature_select.csv.gz"), low_memory=False)


@_loader("bbbc013")
def load_bbbc013(dataset: Dataset) -> ImageSet:
    """794 two-channel (FKHR-GFP, DNA) uint8 crops of variable size; NoGFP / CytoplasmicGFP /
    NuclearGFP labels and 596 unlabelled ('Unknown') crops.

    Parameters
    ----------
    dataset : Dataset
        Its registry entry (files resolved through the mirror, the cache or a download).

    Returns
    -------
    ImageSet
        The crops, one (2, H, W) array each.
    """
    table = pd.read_csv(dataset.resolve("labels.csv"))
    images = read_images([dataset.resolve(p) for p in table["path"]], channels=2)
    class_names = ["NoGFP", "CytoplasmicGFP", "NuclearGFP"]
    lookup = {c: i for i, c in enumerate(class_names)}
    labels = table["label"].map(lambda v: lookup.get(v, UNLABELLED)).to_numpy()
    meta = table.drop(columns=["label"]).rename(columns={"path": "source"})
    return ImageSet(images, labels, class_names, ["FKHR-GFP", "DNA"], meta, unlabelled_name="Unknown", name="bbbc013")


@_loader("mitocheck")
def load_mitocheck(dataset: Dataset) -> ImageSet:
    """3,277 64x64 grayscale H2B-GFP nuclei in 16 phenotype classes (uint8, (N, 1, 64, 64)).

    Parameters
    ----------
    dataset : Dataset
        Its registry entry (files resolved through the mirror, the cache or a download).

    Returns
    -------
    ImageSet
        The nuclei in one array.
    """
    relatives, classes, images, labels = _class_folders(dataset, ".png", channels=1)
    # File names carry plate, time point and position: PLLT0048_13--ex...___P00069_01___T00072___X0800___Y0301
    plate = [r.split("/")[1].split("--")[0] for r in relatives]
    movie = [re.search(r"___(P\d+_\d+)___", r).group(1) for r in relatives]
    meta = pd.DataFrame({"source": relatives, "plate": plate, "movie": movie})
    return ImageSet(images, labels, classes, ["H2B-GFP"], meta, name="mitocheck")


@_loader("bbbc021-cells")
def load_bbbc021_cells(dataset: Dataset) -> ImageSet:
    """800 MCF-7 crops, (N, 3, 68, 68) uint16 (DAPI, Tubulin, Actin), DMSO vs Protein synthesis.

    Metadata: well, site and field (well_site) parsed from the file name; all DMSO crops come from
    one well, so split by field and treat the well as a known confound.

    Parameters
    ----------
    dataset : Dataset
        Its registry entry (files resolved through the mirror, the cache or a download).

    Returns
    -------
    ImageSet
        The crops in one array, with ``well``, ``site`` and ``field`` metadata.
    """
    relatives, classes, images, labels = _class_folders(dataset, ".npy", channels=3)
    names = [r.split("/")[1] for r in relatives]
    wells = [n.split("_")[0] for n in names]
    sites = [n.split("_")[1] for n in names]
    meta = pd.DataFrame({"source": relatives, "well": wells, "site": sites, "field": [f"{w}_{s}" for w, s in zip(wells, sites)]})
    return ImageSet(images, labels, classes, ["DAPI", "Tubulin", "Actin"], meta, name="bbbc021-cells")


@_loader("echo-pulses")
def load_echo_pulses(dataset: Dataset) -> SignalSet:
    """The real A-scans: reference pulse (424 samples), glue-interface and aluminium signals.

    Parameters
    ----------
    dataset : Dataset
        Its registry entry (files resolved through the mirror, the cache or a download).

    Returns
    -------
    SignalSet
        The reference pulse first, then the other A-scans (with their fitted parameters, if any).
    """
    signals = [read_signal(dataset.resolve("reference_signal_ultem_water.txt"))]
    for relative in _files_under(dataset, "", ".npy"):
        params = Path(relative).with_name(Path(relative).stem + "_params.json").as_posix()
        has_params = any(f.relative == params for f in dataset.files)
        signals.append(read_signal(dataset.resolve(relative), dataset.resolve(params) if has_params else None))
    return SignalSet(signals, name="echo-pulses")


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as stream:
        data = stream.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


@_loader("fashion-mnist")
def load_fashion_mnist(dataset: Dataset) -> ImageSet:
    """70,000 28x28 images (60,000 train then 10,000 test; `meta.split` tells which).

    Parameters
    ----------
    dataset : Dataset
        Its registry entry (files resolved through the mirror, the cache or a download).

    Returns
    -------
    ImageSet
        The images in one (N, 1, 28, 28) uint8 array.
    """
    parts = []
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = _read_idx(dataset.resolve(f"{prefix}-images-idx3-ubyte.gz"))
        labels = _read_idx(dataset.resolve(f"{prefix}-labels-idx1-ubyte.gz"))
        parts.append((images, labels, split))
    images = np.concatenate([p[0] for p in parts])[:, None]
    labels = np.concatenate([p[1] for p in parts]).astype(np.int64)
    meta = pd.DataFrame({"split": np.concatenate([[p[2]] * len(p[1]) for p in parts])})
    return ImageSet(images, labels, FASHION_CLASSES, ["gray"], meta, name="fashion-mnist")


def signal_params(dataset_name: str = "echo-pulses") -> dict[str, dict]:
    """Fitted pulse parameters of the signals that have them, by signal name.

    Parameters
    ----------
    dataset_name : str
        A registered signal dataset.

    Returns
    -------
    dict of str to dict
        Signal name -> its parameters (signals without parameters are left out).
    """
    return {s.name: s.params for s in load(dataset_name).signals if s.params}


def describe(name: str) -> dict:
    """Registry facts for one dataset (for `phenolens data list` and reports).

    Parameters
    ----------
    name : str
        A registry name.

    Returns
    -------
    dict
        Name, title, kind, file count and bytes, licence, citation and source (repository@commit).

    Raises
    ------
    PhenolensError
        For an unknown name.
    """
    dataset = get_dataset(name)
    return {
        "name": dataset.name,
        "title": dataset.title,
        "kind": dataset.kind,
        "files": len(dataset.files),
        "bytes": sum(f.size for f in dataset.files),
        "licence": dataset.licence,
        "citation": dataset.citation,
        "source": f"{dataset.repository}@{dataset.commit}",
    }


__all__ = ["LOADERS", "describe", "load", "signal_params"]
