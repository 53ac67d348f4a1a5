"""Peak memory of echo detection on one long A-scan: windows keep it flat in the signal's length (issue 23).

    python benchmarks/echoes_memory.py                          # 10^6 samples, ista, smp, omp (minutes: omp ~3.5 min)
    python benchmarks/echoes_memory.py --samples 1e5 --check    # exit 1 when a method's peak exceeds --limit-mib
    python benchmarks/echoes_memory.py --methods uscnn --model runs/echoes-benchmark-small/model

Each method runs `phenolens.echoes.real.detect_real` (what `phenolens echoes detect` runs, with the
real-data settings) in a fresh process on a simulated 100 MHz A-scan with an echo every ~400 samples
and 1 % noise, and reports that process's peak resident memory (getrusage). An address-space cap
(--cap-gib) makes a method that would exhaust a shared machine fail fast with a MemoryError.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from targets import Targets, add_check_option  # noqa: E402 - the benchmarks folder is not a package


def long_scan(samples: int, seed: int = 0):
    """A 100 MHz A-scan of `samples` samples: 5 MHz echoes (sigma 128 ns) every ~400 samples, 1 % noise."""
    import numpy as np
    from scipy.signal import fftconvolve

    rng = np.random.default_rng(seed)
    spikes = np.zeros(samples)
    spikes[rng.integers(100, samples - 100, samples // 400)] = rng.uniform(0.3, 1.0, samples // 400)
    t = np.arange(-60, 61)
    pulse = np.exp(-0.5 * (t / 12.8) ** 2) * np.cos(2 * np.pi * 5.0 / 100.0 * t)
    return fftconvolve(spikes, pulse, mode="same") + 0.01 * rng.standard_normal(samples)


def measure_one(method: str, samples: int, model: Path | None, cap_gib: float) -> dict:
    """Detect with one method in this process; return its peak RSS, time and outcome."""
    cap = int(cap_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    from phenolens.data.containers import Signal
    from phenolens.echoes.detector import EchoDetector
    from phenolens.echoes.pipeline import load_uscnn
    from phenolens.echoes.real import detect_real

    scan = Signal("long", long_scan(samples))
    detector = load_uscnn(model) if method == "uscnn" else EchoDetector(method).fit()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    try:
        outcome = f"{detect_real({method: detector}, [scan])[0].n_echoes} echoes"
    except MemoryError as error:
        outcome = f"MemoryError ({str(error)[:80]})"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "method": method,
        "samples": samples,
        "peak_mib": peak,
        "before_mib": before,
        "seconds": time.perf_counter() - started,
        "outcome": outcome,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=float, default=1e6, help="samples in the A-scan")
    parser.add_argument("--methods", default="ista,smp,omp", help="comma-separated methods (uscnn needs --model)")
    parser.add_argument("--model", type=Path, default=None, help="a `phenolens echoes train` folder, for uscnn")
    parser.add_argument("--cap-gib", type=float, default=6.0, help="address-space cap per method (GiB)")
    parser.add_argument("--limit-mib", type=float, default=1024.0, help="the target: peak RSS per method (MiB)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: measure one method in this process
    add_check_option(parser)
    args = parser.parse_args()
    samples = int(args.samples)
    if args.one:
        print(json.dumps(measure_one(args.one, samples, args.model, args.cap_gib)))
        return
    targets = Targets("echoes memory")
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        command = [sys.executable, __file__, "--one", method, "--samples", str(samples), "--cap-gib", str(args.cap_gib)]
        if args.model is not None:
            command += ["--model", str(args.model)]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        result = json.loads(output.strip().splitlines()[-1])
        print(f"{method} on {samples:,} samples: peak RSS {result['peak_mib']:.0f} MiB, {result['seconds']:.0f} s, {result['outcome']}", flush=True)
        targets.expect(
            f"{method} finished within the {args.cap_gib:g} GiB cap (1 = yes)", float(not result["outcome"].startswith("MemoryError")), "==", 1
        )
        targets.expect(f"{method} peak RSS (MiB) on {samples:,} samples", result["peak_mib"], "<=", args.limit_mib)
    sys.exit(targets.finish(args.check))


if __name__ == "__main__":
    main()
