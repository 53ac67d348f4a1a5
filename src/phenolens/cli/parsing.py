"""Option values the commands share a parser for."""

from __future__ import annotations

from phenolens.core.errors import PhenolensError


def integer_list(text: str, option: str, minimum: int = 1) -> list[int]:
    """Comma-separated integers, each >= `minimum`; a one-line error names the option otherwise."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < minimum:
        raise PhenolensError(f"{option} {text!r}: give comma-separated integers >= {minimum}, such as 2,2")
    return values
