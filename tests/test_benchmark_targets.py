"""benchmarks/targets.py: a missed target fails only under --check."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from targets import Targets  # noqa: E402


def test_missed_target_fails_only_with_check(capsys):
    targets = Targets("demo")
    assert targets.expect("speed-up", 12.0, ">=", 10)
    assert not targets.expect("gap", 0.2, "<=", 0.05)
    assert targets.missed == ["gap"]
    assert targets.finish(check=False) == 0 and targets.finish(check=True) == 1
    assert "gap = 0.2 (target <= 0.05) MISSED" in capsys.readouterr().out


def test_all_met_passes_with_check():
    targets = Targets("demo")
    targets.expect("f1", 0.9, ">=", 0.8)
    assert targets.finish(check=True) == 0
