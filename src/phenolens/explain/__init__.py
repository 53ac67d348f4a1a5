"""Explanations: attribution maps (via Captum), channel importance, faithfulness, sanity checks."""

from phenolens.explain.attribution import METHODS, AttributionSettings, attribute, attribute_tensor, resolve_targets
from phenolens.explain.channels import cam_concordance, channel_occlusion
from phenolens.explain.faithfulness import deletion_insertion, map_ssim, randomized_copy
from phenolens.explain.images import Explanation, explain_images
from phenolens.explain.masks import nucleus_mass_fraction

__all__ = [
    "METHODS",
    "AttributionSettings",
    "Explanation",
    "attribute",
    "attribute_tensor",
    "cam_concordance",
    "channel_occlusion",
    "deletion_insertion",
    "explain_images",
    "map_ssim",
    "nucleus_mass_fraction",
    "randomized_copy",
    "resolve_targets",
]
