"""Explanations: attribution maps (via Captum), channel importance, faithfulness, sanity checks.

Names load on first use, so that the settings and the registry of attribution methods (which the
command line is built from) load without torch.
"""

from __future__ import annotations

from phenolens.core.lazy import lazy_exports

_EXPORTS = {
    "ATTRIBUTION_METHODS": "attribution",
    "AttributionMethod": "attribution",
    "AttributionSettings": "attribution",
    "attribute": "attribution",
    "attribute_tensor": "attribution",
    "attribution_methods": "attribution",
    "register_method": "attribution",
    "resolve_targets": "attribution",
    "ClassModelSettings": "class_model",
    "central_disc_share": "class_model",
    "class_models": "class_model",
    "first_layer_filters": "class_model",
    "visualise_classes": "class_model",
    "cam_concordance": "channels",
    "channel_occlusion": "channels",
    "deletion_insertion": "faithfulness",
    "map_ssim": "faithfulness",
    "randomized_copy": "faithfulness",
    "Explanation": "images",
    "ModelExplanation": "images",
    "explain_images": "images",
    "explain_model": "images",
    "check_sample": "images",
    "ScreenExplanation": "screen",
    "explain_screen": "screen",
    "nucleus_mass_fraction": "masks",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
