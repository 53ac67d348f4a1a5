"""Counterfactual explanations: ECINN on an invertible ResNet, autoencoder interpolation, the Wachter baseline.

    from phenolens.explain.counterfactual import (
        CounterfactualExplanationSettings, CounterfactualTrainingSettings, explain_counterfactuals, train_counterfactual_model,
    )
    model, split = train_counterfactual_model(images, CounterfactualTrainingSettings(classes=("CytoplasmicGFP", "NuclearGFP")))
    run = explain_counterfactuals(model, test_images, CounterfactualExplanationSettings(target="NuclearGFP"))

The names are imported on first use, so that the command line can read the settings classes
without loading torch.
"""

from __future__ import annotations

from phenolens.core.lazy import lazy_exports

_EXPORTS = {
    "CounterfactualExplanationSettings": "settings",
    "CounterfactualTrainingSettings": "settings",
    "CounterfactualModel": "model",
    "Counterfactuals": "ecinn",
    "ECINN": "ecinn",
    "ExplanationRun": "evaluate",
    "GradientCounterfactuals": "gradient",
    "InterpolationCounterfactuals": "interpolation",
    "LatentInterpolation": "interpolation",
    "NucleusRegions": "known_answer",
    "explain_counterfactuals": "evaluate",
    "train_counterfactual_model": "training",
    "wachter_counterfactuals": "gradient",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
