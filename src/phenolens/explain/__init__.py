"""Explanations: attribution maps (via Captum), channel importance, faithfulness, sanity checks."""

from phenolens.explain.attribution import (
    ATTRIBUTION_METHODS,
    AttributionMethod,
    AttributionSettings,
    attribute,
    attribute_tensor,
    attribution_methods,
    register_method,
    resolve_targets,
)
from phenolens.explain.channels import cam_concordance, channel_occlusion
from phenolens.explain.faithfulness import deletion_insertion, map_ssim, randomized_copy
from phenolens.explain.images import Explanation, ModelExplanation, explain_images, explain_model
from phenolens.explain.masks import nucleus_mass_fraction

__all__ = [
    "ATTRIBUTION_METHODS",
    "AttributionMethod",
    "AttributionSettings",
    "Explanation",
    "ModelExplanation",
    "attribute",
    "attribute_tensor",
    "attribution_methods",
    "cam_concordance",
    "channel_occlusion",
    "deletion_insertion",
    "explain_images",
    "explain_model",
    "map_ssim",
    "nucleus_mass_fraction",
    "randomized_copy",
    "register_method",
    "resolve_targets",
]
