"""Targets that a benchmark prints and, with `--check`, enforces.

Every benchmark builds one `Targets`, records each figure against its target with `Targets.expect`,
and ends with ``sys.exit(targets.finish(args.check))``: with `--check` a missed target is exit status 1,
without it the run only reports.

    targets = Targets("echoes")
    targets.expect("US-CNN AUC at lambda 1 / best baseline", ratio, ">=", 1.5)
    sys.exit(targets.finish(args.check))
"""

from __future__ import annotations

import argparse
import operator
from dataclasses import dataclass, field

_OPERATORS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}


@dataclass
class Targets:
    """The targets of one benchmark run and whether each was met."""

    name: str
    rows: list[tuple[str, float, str, float, bool]] = field(default_factory=list)

    def expect(self, quantity: str, value: float, relation: str, target: float) -> bool:
        """Record `value` against `relation target` (">=", "<=", ">", "<", "=="), print it, return whether it is met."""
        met = bool(_OPERATORS[relation](value, target))
        self.rows.append((quantity, float(value), relation, float(target), met))
        print(f"TARGET {self.name}: {quantity} = {value:.4g} (target {relation} {target:g}) {'met' if met else 'MISSED'}", flush=True)
        return met

    @property
    def missed(self) -> list[str]:
        """The quantities whose target was missed."""
        return [quantity for quantity, _, _, _, met in self.rows if not met]

    def finish(self, check: bool) -> int:
        """Print a summary; return 1 when `check` and a target was missed, else 0."""
        print(
            f"{self.name}: {len(self.rows) - len(self.missed)} of {len(self.rows)} targets met"
            + (f"; missed: {'; '.join(self.missed)}" if self.missed else "")
        )
        return 1 if check and self.missed else 0


def add_check_option(parser: argparse.ArgumentParser) -> None:
    """Add `--check` (exit status 1 when a target is missed) to a benchmark's parser."""
    parser.add_argument("--check", action="store_true", help="exit with status 1 when a target is missed")
