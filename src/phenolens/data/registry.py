"""Dataset registry: public sources, sha256 checksums, and where the files are found.

Resolution order for every file: the read-only mirror named by ``PHENOLENS_DATA_MIRROR``, then the
cache (``PHENOLENS_CACHE``, default ``~/.cache/phenolens``), then a download of the public source
with pooch (sha256 checked). Files that phenolens derives itself (BBBC013 crops from the piximi
project) are rebuilt into the cache from their source file.

A local file is checked against its registered size and sha256 on its first use in a process. The
hash is remembered in ``PHENOLENS_CACHE/verified.jsonl`` (one line per verified file) keyed by the
file's path, size and modification time, so later runs hash only files that changed. The trade-off: a
file rewritten with the same size whose modification time is then set back is not rehashed;
``phenolens data verify`` always hashes every file.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from phenolens.core.errors import PhenolensError
from phenolens.core.logging import get_logger

MIRROR_VARIABLE = "PHENOLENS_DATA_MIRROR"
CACHE_VARIABLE = "PHENOLENS_CACHE"
VERIFIED_FILE = "verified.jsonl"

# Per cache folder: resolved path -> (size, modification time in ns, sha256) of the files verified,
# read from VERIFIED_FILE once per process and extended as files are hashed.
_verified: dict[Path, dict[str, tuple[int, int, str]]] = {}

log = get_logger(__name__)


@dataclass(frozen=True)
class RegisteredFile:
    """One file of a dataset: its path relative to the mirror root, checksum, size and source."""

    path: str
    sha256: str
    size: int
    url: str | None

    @property
    def relative(self) -> str:
        """The path inside the dataset folder (without the dataset name)."""
        return self.path.split("/", 1)[1]


@dataclass(frozen=True)
class Dataset:
    """A registered dataset and its files."""

    name: str
    title: str
    kind: str
    licence: str
    citation: str
    repository: str
    commit: str
    files: tuple[RegisteredFile, ...]
    derived_from: str | None = None
    system_dir: str | None = None
    _index: dict = field(default_factory=dict, compare=False, repr=False)

    def file(self, relative: str) -> RegisteredFile:
        """Look up one file by its path inside the dataset folder."""
        if not self._index:
            self._index.update({f.relative: f for f in self.files})
        try:
            return self._index[relative]
        except KeyError:
            raise PhenolensError(f"dataset {self.name!r} has no file {relative!r}") from None

    def resolve(self, relative: str) -> Path:
        """Local path of one file of this dataset (mirror, cache, or download)."""
        return resolve_file(self, self.file(relative))

    def root(self) -> Path:
        """Local folder holding the whole dataset, fetching what is missing."""
        for registered in self.files:
            path = resolve_file(self, registered)
        return path.parents[len(Path(registered.relative).parts) - 1]


@cache
def registry() -> dict[str, Dataset]:
    """All registered datasets by name."""
    raw = json.loads(resources.files("phenolens.data").joinpath("registry.json").read_text())
    datasets = {}
    for name, entry in raw.items():
        files = tuple(RegisteredFile(*row) for row in entry.pop("files"))
        datasets[name] = Dataset(name=name, files=files, **entry)
    return datasets


def get_dataset(name: str) -> Dataset:
    """The registered dataset called `name`; the error lists valid names."""
    datasets = registry()
    if name not in datasets:
        raise PhenolensError(f"unknown dataset {name!r}; choose one of: {', '.join(datasets)}")
    return datasets[name]


def mirror_root() -> Path | None:
    """The local mirror folder from PHENOLENS_DATA_MIRROR, if set."""
    value = os.environ.get(MIRROR_VARIABLE)
    if not value:
        return None
    root = Path(value).expanduser()
    if not root.is_dir():
        raise PhenolensError(f"{MIRROR_VARIABLE}={value} is not a folder; point it at the data mirror")
    return root


def cache_root() -> Path:
    """The writable cache folder (PHENOLENS_CACHE, default ~/.cache/phenolens)."""
    return Path(os.environ.get(CACHE_VARIABLE, "~/.cache/phenolens")).expanduser()


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _candidates(dataset: Dataset, registered: RegisteredFile) -> list[Path]:
    places = []
    mirror = mirror_root()
    if mirror is not None:
        places.append(mirror / registered.path)
    if dataset.system_dir:
        places.append(Path(dataset.system_dir) / Path(registered.path).name)
    places.append(cache_root() / registered.path)
    return places


def local_copy(dataset: Dataset, registered: RegisteredFile) -> Path | None:
    """Where a registered file already is on this machine (mirror, system folder or cache), without checking,
    deriving or downloading it.

    Parameters
    ----------
    dataset, registered : Dataset, RegisteredFile
        The file's dataset and its registry entry.

    Returns
    -------
    Path or None
        The first local copy found, or None.
    """
    return next((place for place in _candidates(dataset, registered) if place.is_file()), None)


def resolve_file(dataset: Dataset, registered: RegisteredFile) -> Path:
    """Find or fetch one registered file and return its local path, checked against the registry.

    Parameters
    ----------
    dataset : Dataset
        The dataset the file belongs to.
    registered : RegisteredFile
        The file's registry entry.

    Returns
    -------
    Path
        The local file: in the mirror, the system folder or the cache (derived or downloaded).

    Raises
    ------
    PhenolensError
        When the file is only in a mirror that is not set, cannot be downloaded, or a local copy has another
        size or sha256 than the registry's (see `check_registered_file`).
    """
    location = local_copy(dataset, registered)
    if location is not None:
        return check_registered_file(location, dataset, registered)
    if dataset.derived_from and registered.url is None:
        _derive(dataset)
        cached = cache_root() / registered.path
        if cached.is_file():
            return check_registered_file(cached, dataset, registered)
    if registered.url is None:
        raise PhenolensError(
            f"{registered.path} is only distributed through a data mirror (its upstream "
            f"{dataset.repository}@{dataset.commit[:8]} stores it in a format phenolens refuses to "
            f"unpickle); set {MIRROR_VARIABLE} to a folder that holds it"
        )
    return _download(registered)


def check_registered_file(location: Path, dataset: Dataset, registered: RegisteredFile) -> Path:
    """Check a local copy of a registered file by size, then by sha256 once per change.

    The hash is computed on the first use of a (path, size, modification time) unless
    ``PHENOLENS_CACHE/verified.jsonl`` already records it with the registered hash.

    Parameters
    ----------
    location : Path
        The local copy.
    dataset : Dataset
        Its dataset, named in the error.
    registered : RegisteredFile
        Its registry entry (size and sha256).

    Returns
    -------
    Path
        `location`, once it matches.

    Raises
    ------
    PhenolensError
        When the size or the sha256 differs from the registry's; the message names the file and
        ``phenolens data verify``.
    """
    stat = location.stat()
    advice = f"the file was changed or damaged; run `phenolens data verify {dataset.name}` and restore it from the source"
    if stat.st_size != registered.size:
        raise PhenolensError(f"{location}: {stat.st_size:,} bytes but the registry says {registered.size:,}; {advice}")
    path, state = str(location.resolve()), (stat.st_size, stat.st_mtime_ns, registered.sha256)
    verified = _verified_files(cache_root())
    if verified.get(path) != state:
        if sha256_of(location) != registered.sha256:
            raise PhenolensError(f"{location}: sha256 differs from the registry's ({registered.path}); {advice}")
        verified[path] = state
        _append_verified(cache_root(), path, state)
    return location


def _verified_files(cache: Path) -> dict[str, tuple[int, int, str]]:
    if cache not in _verified:
        records = {}
        try:
            lines = (cache / VERIFIED_FILE).read_text().splitlines()
        except (OSError, UnicodeDecodeError):  # no record yet, or a damaged one: hashing again is the safe answer
            lines = []
        for line in lines:
            try:
                entry = json.loads(line)
                records[entry["path"]] = (entry["size"], entry["mtime_ns"], entry["sha256"])
            except (ValueError, KeyError, TypeError):  # a torn line of a killed run only costs a rehash
                continue
        _verified[cache] = records
    return _verified[cache]


def _append_verified(cache: Path, path: str, state: tuple[int, int, str]) -> None:
    """One line per verified file: appending stays cheap for mirrors of thousands of files."""
    size, mtime_ns, sha256 = state
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with open(cache / VERIFIED_FILE, "a", encoding="utf-8") as stream:
            stream.write(json.dumps({"path": path, "size": size, "mtime_ns": mtime_ns, "sha256": sha256}) + "\n")
    except OSError as error:  # a read-only cache only costs a rehash in the next process
        log.debug("cannot record verified hashes in %s (%s)", cache, error)


def _download(registered: RegisteredFile) -> Path:
    import pooch

    target = cache_root() / registered.path
    try:
        fetched = pooch.retrieve(
            registered.url,
            known_hash=f"sha256:{registered.sha256}",
            fname=target.name,
            path=target.parent,
            progressbar=False,
        )
    except Exception as error:  # network errors come in many types; all mean the same to a user
        raise PhenolensError(
            f"cannot download {registered.url} ({type(error).__name__}); when offline set "
            f"{MIRROR_VARIABLE} to a local mirror folder that holds {registered.path}"
        ) from error
    return Path(fetched)


def _derive(dataset: Dataset) -> None:
    """Rebuild derived files (BBBC013 crops) into the cache from their source file."""
    from phenolens.data.piximi import convert_piximi_project

    source = dataset.resolve(dataset.derived_from)
    log.info("decoding %s into the cache", source)
    convert_piximi_project(source, cache_root() / dataset.name)


@dataclass
class VerifyResult:
    """Outcome of checking one file against the registry."""

    dataset: str
    path: str
    status: str  # "ok", "mismatch", "missing"
    location: Path | None


def verify(names: list[str] | None = None) -> list[VerifyResult]:
    """Check every local file of the named datasets (all by default) against its sha256."""
    from phenolens.core.progress import progress

    results = []
    for dataset in [get_dataset(n) for n in (names or list(registry()))]:
        for registered in progress(dataset.files, f"verifying {dataset.name}"):
            location = local_copy(dataset, registered)
            if location is None:
                results.append(VerifyResult(dataset.name, registered.path, "missing", None))
                continue
            status = "ok" if sha256_of(location) == registered.sha256 else "mismatch"
            results.append(VerifyResult(dataset.name, registered.path, status, location))
    return results
