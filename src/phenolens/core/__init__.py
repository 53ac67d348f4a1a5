"""Conventions every phenolens module shares: errors, seeds, atomic outputs, progress, logging."""

from phenolens.core.errors import PhenolensError
from phenolens.core.logging import get_logger
from phenolens.core.outputs import atomic_output_dir, atomic_write_bytes, atomic_write_text, write_json
from phenolens.core.progress import progress
from phenolens.core.seeding import numpy_rng, seed_everything, torch_generator

__all__ = [
    "PhenolensError",
    "atomic_output_dir",
    "atomic_write_bytes",
    "atomic_write_text",
    "get_logger",
    "numpy_rng",
    "progress",
    "seed_everything",
    "torch_generator",
    "write_json",
]
