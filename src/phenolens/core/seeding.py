"""Seeded randomness: every random step in phenolens takes a seed and goes through here."""

from __future__ import annotations

import random

import numpy as np


def numpy_rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    """A numpy Generator from a seed (an existing Generator is passed through).

    Parameters
    ----------
    seed : int, numpy.random.Generator or None
        The seed; None draws fresh entropy (not reproducible).

    Returns
    -------
    numpy.random.Generator
        A PCG64 generator, or `seed` itself.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def torch_generator(seed: int):
    """A CPU torch.Generator seeded with `seed`.

    Parameters
    ----------
    seed : int
        The seed.

    Returns
    -------
    torch.Generator
        A new generator (torch is imported on first use).
    """
    import torch

    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return generator


def seed_everything(seed: int) -> None:
    """Seed Python, numpy's legacy global state and torch, and make torch deterministic.

    Parameters
    ----------
    seed : int
        The seed (numpy's global state takes it modulo 2**32).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    import torch

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
