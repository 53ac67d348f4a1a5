"""Run folders: every command writes one folder through `RunWriter`, and `load_run` reads any back.

A run folder holds the command's results (``metrics.json``, tables, arrays, weights, figures,
``report.html``) and ``run.json``, the provenance record: command line, settings, versions, seed,
inputs with sha256 (sampled above `FULL_HASH_LIMIT`, see `describe_input`), start and end time,
host CPU count. ``run.json`` is written last, inside the staging folder, and the folder is renamed into place only then, so a folder with a complete
``run.json`` is a finished run and anything else is not.

Output safety (a user's ``--out`` is never trusted to be harmless):

- the location is checked before any work: not empty, not ``.`` or ``..``, not a file, not under a
  file, writable, a name the file system accepts;
- an output that equals or contains one of the run's inputs is always refused, and so is one inside an
  input folder that is not a phenolens run (an image folder, a Zarr store: it would be read as data);
- an existing non-empty folder is refused unless ``overwrite=True``, and even then only a folder
  that phenolens wrote (it carries ``run.json``) is replaced;
- staging folders left behind by a killed run (``.NAME.partial-PID-*`` whose process is gone) are
  removed by the next run into the same parent, except a *resumable* one (it holds complete shards or
  a checkpoint): that is refused without ``--resume`` (continue it) or ``--overwrite`` (discard it).
  A staging folder records its host and its process's start time (``run-owner.json``): one written on
  another host (shared storage: the run may be alive on another node) is never removed or continued
  automatically, and a process id reused by a later process does not keep a killed run's folder alive.

Resuming: a command whose work comes in shards or epochs writes them into the staging folder
(`RunWriter.parts`, or a checkpoint followed by `RunWriter.mark_resumable`). The staging folder
carries the run's intent (command, settings, inputs); ``RunWriter(..., resume=True)`` adopts the
staging folder of a killed run with the same intent, and the command skips what is already done.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import importlib
import json
import os
import platform
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from phenolens.core.errors import PhenolensError
from phenolens.core.logging import get_logger
from phenolens.core.outputs import DIR_MODE, atomic_write_text, to_jsonable, write_json
from phenolens.core.parts import PartStore
from phenolens.core.settings import Settings, registered_settings

log = get_logger(__name__)

RUN_RECORD = "run.json"
METRICS = "metrics.json"
PARTIAL_MARK = ".partial-"
INTENT = "run-intent.json"  # in a staging folder only: what the run was asked to do, for --resume
RESUMABLE = ".resumable"  # in a staging folder only: it holds complete shards or a checkpoint
OWNER = "run-owner.json"  # in a staging folder only: the host and process writing it
_START_TOLERANCE_S = 1.0  # a process's start time, as the system reports it, may move by a clock tick between reads
RUN_FORMAT = 1
_NAME_LIMIT = 200  # bytes left for a folder name once the staging prefix and suffix are added


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks.

    Parameters
    ----------
    path : Path
        The file.
    chunk : int
        Bytes read at a time (memory use does not grow with the file).

    Returns
    -------
    str
        64 lowercase hex digits.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(chunk):
            digest.update(block)
    return digest.hexdigest()


FULL_HASH_LIMIT = 1 << 30  # bytes of an input (a file, or a folder's files together) hashed whole for run.json
SAMPLE_BLOCK = 1 << 20  # bytes of one sampled block
FILE_SAMPLE_BLOCKS = 64  # blocks sampled from a file above the limit
FOLDER_SAMPLE_FILES = 64  # files sampled from a folder above the limit ...
FOLDER_FILE_BLOCKS = 4  # ... and blocks sampled from each of them


def _input_files(folder: Path) -> list[Path]:
    """The files of an input folder in sorted order; a run's own staging folder may sit inside an input run
    (``--out MODEL/explain``), and its files are not the input."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and PARTIAL_MARK not in p.relative_to(folder).as_posix())


def sampled_sha256(path: Path, blocks: int) -> tuple[str, int]:
    """The sha256 of a file's size and of `blocks` blocks of `SAMPLE_BLOCK` bytes spread evenly from its first to its last byte.

    Parameters
    ----------
    path : Path
        The file.
    blocks : int
        How many blocks (at least 2; a small file is read once, whole).

    Returns
    -------
    tuple of (str, int)
        64 lowercase hex digits and the number of bytes read.
    """
    size = path.stat().st_size
    span = max(size - SAMPLE_BLOCK, 0)
    offsets = sorted({round(k * span / (blocks - 1)) for k in range(blocks)})
    digest, read = hashlib.sha256(str(size).encode()), 0
    with open(path, "rb") as stream:
        for offset in offsets:
            stream.seek(offset)
            block = stream.read(SAMPLE_BLOCK)
            digest.update(block)
            read += len(block)
    return digest.hexdigest(), read


def describe_input(path: str | os.PathLike) -> dict[str, Any]:
    """Provenance of one input for run.json: a whole-content sha256 up to `FULL_HASH_LIMIT` bytes, a sampled fingerprint above.

    ``fingerprint: "sha256"``: a file's sha256, or a folder's tree hash (the sha256 of the sorted ``relative path,
    file sha256`` lines of every file below it), so it changes when any file's content or name does.
    ``fingerprint: "sampled"`` (a whole screen: re-reading hundreds of GB after the work would cost as much as
    the work): the size and modification time the resume check compares (`input_fingerprint`), and
    ``sampled_sha256``, the sha256 of `FILE_SAMPLE_BLOCKS` blocks of `SAMPLE_BLOCK` bytes spread evenly over a
    file (`sampled_sha256`); for a folder, ``metadata_sha256`` of every file's relative path, size and modification
    time, and ``sampled_sha256`` over `FOLDER_SAMPLE_FILES` files spread evenly over the sorted names
    (`FOLDER_FILE_BLOCKS` blocks each). ``sample`` says in words what was read.

    Parameters
    ----------
    path : path
        A file or folder the run reads.

    Returns
    -------
    dict
        ``path`` (resolved), ``fingerprint`` (its kind), ``bytes``, ``files`` for a folder, and the hashes above;
        ``missing: True`` for a path that does not exist.
    """
    path = Path(path)
    if path.is_file():
        size = path.stat().st_size
        if size <= FULL_HASH_LIMIT:
            return {"path": str(path.resolve()), "fingerprint": "sha256", "bytes": size, "sha256": file_sha256(path)}
        digest, read = sampled_sha256(path, FILE_SAMPLE_BLOCKS)
        sample = f"{FILE_SAMPLE_BLOCKS} blocks of {SAMPLE_BLOCK} bytes spread evenly from the first byte to the last, after the size"
        return {**input_fingerprint(path), "fingerprint": "sampled", "sampled_sha256": digest, "sampled_bytes": read, "sample": sample}
    if path.is_dir():
        files = _input_files(path)
        statuses = [file.stat() for file in files]
        names = [file.relative_to(path).as_posix() for file in files]
        total = sum(status.st_size for status in statuses)
        if total <= FULL_HASH_LIMIT:
            tree = hashlib.sha256()
            for name, file in zip(names, files):
                tree.update(f"{name}\t{file_sha256(file)}\n".encode())
            return {"path": str(path.resolve()), "fingerprint": "sha256", "files": len(files), "bytes": total, "sha256": tree.hexdigest()}
        metadata, content, read = hashlib.sha256(), hashlib.sha256(), 0
        for name, status in zip(names, statuses):
            metadata.update(f"{name}\t{status.st_size}\t{status.st_mtime_ns}\n".encode())
        chosen = sorted({round(k * (len(files) - 1) / (FOLDER_SAMPLE_FILES - 1)) for k in range(FOLDER_SAMPLE_FILES)})
        for index in chosen:
            digest, count = sampled_sha256(files[index], FOLDER_FILE_BLOCKS)
            content.update(f"{names[index]}\t{digest}\n".encode())
            read += count
        sample = (
            f"every file's name, size and modification time; the content of {len(chosen)} of {len(files)} files spread evenly "
            f"over their sorted names, {FOLDER_FILE_BLOCKS} blocks of {SAMPLE_BLOCK} bytes each"
        )
        return {
            **_folder_fingerprint(path, statuses),
            "fingerprint": "sampled",
            "metadata_sha256": metadata.hexdigest(),
            "sampled_files": len(chosen),
            "sampled_sha256": content.hexdigest(),
            "sampled_bytes": read,
            "sample": sample,
        }
    return {"path": str(path), "missing": True}


def input_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """What a resumed run checks its inputs against: a file's size and modification time, or a folder's
    file count, total size and newest modification time (metadata only, so it costs no reading of a screen).

    Parameters
    ----------
    path : path
        As `describe_input`.

    Returns
    -------
    dict
        ``path`` (resolved) with ``bytes`` and ``modified_ns``, plus ``files`` for a folder; ``missing: True``
        for a path that does not exist.
    """
    path = Path(path).expanduser()
    if path.is_file():
        status = path.stat()
        return {"path": str(path.resolve()), "bytes": status.st_size, "modified_ns": status.st_mtime_ns}
    if path.is_dir():
        return _folder_fingerprint(path, [p.stat() for p in _input_files(path)])
    return {"path": str(path), "missing": True}


def _folder_fingerprint(path: Path, statuses: list[os.stat_result]) -> dict[str, Any]:
    newest = max((status.st_mtime_ns for status in statuses), default=path.stat().st_mtime_ns)
    return {"path": str(path.resolve()), "files": len(statuses), "bytes": sum(status.st_size for status in statuses), "modified_ns": newest}


def _versions() -> dict[str, str]:
    from phenolens import __version__

    versions = {"phenolens": __version__, "python": platform.python_version()}
    for module in ("numpy", "pandas", "torch", "sklearn"):
        if module in sys.modules:
            versions[module] = getattr(sys.modules[module], "__version__", "?")
    return versions


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _this_host() -> str:
    return socket.gethostname()


def _owner_record() -> dict[str, Any]:
    import psutil

    return {"host": _this_host(), "pid": os.getpid(), "process_started": psutil.Process().create_time()}


def _owner_alive(owner: Mapping[str, Any]) -> bool:
    """Whether the recorded process of this host still runs: the same id and, where recorded, the same start time."""
    import psutil

    try:
        started = psutil.Process(owner["pid"]).create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # another user's process: alive, start time unknown
    recorded = owner.get("process_started")
    return not isinstance(recorded, int | float) or abs(started - recorded) <= _START_TOLERANCE_S


def staging_owner(staging: Path) -> dict[str, Any] | None:
    """The host and process recorded in a staging folder, or None for one written before they were recorded.

    Parameters
    ----------
    staging : Path
        A ``.NAME.partial-PID-*`` folder.

    Returns
    -------
    dict or None
        ``host``, ``pid`` and ``process_started`` (see `stale_partials`).
    """
    try:
        owner = json.loads((staging / OWNER).read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) and isinstance(owner.get("host"), str) and isinstance(owner.get("pid"), int) else None


def _staging_pid(target: Path, candidate: Path) -> int | None:
    pid_text = candidate.name[len(f".{target.name}{PARTIAL_MARK}") :].split("-", 1)[0]
    return int(pid_text) if pid_text.isdigit() else None


def foreign_partials(target: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Staging folders of `target` written on another host, with their owner records.

    This host cannot tell whether their process is alive (shared storage, a cluster's other node), so
    they are never removed or continued automatically.

    Parameters
    ----------
    target : Path
        The final folder of a run.

    Returns
    -------
    list of (Path, dict)
        The folders, sorted by name, and `staging_owner` of each.
    """
    if not target.parent.is_dir():
        return []
    found = []
    for candidate in sorted(target.parent.glob(f".{target.name}{PARTIAL_MARK}*")):
        owner = staging_owner(candidate) if candidate.is_dir() else None
        if owner is not None and owner["host"] != _this_host():
            found.append((candidate, owner))
    return found


def stale_partials(target: Path) -> list[Path]:
    """Staging folders of `target` whose writing process, on this host, no longer exists.

    A folder that records its owner (`staging_owner`) is stale when it was written on this host and its
    process is gone or is another process that took the same id (its start time differs); one written on
    another host is never stale (see `foreign_partials`). A folder without an owner record is judged by
    the process id in its name.

    Parameters
    ----------
    target : Path
        The final folder of a run; its staging folders are ``.NAME.partial-PID-*`` beside it.

    Returns
    -------
    list of Path
        The folders, sorted by name.
    """
    if not target.parent.is_dir():
        return []
    found = []
    for candidate in sorted(target.parent.glob(f".{target.name}{PARTIAL_MARK}*")):
        if not candidate.is_dir():
            continue
        owner = staging_owner(candidate)
        if owner is None:
            pid = _staging_pid(target, candidate)
            if pid is not None and not _process_alive(pid):
                found.append(candidate)
        elif owner["host"] == _this_host() and not _owner_alive(owner):
            found.append(candidate)
    return found


def is_resumable(staging: Path) -> bool:
    """Whether a staging folder holds work a ``--resume`` can continue (complete shards or a checkpoint)."""
    return (staging / RESUMABLE).is_file() and (staging / INTENT).is_file()


def remove_stale_partials(target: Path, keep_resumable: bool = False) -> list[Path]:
    """Remove staging folders of `target` whose writing process no longer exists.

    Parameters
    ----------
    target : Path
        The final folder of a run; its staging folders are ``.NAME.partial-PID-*`` beside it.
    keep_resumable : bool
        Leave the resumable ones (see `is_resumable`) in place.

    Returns
    -------
    list of Path
        The folders removed (each is also logged as a warning).
    """
    removed = []
    for candidate in stale_partials(target):
        if keep_resumable and is_resumable(candidate):
            continue
        shutil.rmtree(candidate, ignore_errors=True)
        removed.append(candidate)
        log.warning("removed %s, left by an interrupted run", candidate)
    return removed


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output_location(out: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), overwrite: bool = False) -> Path:
    """Check that `out` can receive a run before any work starts; return it resolved.

    Parameters
    ----------
    out : path
        The ``--out`` folder as the user gave it.
    inputs : iterable of paths
        Files or folders the run reads; `out` may neither equal nor contain any of them, nor lie inside an input
        folder other than a phenolens run (a new sub-folder of an image folder or Zarr store would be read as data).
    overwrite : bool
        Allow replacing an existing non-empty folder, if phenolens wrote it (it has ``run.json``).

    Returns
    -------
    Path
        `out`, with ``~`` expanded, resolved.

    Raises
    ------
    PhenolensError
        When `out` is empty, ``.``/``..``, a file or under a file, not writable, too long a name,
        equal to or containing an input, inside an input folder that is not a run, or a non-empty folder that may not be replaced.
    """
    text = os.fspath(out)
    if not text.strip():
        raise PhenolensError("--out is empty; name a new folder for the results, such as runs/my-run")
    if Path(text).name in ("", ".", ".."):
        raise PhenolensError(f"--out {text}: name a new folder for the results, not {text!r} itself")
    target = Path(text).expanduser().resolve()
    if len(target.name.encode()) > _NAME_LIMIT:
        raise PhenolensError(f"--out {text}: the folder name is {len(target.name.encode())} bytes; use at most {_NAME_LIMIT}")
    for input_path in inputs:
        source = Path(input_path).expanduser().resolve()
        if _inside(source, target):
            raise PhenolensError(f"--out {text} contains the input {input_path}; write the results to another folder")
        if source in target.parents and source.is_dir() and not (source / RUN_RECORD).is_file():
            raise PhenolensError(
                f"--out {text} is inside the input folder {input_path}, whose readers would take the results for data; write them outside it"
            )
    if target.exists() and not target.is_dir():
        raise PhenolensError(f"--out {text} is a file; name a folder")
    parent = target.parent
    for ancestor in (parent, *parent.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise PhenolensError(f"--out {text}: {ancestor} is a file, so no folder can be made under it")
            if not os.access(ancestor, os.W_OK | os.X_OK):
                raise PhenolensError(f"--out {text}: {ancestor} is not writable; choose a folder you can write to")
            break
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise PhenolensError(f"--out {text} exists and is not empty; choose a new folder or pass --overwrite to replace a phenolens run")
        if not (target / RUN_RECORD).is_file():
            raise PhenolensError(f"--out {text} was not written by phenolens (no {RUN_RECORD}); --overwrite only replaces phenolens runs")
    return target


class RunWriter:
    """Stage a run folder and rename it into place when the command succeeds.

    Parameters
    ----------
    out : path
        The final folder.
    command : str
        The command's name, e.g. ``"images train"`` (recorded in run.json).
    settings : Settings or iterable of Settings
        The settings objects of the run; recorded with their class path so `load_run` can rebuild them.
    inputs : iterable of paths
        Files or folders the run reads; hashed into run.json and never allowed inside `out`.
    overwrite : bool
        Replace an existing phenolens run at `out`.
    seed : int, optional
        The run's seed (default: the first settings object's ``seed`` field, if any).
    datasets : iterable of str
        Registry names of built-in datasets the run reads (their files are in the registry).
    resume : bool
        Continue the staging folder a killed run with the same command, settings, inputs, datasets and
        options left behind (`resumed` tells whether one was found); without it such a folder is refused
        unless `overwrite` discards it.
    options : mapping, optional
        Command-line values outside the settings objects that change what the run computes (such as
        the image channels' names, in order): a resumed run must have the same.

    Examples
    --------
    >>> with RunWriter("runs/x", command="echoes simulate", settings=settings) as run:  # doctest: +SKIP
    ...     run.write_json("metrics.json", {"f1": 0.9})
    """

    def __init__(
        self,
        out: str | os.PathLike,
        command: str,
        settings: Settings | Iterable[Settings] = (),
        inputs: Iterable[str | os.PathLike] = (),
        overwrite: bool = False,
        seed: int | None = None,
        datasets: Iterable[str] = (),
        resume: bool = False,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.inputs = [Path(p) for p in inputs]
        self.target = check_output_location(out, self.inputs, overwrite)
        self.command = command
        self.settings = [settings] if isinstance(settings, Settings) else list(settings)
        self.datasets = list(datasets)
        if seed is None:
            seed = next((s.seed for s in self.settings if hasattr(s, "seed")), None)
        self.seed = seed
        self.resume = resume
        self.options = dict(options or {})
        self.overwrite = overwrite
        self.resumed = False
        self.path: Path | None = None
        self.extra: dict[str, Any] = {}

    def intent(self) -> dict[str, Any]:
        """What this run was asked to do: command, settings, inputs, datasets and options (a resumed run must match).

        An input edited in place since the interrupted run started changes its fingerprint, so its
        checkpoints and parts are not continued on different data.

        Returns
        -------
        dict
            JSON-ready ``command``, ``settings`` (class name and values) and ``inputs`` (`input_fingerprint` of each),
            with ``datasets`` and ``options`` when the run has any.
        """
        return to_jsonable(
            {
                "command": self.command,
                "settings": [{"class": type(s).__qualname__, "values": s.to_dict()} for s in self.settings],
                "inputs": [input_fingerprint(p) for p in self.inputs],
                **({"datasets": self.datasets} if self.datasets else {}),
                **({"options": self.options} if self.options else {}),
            }
        )

    def _refuse_foreign(self) -> None:
        """Refuse (or with ``--overwrite`` and without ``--resume``, discard) staging folders written on another host."""
        for staging, owner in foreign_partials(self.target):
            if self.overwrite and not self.resume:
                shutil.rmtree(staging, ignore_errors=True)
                log.warning("removed %s, left by a run on host %s (--overwrite)", staging, owner["host"])
                continue
            raise PhenolensError(
                f"--out {self.target}: {staging.name} is the staging folder of a run on host {owner['host']} (process {owner['pid']}), "
                "which this host cannot see; wait for it to finish, or if you know it is dead pass --overwrite to discard it "
                f"(or delete its {OWNER} to let --resume continue it here)"
            )

    def _adopt_interrupted(self) -> Path | None:
        """The staging folder of a killed run to continue (resume), or None; refuse a lost one (no resume)."""
        self._refuse_foreign()
        resumable = [p for p in stale_partials(self.target) if is_resumable(p)]
        if not resumable:
            if self.resume:
                log.info("--resume: no interrupted run of %s to continue; starting from the beginning", self.target)
            return None
        if not self.resume and self.overwrite:
            return None  # remove_stale_partials discards it
        newest = max(resumable, key=lambda p: p.stat().st_mtime)
        try:
            recorded = json.loads((newest / INTENT).read_text())
        except (OSError, ValueError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            recorded = None
        wanted = self.intent()
        if not self.resume:
            advice = (
                "pass --resume to continue it or --overwrite to discard it"
                if recorded == wanted
                else "it was started with other options or inputs, so only --overwrite (discard it) can start this run"
            )
            raise PhenolensError(f"--out {self.target}: an interrupted run left resumable work in {newest.name}; {advice}")
        if recorded is None:
            raise PhenolensError(f"{newest / INTENT}: unreadable; pass --overwrite instead of --resume to start again")
        if recorded != wanted:
            differs = [
                key if key != "inputs" else "inputs (or an input changed since it started)"
                for key in dict.fromkeys([*wanted, *recorded])
                if recorded.get(key) != wanted.get(key)
            ]
            raise PhenolensError(
                f"--resume: the interrupted run in {newest.name} had other {' and '.join(differs)}; "
                "repeat its options exactly, or pass --overwrite to start again"
            )
        return newest

    def __enter__(self) -> RunWriter:
        adopted = self._adopt_interrupted()
        remove_stale_partials(self.target, keep_resumable=adopted is not None)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.started = _now()
        try:
            staging = tempfile.mkdtemp(prefix=f".{self.target.name}{PARTIAL_MARK}{os.getpid()}-", dir=self.target.parent)
        except OSError as error:
            raise PhenolensError(f"--out {self.target}: cannot create a folder there ({error.strerror})") from None
        self.path = Path(staging)
        if adopted is not None:
            # Take the interrupted folder over under this process's name, so no other run removes it.
            self.path.rmdir()
            adopted.rename(self.path)
        # First, so that no run on another node of a shared file system takes this folder for a killed run's.
        write_json(self.path / OWNER, _owner_record())
        if adopted is not None:
            self.resumed = True
            log.info("resuming the interrupted run of %s", self.target)
        else:
            write_json(self.path / INTENT, self.intent())
        self.path.chmod(DIR_MODE)
        return self

    def __exit__(self, kind, error, traceback) -> None:
        assert self.path is not None
        if kind is not None:
            if is_resumable(self.path):
                log.warning("kept the complete part of the run in %s; --resume continues it", self.path)
            else:
                shutil.rmtree(self.path, ignore_errors=True)
            return
        for marker in (INTENT, RESUMABLE, OWNER):
            (self.path / marker).unlink(missing_ok=True)
        write_json(self.path / RUN_RECORD, self.record())
        if self.target.exists():
            retired = self.target.with_name(f".{self.target.name}.old-{os.getpid()}")
            self.target.rename(retired)
            self.path.rename(self.target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            self.path.rename(self.target)
        self.path = self.target

    # -- writing -----------------------------------------------------------------------------

    def mark_resumable(self) -> None:
        """Record that the staging folder holds complete work (shards, a checkpoint) a ``--resume`` may continue."""
        assert self.path is not None, "use RunWriter as a context manager"
        marker = self.path / RESUMABLE
        if not marker.exists():
            atomic_write_text(marker, "\n")

    def parts(self, name: str) -> PartStore:
        """A per-shard output of the run (see `phenolens.core.parts.PartStore`).

        Parameters
        ----------
        name : str
            The output's name in the run folder, e.g. ``"predictions.parquet"`` (a folder of parts).

        Returns
        -------
        PartStore
            Its parts; after a resume, `PartStore.completed` lists the shards to skip.
        """
        assert self.path is not None, "use RunWriter as a context manager"
        return PartStore(self.path / name, on_write=self.mark_resumable)

    def file(self, name: str) -> Path:
        """Path of `name` inside the staging folder (parents created).

        Parameters
        ----------
        name : str
            A path relative to the run folder, e.g. ``"figures/roc.png"``.

        Returns
        -------
        Path
            Where to write it; it lands at ``out/name`` when the run succeeds.
        """
        assert self.path is not None, "use RunWriter as a context manager"
        path = self.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write_json(self, name: str, payload: Any) -> Path:
        """Write JSON (numpy types converted, NaN as null).

        Parameters
        ----------
        name : str
            File name relative to the run folder.
        payload : Any
            Anything `phenolens.core.outputs.to_jsonable` converts.

        Returns
        -------
        Path
            The file written.
        """
        return write_json(self.file(name), payload)

    def write_text(self, name: str, text: str) -> Path:
        """Write UTF-8 text.

        Parameters
        ----------
        name : str
            File name relative to the run folder.
        text : str
            The content.

        Returns
        -------
        Path
            The file written.
        """
        return atomic_write_text(self.file(name), text)

    def write_table(self, name: str, frame) -> Path:
        """Write a DataFrame as parquet (``.parquet``) or CSV (``.csv``), by the name's suffix.

        Parameters
        ----------
        name : str
            File name relative to the run folder, ending in ``.parquet`` or ``.csv``.
        frame : pandas.DataFrame
            The table (CSV is written without the index).

        Returns
        -------
        Path
            The file written.

        Raises
        ------
        ValueError
            For any other suffix (a programming error, not a user's).
        """
        path = self.file(name)
        if path.suffix == ".parquet":
            frame.to_parquet(path)
        elif path.suffix == ".csv":
            frame.to_csv(path, index=False)
        else:
            raise ValueError(f"write_table: {name} must end in .parquet or .csv")
        return path

    def write_metrics(self, metrics: Mapping[str, Any]) -> Path:
        """Write ``metrics.json``.

        Parameters
        ----------
        metrics : Mapping
            The run's figures; `load_run` reads them back as `Run.metrics`.

        Returns
        -------
        Path
            The file written.
        """
        return self.write_json(METRICS, dict(metrics))

    def write_report(self, report) -> Path:
        """Write a `phenolens.report.html.Report` (``report.html`` and named figures).

        Parameters
        ----------
        report : phenolens.report.html.Report
            The report to render into the run folder.

        Returns
        -------
        Path
            ``report.html`` in the staging folder.
        """
        assert self.path is not None
        return report.write(self.path)

    # -- provenance --------------------------------------------------------------------------

    def record(self) -> dict[str, Any]:
        """The run.json payload.

        Returns
        -------
        dict
            ``format``, ``command``, ``argv``, ``settings`` (class path and values of each settings
            object), ``seed``, ``inputs`` (see `describe_input`), ``datasets``, ``versions``,
            ``host`` (CPU count, platform), ``started``, ``finished`` and any entries of ``extra``.
        """
        return to_jsonable(
            {
                "format": RUN_FORMAT,
                "command": self.command,
                "argv": list(sys.argv),
                "settings": [{"class": f"{type(s).__module__}.{type(s).__qualname__}", "values": s.to_dict()} for s in self.settings],
                "seed": self.seed,
                "inputs": [describe_input(p) for p in self.inputs],
                "datasets": self.datasets,
                "versions": _versions(),
                "host": {"cpus": os.cpu_count(), "platform": platform.platform()},
                "started": self.started,
                "finished": _now(),
                **self.extra,
            }
        )


@dataclasses.dataclass
class Run:
    """A finished run folder read back by `load_run`.

    Attributes
    ----------
    path : Path
        The folder.
    command : str
        The command that wrote it.
    settings : list of Settings
        The settings objects, rebuilt and validated.
    metrics : dict
        ``metrics.json`` (empty when the command writes none).
    record : dict
        The whole ``run.json``.
    """

    path: Path
    command: str
    settings: list[Settings]
    metrics: dict[str, Any]
    record: dict[str, Any]

    def setting(self, kind: type[Settings]) -> Settings:
        """The run's settings object of class `kind`.

        Parameters
        ----------
        kind : type of Settings
            The settings class to look for (the first instance of it, or of a subclass, is returned).

        Returns
        -------
        Settings
            The rebuilt, validated settings object.

        Raises
        ------
        PhenolensError
            When the run has no settings object of that class.
        """
        for item in self.settings:
            if isinstance(item, kind):
                return item
        raise PhenolensError(f"{self.path / RUN_RECORD}: the run has no {kind.__name__}; it was written by {self.command!r}")

    def table(self, name: str):
        """Read a table of the run (parquet or CSV) as a DataFrame.

        Parameters
        ----------
        name : str
            File name relative to the run folder, e.g. ``"predictions.parquet"``.

        Returns
        -------
        pandas.DataFrame
            The table.

        Raises
        ------
        PhenolensError
            When the file is missing (the message lists the run's files) or unreadable.
        """
        import pandas as pd

        path = self.path / name
        if not path.is_file():
            raise PhenolensError(f"{path}: no such table in the run; it has {', '.join(sorted(p.name for p in self.path.iterdir()))}")
        try:
            return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        except Exception as error:  # noqa: BLE001 - any reader failure is a damaged file
            raise PhenolensError(f"{path}: unreadable table ({type(error).__name__}); re-run the command that wrote it") from None


def _rebuild_settings(entry: Any, source: Path) -> Settings:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("class"), str) or not isinstance(entry.get("values"), Mapping):
        raise PhenolensError(f"{source}: a settings entry is not {{'class': ..., 'values': {{...}}}}; the run record is damaged")
    module_name, _, class_name = entry["class"].rpartition(".")
    registered = registered_settings().get(class_name)
    if registered is not None and registered.__module__ == module_name:
        kind = registered  # already imported: nothing to import on the record's word
    elif not module_name.startswith("phenolens."):
        raise PhenolensError(f"{source}: settings class {entry['class']!r} is not phenolens's; the run record is damaged")
    else:
        try:
            kind = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            raise PhenolensError(f"{source}: settings class {entry['class']!r} is unknown to this phenolens; upgrade phenolens") from None
    if not (isinstance(kind, type) and issubclass(kind, Settings)):
        raise PhenolensError(f"{source}: {entry['class']!r} is not a settings class; the run record is damaged")
    return kind.from_dict(entry["values"], source=str(source))


def is_partial(path: str | os.PathLike) -> bool:
    """Whether `path` lies in a staging folder of an unfinished (or killed) run.

    Parameters
    ----------
    path : path
        Any path.

    Returns
    -------
    bool
        True when one of its parts is a ``.NAME.partial-*`` staging folder.
    """
    return any(part.startswith(".") and PARTIAL_MARK in part for part in Path(path).resolve().parts)


def load_run(path: str | os.PathLike) -> Run:
    """Read a finished run folder.

    Parameters
    ----------
    path : path
        A folder written by a phenolens command.

    Returns
    -------
    Run
        Command, rebuilt settings objects, metrics and the whole run record.

    Raises
    ------
    PhenolensError
        When the folder is missing, a staging folder of an interrupted run, or has no complete run.json.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise PhenolensError(f"{folder}: no such run folder; pass the --out folder of a phenolens command")
    if is_partial(folder):
        raise PhenolensError(f"{folder}: the staging folder of an interrupted run; re-run the command (the next run removes it)")
    record_path = folder / RUN_RECORD
    if not record_path.is_file():
        raise PhenolensError(f"{folder}: no {RUN_RECORD}, so not a finished phenolens run; re-run the command that writes it")
    try:
        record = json.loads(record_path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise PhenolensError(f"{record_path}: unreadable run record ({error}); re-run the command") from None
    if not isinstance(record, dict) or not record.get("finished") or not isinstance(record.get("command"), str):
        raise PhenolensError(f"{record_path}: incomplete run record; re-run the command")
    if not isinstance(record.get("settings", []), list):
        raise PhenolensError(f"{record_path}: 'settings' is not a list; the run record is damaged")
    settings = [_rebuild_settings(entry, record_path) for entry in record.get("settings", [])]
    metrics: dict[str, Any] = {}
    if (folder / METRICS).is_file():
        try:
            metrics = json.loads((folder / METRICS).read_text())
        except (ValueError, UnicodeDecodeError) as error:
            raise PhenolensError(f"{folder / METRICS}: unreadable metrics ({error}); re-run the command") from None
    return Run(path=folder, command=record["command"], settings=settings, metrics=metrics, record=record)
