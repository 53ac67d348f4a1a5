"""`SignDictionary`: one visual-word dictionary per modelled layer of a frozen CNN (scikit-learn style).

Each modelled layer gets a diagonal GMM over its activation columns (`gmm.GaussianDictionary`).
Two losses train them, with the network frozen (activations are read under `torch.no_grad`):

- generative: the negative log-likelihood of the columns;
- discriminative: each image's posterior maps are global-average-pooled into a word histogram
  and fed to a linear classifier trained with cross-entropy (plus a small generative term that
  keeps the components densities).

The output layer is modelled by a fixed GMM with one component per class (mean = one-hot,
sigma = 0.1) over the network's softmax output.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator
from torch import nn

from phenolens.core.errors import PhenolensError
from phenolens.core.estimators import check_is_fitted
from phenolens.core.outputs import atomic_write_bytes, atomic_write_text
from phenolens.core.seeding import torch_generator
from phenolens.data.readers import one_line_message, read_json_object
from phenolens.explain.sign.gmm import GaussianDictionary, fit_columns
from phenolens.explain.sign.layers import OUTPUT, ActivationTap, check_layer_names, columns, default_layers, iter_batches, ordered_layers
from phenolens.explain.sign.receptive import ReceptiveFields
from phenolens.explain.sign.settings import DICTIONARY_LOSSES, SignFitSettings
from phenolens.nn.weights import read_tensors
from phenolens.training.checkpoint import resumable

_DEFAULT = SignFitSettings()  # the estimator's defaults are the settings' (one place for each)

OUTPUT_SIGMA = 0.1
CACHE_BYTES = 1_000_000_000  # keep every layer's maps in memory (one forward pass in all) below this size


@dataclass
class WordMaps:
    """Most probable word at every position of every modelled layer, for N images.

    Attributes
    ----------
    words : dict of str to ndarray
        Layer -> (N, H, W) word indices; the output layer's are (N, 1, 1).
    scores : dict of str to ndarray
        Layer -> (N, H, W) log posterior of the chosen word.
    probabilities : ndarray
        (N, classes) softmax output of the network.
    max_channel : dict of str to ndarray
        Layer -> (N, H, W) index of the most active channel per position (the baseline's words).
    """

    words: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]
    probabilities: np.ndarray
    max_channel: dict[str, np.ndarray]

    @property
    def predictions(self) -> np.ndarray:
        """(N,) class the network predicts for each image."""
        return self.probabilities.argmax(1)

    def flat(self, layer: str, index: np.ndarray | None = None) -> np.ndarray:
        """Row-major words of one layer.

        Parameters
        ----------
        layer : str
            A modelled layer (or ``OUTPUT``).
        index : ndarray, optional
            Images to keep (default: all).

        Returns
        -------
        ndarray
            (n, H*W) word indices.
        """
        words = self.words[layer] if index is None else self.words[layer][index]
        return words.reshape(len(words), -1)


def as_images(x) -> torch.Tensor:
    """A float32 image batch from an array or tensor.

    Parameters
    ----------
    x : array-like or Tensor
        (N, C, H, W) images.

    Returns
    -------
    Tensor
        float32 (N, C, H, W).

    Raises
    ------
    PhenolensError
        When `x` is not four-dimensional.
    """
    tensor = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).float()
    if tensor.ndim != 4:
        raise PhenolensError(f"images must be an (N, C, H, W) array, got shape {tuple(tensor.shape)}")
    return tensor


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` in evaluation mode without gradients; the caller's network is left as it was.

    Parameters
    ----------
    model : nn.Module
        The network to read activations from.

    Returns
    -------
    nn.Module
        The copy.
    """
    return copy.deepcopy(model).eval().requires_grad_(False)


class SignDictionary(BaseEstimator):
    """Visual-word dictionaries over chosen layers of a frozen CNN (a scikit-learn estimator).

    The network given is never changed: `fit` works on a frozen copy, kept in `network_`.

    Parameters
    ----------
    model : nn.Module
        The trained CNN; its output is the class scores.
    layers : list of str, optional
        Module names to model (default: ``model.stage_names()``).
    words : int or list of int
        Words K per layer: one for every layer, or one per layer.
    loss : str
        ``discriminative`` (BoW cross-entropy) or ``generative`` (negative log-likelihood).
    epochs : int
        Epochs over the images for the discriminative loss.
    updates : int
        At most this many EM passes over the activation columns for the generative loss.
    batch_size : int
        Images per discriminative step.
    lr : float
        Adam learning rate (discriminative loss).
    temperature : float, optional
        Posterior softening of the discriminative histograms (default: sqrt of the layer's channels).
    generative_weight : float
        Weight of the likelihood term in the discriminative loss.
    max_columns : int
        Activation columns sampled per layer for initialisation and the generative fit.
    receptive_method : str
        ``trace`` or ``probe`` (see `ReceptiveFields.of`).
    seed : int
        Seed of sampling, initialisation and batching.

    Attributes
    ----------
    network_ : nn.Module
        Frozen copy of `model`.
    layers_ : list of str
        Modelled layers, input to output.
    dictionaries_ : dict of str to GaussianDictionary
        One dictionary per layer.
    heads_ : dict of str to nn.Linear
        Discriminative BoW classifiers (empty for the generative loss).
    fields_ : ReceptiveFields
        Receptive fields of the modelled layers.
    output_dictionary_ : GaussianDictionary
        Fixed one-word-per-class dictionary of the output layer.
    classes_ : ndarray
        Class indices.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: list[str] | None = None,
        words: int | list[int] = _DEFAULT.words[0],
        loss: str = _DEFAULT.loss,
        epochs: int = _DEFAULT.epochs,
        updates: int = _DEFAULT.updates,
        batch_size: int = _DEFAULT.batch_size,
        lr: float = _DEFAULT.lr,
        temperature: float | None = _DEFAULT.temperature,
        generative_weight: float = _DEFAULT.generative_weight,
        max_columns: int = _DEFAULT.max_columns,
        receptive_method: str = _DEFAULT.receptive_method,
        seed: int = _DEFAULT.seed,
    ):
        self.model = model
        self.layers = layers
        self.words = words
        self.loss = loss
        self.epochs = epochs
        self.updates = updates
        self.batch_size = batch_size
        self.lr = lr
        self.temperature = temperature
        self.generative_weight = generative_weight
        self.max_columns = max_columns
        self.receptive_method = receptive_method
        self.seed = seed

    @classmethod
    def from_settings(cls, model: nn.Module, settings) -> SignDictionary:
        """An unfitted dictionary with the parameters of a `SignFitSettings`.

        Parameters
        ----------
        model : nn.Module
            The trained CNN.
        settings : SignFitSettings
            Its layers, words, loss and optimisation fields are used.

        Returns
        -------
        SignDictionary
        """
        words = settings.words[0] if len(settings.words) == 1 else list(settings.words)
        return cls(
            model, layers=list(settings.layers) or None, words=words, loss=settings.loss, epochs=settings.epochs, updates=settings.updates,
            batch_size=settings.batch_size, lr=settings.lr, temperature=settings.temperature, generative_weight=settings.generative_weight,
            max_columns=settings.max_columns, receptive_method=settings.receptive_method, seed=settings.seed,
        )  # fmt: skip

    # ----------------------------------------------------------------------------------- fitting
    def fit(self, X, y=None) -> SignDictionary:
        """Fit one dictionary per modelled layer.

        Parameters
        ----------
        X : array-like or Tensor
            (N, C, H, W) normalised images, as the network takes them.
        y : array-like, optional
            (N,) class indices; needed for the discriminative loss.

        Returns
        -------
        SignDictionary
            self, fitted.

        Raises
        ------
        PhenolensError
            For an unknown loss, missing labels, unknown or non-convolutional layers, a word count per
            layer that does not match the layers, or more words than activation columns.
        """
        if self.loss not in DICTIONARY_LOSSES:
            raise PhenolensError(f"unknown dictionary loss {self.loss!r}; use one of {', '.join(DICTIONARY_LOSSES)}")
        images = as_images(X)
        if self.loss == "discriminative" and y is None:
            raise PhenolensError("the discriminative loss needs labels; pass y or use loss='generative'")
        network = frozen_copy(self.model)
        names = check_layer_names(network, list(self.layers) if self.layers else default_layers(network))
        layers = ordered_layers(network, names, images[:1])
        sizes = [self.words] * len(layers) if isinstance(self.words, int) else list(self.words)
        if len(sizes) != len(layers):
            raise PhenolensError(f"{len(sizes)} word counts for {len(layers)} layers ({', '.join(layers)}); give one K per layer")
        self.network_, self.layers_ = network, layers
        with torch.no_grad():
            n_classes = self.network_(images[:1]).shape[1]
        self.classes_ = np.arange(n_classes)
        cache = self._cached_maps(images)
        pool = self._column_pool(images, cache)
        self.dictionaries_ = {
            layer: GaussianDictionary.initialise(pool[layer], k, seed=self.seed, name=f"layer {layer!r}") for layer, k in zip(self.layers_, sizes)
        }
        if self.loss == "generative":
            for layer, dictionary in self.dictionaries_.items():
                # one unit of a checkpointed run per layer: a resumed `sign fit` skips the layers a killed one finished
                name = f"dictionary {layer}"
                work = functools.partial(fit_columns, dictionary, pool[layer], updates=self.updates, seed=self.seed, description=name)
                resumable(dictionary, name, work)
            self.heads_ = {}
        else:
            self._fit_discriminative(images, torch.as_tensor(np.asarray(y), dtype=torch.long), n_classes, cache)
        for dictionary in self.dictionaries_.values():
            dictionary.requires_grad_(False)
        return self._attach_fields(images[:1], n_classes)

    def _attach_fields(self, example: torch.Tensor, n_classes: int) -> SignDictionary:
        """Receptive fields for inputs shaped like `example`, and the fixed output-layer dictionary."""
        self.fields_ = ReceptiveFields.of(self.network_, self.layers_, example, method=self.receptive_method)
        self.output_dictionary_ = GaussianDictionary.fixed(torch.eye(n_classes), OUTPUT_SIGMA)
        return self

    def _cached_maps(self, images: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """Every layer's maps for all images from one forward pass, or None when they would exceed CACHE_BYTES."""
        with ActivationTap(self.network_, self.layers_) as tap:
            tap.run(images[:1])
            per_image = sum(tap.outputs[layer].numel() * 4 for layer in self.layers_)
            if per_image * len(images) > CACHE_BYTES:
                return None
            parts: dict[str, list[torch.Tensor]] = {layer: [] for layer in self.layers_}
            for batch in iter_batches(images, 256):
                tap.run(batch)
                for layer in self.layers_:
                    parts[layer].append(tap.outputs[layer])
        return {layer: torch.cat(maps) for layer, maps in parts.items()}

    def _column_pool(self, images: torch.Tensor, cache: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        """Activation columns of every layer, a seeded uniform sample of at most `max_columns` per layer."""
        generator = torch_generator(self.seed)
        kept: dict[str, list[torch.Tensor]] = {layer: [] for layer in self.layers_}
        with ActivationTap(self.network_, self.layers_) as tap:
            for start in range(0, len(images), 256):
                if cache is None:
                    tap.run(images[start : start + 256])
                outputs = tap.outputs if cache is None else {layer: maps[start : start + 256] for layer, maps in cache.items()}
                for layer in self.layers_:
                    cols = columns(outputs[layer])
                    keep = self.max_columns / (len(images) * cols.shape[0] / len(outputs[layer]))
                    kept[layer].append(cols[torch.rand(len(cols), generator=generator) < keep] if keep < 1 else cols)
        return {layer: torch.cat(parts) for layer, parts in kept.items()}

    def _fit_discriminative(self, images: torch.Tensor, labels: torch.Tensor, n_classes: int, cache: dict[str, torch.Tensor] | None) -> None:
        from phenolens.training import fit
        from phenolens.training.loop import CosineAnnealing

        keys = [f"layer{i}" for i in range(len(self.layers_))]
        with torch.random.fork_rng(devices=[]):  # the heads' initialisation follows `seed`, not whatever ran before in the process
            torch.manual_seed(self.seed)
            heads = nn.ModuleDict({key: nn.Linear(d.n_words, n_classes) for key, d in zip(keys, self.dictionaries_.values())})
        bank = nn.ModuleDict({"dictionaries": nn.ModuleDict(dict(zip(keys, self.dictionaries_.values()))), "heads": heads})
        tap = ActivationTap(self.network_, self.layers_)

        def step(bank: nn.ModuleDict, batch, epoch: int) -> torch.Tensor:
            index, y = batch
            if cache is None:
                tap.run(images[index])
            outputs = tap.outputs if cache is None else {layer: maps[index] for layer, maps in cache.items()}
            loss = 0.0
            for key, layer in zip(keys, self.layers_):
                dictionary = bank["dictionaries"][key]
                log_joint = dictionary.log_joint(columns(outputs[layer]))
                histogram = torch.softmax(log_joint / self._temperature(dictionary), 1).reshape(len(y), -1, dictionary.n_words).mean(1)
                loss = loss + F.cross_entropy(bank["heads"][key](histogram * dictionary.n_words), y)
                loss = loss - self.generative_weight * torch.logsumexp(log_joint, 1).mean() / dictionary.n_features
            return loss

        with tap:
            schedule = [CosineAnnealing(self.epochs)]
            train = (torch.arange(len(images)), labels)
            fit(bank, train, step, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, callbacks=schedule, seed=self.seed)
        self.heads_ = {layer: bank["heads"][key].requires_grad_(False) for key, layer in zip(keys, self.layers_)}

    def _temperature(self, dictionary: GaussianDictionary) -> float:
        return float(self.temperature) if self.temperature else float(np.sqrt(dictionary.n_features))

    # ---------------------------------------------------------------------------------- encoding
    @property
    def sizes_(self) -> dict[str, int]:
        """K of every modelled layer, the output layer included."""
        check_is_fitted(self, "dictionaries_")
        return {**{layer: d.n_words for layer, d in self.dictionaries_.items()}, OUTPUT: self.output_dictionary_.n_words}

    def encode(self, X, batch_size: int = 128) -> WordMaps:
        """Word maps: the most probable word and its log posterior at every position of every layer.

        Distinct from `transform`, which pools these maps into bag-of-words histograms: `encode`
        keeps where each word occurs, which the inference graphs and their drawings need.

        Parameters
        ----------
        X : array-like or Tensor
            (N, C, H, W) normalised images.
        batch_size : int
            Images per forward pass.

        Returns
        -------
        WordMaps
            Words, scores, max-channel baseline words and the network's probabilities (output layer last).

        Raises
        ------
        NotFittedError
            Before `fit`.
        """
        check_is_fitted(self, "dictionaries_")
        images = as_images(X)
        words: dict[str, list] = {layer: [] for layer in [*self.layers_, OUTPUT]}
        scores: dict[str, list] = {layer: [] for layer in words}
        probabilities, max_channel = [], {layer: [] for layer in self.layers_}
        with ActivationTap(self.network_, self.layers_) as tap, torch.no_grad():
            for batch in iter_batches(images, batch_size):
                probability = torch.softmax(tap.run(batch), 1)
                probabilities.append(probability.numpy())
                maps = {**tap.outputs, OUTPUT: probability[:, :, None, None]}
                for layer in self.layers_:
                    max_channel[layer].append(maps[layer].argmax(1).numpy().astype(np.int32))
                for layer, dictionary in [*self.dictionaries_.items(), (OUTPUT, self.output_dictionary_)]:
                    word, score = dictionary.assign(columns(maps[layer]))
                    shape = (len(batch), *maps[layer].shape[2:])
                    words[layer].append(word.reshape(shape).numpy().astype(np.int32))
                    scores[layer].append(score.reshape(shape).numpy())

        def joined(parts: dict[str, list]) -> dict[str, np.ndarray]:
            return {k: np.concatenate(v) for k, v in parts.items()}

        return WordMaps(joined(words), joined(scores), np.concatenate(probabilities), joined(max_channel))

    def transform(self, X) -> dict[str, np.ndarray]:
        """Bag-of-words histograms of images.

        Parameters
        ----------
        X : array-like or Tensor
            (N, C, H, W) normalised images.

        Returns
        -------
        dict of str to ndarray
            Layer -> (N, K) fraction of the layer's positions holding each word.

        Raises
        ------
        NotFittedError
            Before `fit`.
        """
        maps = self.encode(X)
        return {layer: histograms(maps.words[layer], d.n_words) for layer, d in self.dictionaries_.items()}

    # ------------------------------------------------------------------------------ persistence
    def save(self, folder: str | Path) -> Path:
        """Write the fitted dictionaries (never pickles).

        Parameters
        ----------
        folder : path
            Receives ``dictionary.safetensors`` and ``dictionary.json``.

        Returns
        -------
        Path
            `folder`.

        Raises
        ------
        NotFittedError
            Before `fit`.
        """
        from safetensors.torch import save

        check_is_fitted(self, "dictionaries_")
        folder = Path(folder)
        tensors = {f"{layer}/{name}": value.contiguous() for layer, d in self.dictionaries_.items() for name, value in d.state_dict().items()}
        for layer, head in self.heads_.items():
            tensors.update({f"{layer}/head.{name}": value.contiguous() for name, value in head.state_dict().items()})
        config = {
            "layers": self.layers_,
            "words": [self.dictionaries_[layer].n_words for layer in self.layers_],
            "features": [self.dictionaries_[layer].n_features for layer in self.layers_],
            "reg_covar": [self.dictionaries_[layer].reg_covar for layer in self.layers_],
            "classes": len(self.classes_),
            "loss": self.loss,
            "temperature": self.temperature,
            "receptive_method": self.receptive_method,
            "seed": self.seed,
        }
        atomic_write_bytes(folder / "dictionary.safetensors", save(tensors))
        atomic_write_text(folder / "dictionary.json", json.dumps(config, indent=2) + "\n")
        return folder

    @classmethod
    def from_parts(
        cls, model: nn.Module, dictionaries: dict[str, GaussianDictionary], n_classes: int, example: torch.Tensor, heads: dict | None = None, **params
    ) -> SignDictionary:
        """A fitted SignDictionary from ready dictionaries.

        Parameters
        ----------
        model : nn.Module
            The network the dictionaries model (left unchanged; a frozen copy is kept).
        dictionaries : dict of str to GaussianDictionary
            Layer -> dictionary, input to output.
        n_classes : int
            Classes of the network's output.
        example : Tensor
            (1, C, H, W) input that sizes the receptive fields.
        heads : dict of str to nn.Linear, optional
            Discriminative BoW classifiers per layer.
        **params
            Further constructor parameters (loss, temperature, receptive_method, seed).

        Returns
        -------
        SignDictionary
            Fitted.

        Raises
        ------
        PhenolensError
            When a layer name does not exist in `model`.
        """
        self = cls(model, layers=list(dictionaries), words=[d.n_words for d in dictionaries.values()], **params)
        self.network_ = frozen_copy(model)
        self.layers_ = check_layer_names(self.network_, list(dictionaries))
        self.classes_ = np.arange(n_classes)
        self.dictionaries_ = {layer: d.requires_grad_(False) for layer, d in dictionaries.items()}
        self.heads_ = {layer: head.requires_grad_(False) for layer, head in (heads or {}).items()}
        return self._attach_fields(example, n_classes)

    @classmethod
    def load(cls, folder: str | Path, model: nn.Module, example: torch.Tensor) -> SignDictionary:
        """Rebuild a fitted SignDictionary written by `save`.

        Parameters
        ----------
        folder : path
            A folder written by `save`.
        model : nn.Module
            The network the dictionaries were fitted on.
        example : Tensor
            (1, C, H, W) input that sizes the receptive fields.

        Returns
        -------
        SignDictionary
            Fitted.

        Raises
        ------
        PhenolensError
            When the folder holds no dictionary, its config or tensors are damaged or do not fit each other,
            or its layers do not exist in `model`.
        """
        folder = Path(folder)
        config_path = folder / "dictionary.json"
        if not config_path.is_file():
            raise PhenolensError(f"{config_path}: no dictionary config; give a folder written by `phenolens sign fit`")
        config = _read_config(config_path)
        tensors_path = folder / "dictionary.safetensors"
        tensors = read_tensors(tensors_path, "re-run `phenolens sign fit`")
        check_layer_names(model, config["layers"])
        dictionaries, heads = {}, {}
        for layer, k, d, reg in zip(config["layers"], config["words"], config["features"], config["reg_covar"]):
            own = {name.split("/", 1)[1]: v for name, v in tensors.items() if name.startswith(f"{layer}/")}
            dictionaries[layer] = GaussianDictionary(k, d, reg)
            try:
                dictionaries[layer].load_state_dict({name: v for name, v in own.items() if not name.startswith("head.")})
                if "head.weight" in own:
                    heads[layer] = nn.Linear(k, config["classes"])
                    heads[layer].load_state_dict({name[5:]: v for name, v in own.items() if name.startswith("head.")})
            except RuntimeError as error:  # missing, unexpected or mis-shaped tensors
                raise PhenolensError(
                    f"{tensors_path}: the tensors of layer {layer!r} do not fit {config_path.name} ({one_line_message(error)}); "
                    "re-run `phenolens sign fit`"
                ) from None
        params = {key: config[key] for key in ("loss", "temperature", "receptive_method", "seed")}
        return cls.from_parts(model, dictionaries, config["classes"], example, heads, **params)


_CONFIG_KEYS = ("layers", "words", "features", "reg_covar", "classes", "loss", "temperature", "receptive_method", "seed")


def _read_config(path: Path) -> dict:
    """`dictionary.json` checked: the fit's parameters valid as `SignFitSettings`, one word count, feature count and regulariser per layer."""
    config = read_json_object(path, "dictionary config")
    missing = [key for key in _CONFIG_KEYS if key not in config]
    if missing:
        raise PhenolensError(f"{path}: missing {', '.join(missing)}; re-run `phenolens sign fit`")
    SignFitSettings.from_dict({key: config[key] for key in ("layers", "words", "loss", "temperature", "receptive_method", "seed")}, source=str(path))
    per_layer = {"words": config["words"], "features": config["features"], "reg_covar": config["reg_covar"]}
    for key, values in per_layer.items():
        if not isinstance(values, list) or len(values) != len(config["layers"]) or not config["layers"]:
            raise PhenolensError(f"{path}: {key!r} must give one value for each of the {len(config['layers'])} layers; re-run `phenolens sign fit`")
    positive = [isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in (*config["features"], config["classes"])]
    if not all(positive) or not all(isinstance(r, int | float) and not isinstance(r, bool) and r > 0 for r in config["reg_covar"]):
        raise PhenolensError(
            f"{path}: 'features' and 'classes' must be positive integers and 'reg_covar' positive numbers; re-run `phenolens sign fit`"
        )
    return config


def histograms(words: np.ndarray, n_words: int) -> np.ndarray:
    """Bag-of-words histograms from word maps.

    Parameters
    ----------
    words : ndarray
        (N, ...) word indices.
    n_words : int
        K.

    Returns
    -------
    ndarray
        (N, K) fraction of each image's positions holding each word.
    """
    flat = words.reshape(len(words), -1).astype(np.int64)
    keys = flat + n_words * np.arange(len(flat))[:, None]
    counts = np.bincount(keys.ravel(), minlength=n_words * len(flat)).reshape(len(flat), n_words)
    return counts / flat.shape[1]
