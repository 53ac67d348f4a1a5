"""Datasets: the registry of real public data, loaders, generic readers and typed containers."""

from phenolens.data.chunks import ImageChunkSettings, ImageSource, open_image_source
from phenolens.data.containers import UNLABELLED, ImageSet, Signal, SignalSet
from phenolens.data.loaders import describe, load
from phenolens.data.nuclei import centred_on_nuclei, nucleus_masks, otsu_thresholds
from phenolens.data.readers import (
    feature_columns,
    metadata_columns,
    read_image,
    read_image_folder,
    read_manifest,
    read_profiles,
    read_signal,
)
from phenolens.data.registry import get_dataset, registry, verify

__all__ = [
    "UNLABELLED",
    "ImageChunkSettings",
    "ImageSet",
    "ImageSource",
    "Signal",
    "SignalSet",
    "centred_on_nuclei",
    "describe",
    "feature_columns",
    "get_dataset",
    "load",
    "metadata_columns",
    "nucleus_masks",
    "open_image_source",
    "otsu_thresholds",
    "read_image",
    "read_image_folder",
    "read_manifest",
    "read_profiles",
    "read_signal",
    "registry",
    "verify",
]
