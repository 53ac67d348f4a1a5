"""SIGN: statistical inference graphs for CNNs (visual-word dictionaries, receptive fields,
co-occurrence statistics, maximum-likelihood node selection) and inference paths for MLPs
(an HMM with rectified-Gaussian emissions). Konforti, Shpigler, Lerner & Bar-Hillel, ECCV 2020 /
TPAMI 2022.

Names load on first use, so that the command line can read the settings classes without loading torch.
"""

from __future__ import annotations

from phenolens.core.lazy import lazy_exports

_EXPORTS = {
    "SignDictionary": "dictionary",
    "WordMaps": "dictionary",
    "histograms": "dictionary",
    "GaussianDictionary": "gmm",
    "fit_columns": "gmm",
    "InferenceGraphBuilder": "graph",
    "RectifiedGaussianHMM": "hmm",
    "OUTPUT": "layers",
    "ReceptiveFields": "receptive",
    "probe_support": "receptive",
    "Edge": "selection",
    "InferenceGraph": "selection",
    "Node": "selection",
    "select_nodes": "selection",
    "MlpTrainingSettings": "settings",
    "SignFitSettings": "settings",
    "SignGraphSettings": "settings",
    "SignHmmSettings": "settings",
    "WatermarkSettings": "settings",
    "CooccurrenceStatistics": "statistics",
    "cooccurrence": "statistics",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
