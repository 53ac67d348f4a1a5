"""One way to map a pure function over shards: in this process, or on a dask.distributed cluster.

A pipeline splits its input into shards (a plate of wells, a chunk of images), hands
`Executor.map` a top-level function of one shard, and owns the reduce. The same code runs
serially, on a `LocalCluster` (``--scheduler local:N``), on an existing scheduler
(``tcp://HOST:PORT``) or on one described by a scheduler file (``scheduler.json``, as
dask-jobqueue and ``dask scheduler --scheduler-file`` write it), and gives the same results.

Shard functions must be importable top-level functions; their arguments should be small (paths,
index ranges, settings objects): workers read the data themselves. State that is expensive to
build and the same for every shard (a model read from its safetensors file) is built once per
worker process through `cached`.
"""

from __future__ import annotations

import collections
import uuid
from collections.abc import Callable, Container, Iterable, Iterator
from pathlib import Path
from typing import Any

from phenolens.core.errors import PhenolensError
from phenolens.core.logging import get_logger

log = get_logger(__name__)

SCHEDULER_HELP = (
    "Where shards run: 'serial' (this process), 'local:N' (a Dask LocalCluster of N worker processes), "
    "'tcp://HOST:PORT' (a running Dask scheduler) or a scheduler.json file (dask-jobqueue, dask scheduler --scheduler-file)."
)

_process_cache: dict[Any, Any] = {}


def cached(key: Any, factory: Callable[[], Any]) -> Any:
    """Build a value once per process (per Dask worker) and reuse it for every later shard.

    Parameters
    ----------
    key : hashable
        What identifies the value, e.g. ``("model", path, mtime)``.
    factory : callable
        Builds the value when this process has none for `key`.

    Returns
    -------
    Any
        The value for `key`.
    """
    if key not in _process_cache:
        _process_cache[key] = factory()
    return _process_cache[key]


class Executor:
    """Map a function over shards serially or on dask.distributed; results come back in shard order.

    Parameters
    ----------
    client : distributed.Client, optional
        A connected Dask client; None runs every shard in this process.
    description : str
        What the executor is, for logs and run records (e.g. ``"Dask LocalCluster of 2 workers"``).
    cluster : distributed.LocalCluster, optional
        A cluster this executor started and must close.

    Examples
    --------
    >>> with Executor.from_option("serial") as executor:
    ...     [result for _, result in executor.map(abs, [-1, 2, -3])]
    [1, 2, 3]
    """

    def __init__(self, client=None, description: str = "serial", cluster=None) -> None:
        self.client = client
        self.description = description
        self.cluster = cluster

    @classmethod
    def from_option(cls, scheduler: str | None) -> Executor:
        """Build the executor a ``--scheduler`` value names.

        Parameters
        ----------
        scheduler : str or None
            ``None``, ``""`` or ``"serial"``; ``"local:N"``; ``"tcp://HOST:PORT"`` (or ``tls://``,
            ``inproc://``); or the path of an existing ``scheduler.json``.

        Returns
        -------
        Executor
            Connected; use it as a context manager so a started cluster is closed.

        Raises
        ------
        PhenolensError
            For a value of another form, ``local:0``, a missing scheduler file, or a scheduler that
            cannot be reached (one line naming ``--scheduler``).
        """
        text = (scheduler or "serial").strip()
        if text == "serial":
            return cls()
        if text.startswith("local:"):
            count = text[len("local:") :]
            if not count.isdigit() or int(count) < 1:
                raise PhenolensError(f"--scheduler {text}: 'local:N' needs a whole number of workers N >= 1, e.g. local:2")
            return cls._local(int(count))
        if "://" in text:
            return cls._connect(text, address=text)
        if text.endswith(".json"):
            path = Path(text).expanduser()
            if not path.is_file():
                raise PhenolensError(f"--scheduler {text}: no such scheduler file; start the scheduler with --scheduler-file {text} first")
            return cls._connect(text, scheduler_file=str(path))
        raise PhenolensError(f"--scheduler {text}: use serial, local:N, tcp://HOST:PORT or a scheduler.json file")

    @classmethod
    def _local(cls, workers: int) -> Executor:
        from distributed import Client, LocalCluster

        # One thread per worker process, and one BLAS/torch thread per worker: N workers use N cores.
        threads = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, env=threads)
        return cls(Client(cluster), f"Dask LocalCluster of {workers} worker{'s' if workers > 1 else ''}", cluster)

    @classmethod
    def _connect(cls, option: str, **where: str) -> Executor:
        from distributed import Client

        try:
            client = Client(timeout="20s", **where)
        except (OSError, TimeoutError) as error:
            raise PhenolensError(f"--scheduler {option}: cannot reach the Dask scheduler ({error}); check it is running") from None
        return cls(client, f"Dask scheduler at {client.scheduler.address}")

    @property
    def workers(self) -> int:
        """How many shards can run at once (1 when serial)."""
        if self.client is None:
            return 1
        return max(1, sum(self.client.nthreads().values()))

    def map(self, function: Callable[[Any], Any], shards: Iterable[Any], skip: Container[int] = ()) -> Iterator[tuple[int, Any]]:
        """Apply `function` to every shard; yield ``(index, result)`` in shard order.

        On Dask at most ``2 x workers`` shards are in flight (the workers connected at the time, so
        workers that join later get shards too), so results that are not yet consumed do not pile up
        in memory; a shard whose worker dies is retried by Dask.

        Parameters
        ----------
        function : callable
            A top-level (picklable) function of one shard.
        shards : iterable
            The shards, in order.
        skip : container of int
            Indices not to run (shards a resumed run has already finished); they are not yielded.

        Yields
        ------
        tuple of (int, Any)
            The shard's index and the function's result.

        Raises
        ------
        PhenolensError
            Raised by the function on any shard (as is), or when a worker died on a shard more often
            than Dask retries.
        """
        if self.client is None:
            for index, shard in enumerate(shards):
                if index not in skip:
                    yield index, function(shard)
            return
        from distributed import KilledWorker

        in_flight: collections.deque = collections.deque()
        call = uuid.uuid4().hex[:12]  # keys unique per call: a later map of the same function never meets an earlier result
        pending = ((index, shard) for index, shard in enumerate(shards) if index not in skip)
        for index, shard in pending:
            in_flight.append((index, self.client.submit(function, shard, pure=False, key=f"{function.__name__}-{index}-{call}")))
            # Counted again each time: workers that join later (batch jobs still queued when the run started) widen the window.
            if len(in_flight) >= 2 * self.workers:
                yield self._collect(*in_flight.popleft(), KilledWorker)
        while in_flight:
            yield self._collect(*in_flight.popleft(), KilledWorker)

    @staticmethod
    def _collect(index: int, future, killed: type[Exception]) -> tuple[int, Any]:
        try:
            return index, future.result()
        except killed as error:
            raise PhenolensError(f"shard {index}: a Dask worker died running it ({error}); re-run (with --resume where offered)") from None
        except RuntimeError as error:
            if "deserializ" not in str(error):
                raise
            cause = f"{type(error.__cause__).__name__}: {error.__cause__}" if error.__cause__ else "a different environment"
            raise PhenolensError(f"--scheduler: the Dask cluster could not load the task ({cause}); install this phenolens on every worker") from None
        finally:
            future.release()

    def close(self) -> None:
        """Disconnect the client and close a cluster this executor started."""
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        self.client = self.cluster = None

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Executor({self.description})"
