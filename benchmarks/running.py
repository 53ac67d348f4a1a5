"""What several benchmarks measure or run the same way: this process's CPU seconds, and a phenolens command in a
child process. Imported like `targets` (``sys.path.insert(0, str(Path(__file__).parent))``)."""

from __future__ import annotations

import resource
import subprocess
import sys


def cpu_seconds() -> float:
    """CPU time of this process so far.

    Returns
    -------
    float
        User plus system seconds.
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def phenolens(*args: str) -> None:
    """Run one phenolens command in a child process; stop the benchmark when it fails.

    Parameters
    ----------
    *args : str
        The command line after ``phenolens`` (``"images", "train", ...``).

    Raises
    ------
    SystemExit
        Naming the command and its exit status when it fails.
    """
    status = subprocess.run([sys.executable, "-m", "phenolens", *args], check=False).returncode
    if status != 0:
        raise SystemExit(f"phenolens {args[0]} {args[1]} failed with exit status {status}")
