"""Torch modules and their weights I/O (safetensors + JSON config; never pickles)."""

from phenolens.nn.weights import ARCHITECTURES, ModelCard, load_model, register_architecture, save_model

__all__ = ["ARCHITECTURES", "ModelCard", "load_model", "register_architecture", "save_model"]
