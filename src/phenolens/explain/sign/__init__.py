"""SIGN: statistical inference graphs for CNNs (visual-word dictionaries, receptive fields,
co-occurrence statistics, maximum-likelihood node selection) and inference paths for MLPs
(an HMM with rectified-Gaussian emissions). Konforti, Shpigler, Lerner & Bar-Hillel, ECCV 2020 /
TPAMI 2022."""

from phenolens.explain.sign.dictionary import SignDictionary, WordMaps, histograms
from phenolens.explain.sign.gmm import GaussianDictionary, fit_columns
from phenolens.explain.sign.graph import InferenceGraphBuilder
from phenolens.explain.sign.hmm import RectifiedGaussianHMM
from phenolens.explain.sign.layers import OUTPUT
from phenolens.explain.sign.receptive import ReceptiveFields, probe_support
from phenolens.explain.sign.selection import Edge, InferenceGraph, Node, select_nodes
from phenolens.explain.sign.settings import MlpTrainingSettings, SignFitSettings, SignGraphSettings, SignHmmSettings, WatermarkSettings
from phenolens.explain.sign.statistics import CooccurrenceStatistics, cooccurrence

__all__ = [
    "OUTPUT",
    "CooccurrenceStatistics",
    "Edge",
    "GaussianDictionary",
    "InferenceGraph",
    "InferenceGraphBuilder",
    "MlpTrainingSettings",
    "Node",
    "RectifiedGaussianHMM",
    "ReceptiveFields",
    "SignDictionary",
    "SignFitSettings",
    "SignGraphSettings",
    "SignHmmSettings",
    "WatermarkSettings",
    "WordMaps",
    "cooccurrence",
    "fit_columns",
    "histograms",
    "probe_support",
    "select_nodes",
]
