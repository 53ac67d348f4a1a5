"""Diagonal Gaussian mixtures ("visual word" dictionaries) over activation columns, fitted in torch.

A dictionary is a K-component diagonal GMM over D-dimensional columns. It is fitted by mini-batch
gradient descent (Adam through `phenolens.training.fit`) on the negative log-likelihood, starting
from means at K random columns, variances from 1,000 random columns and uniform priors. The
parameters live in coordinates standardised per channel (mean/std of the initial columns) so one
learning rate suits every layer; densities are always reported in the original units.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from phenolens.core.errors import PhenolensError
from phenolens.core.seeding import torch_generator

VARIANCE_COLUMNS = 1000  # columns the initial variances are estimated from
LOG_2PI = math.log(2.0 * math.pi)


class GaussianDictionary(nn.Module):
    """K diagonal Gaussians over D-dimensional columns: `log_joint(x)[m, k] = log pi_k + log N(x_m | mu_k, diag var_k)`.

    `reg_covar` is added to every variance (in original units), as in scikit-learn.
    """

    def __init__(self, n_words: int, n_features: int, reg_covar: float = 1e-6):
        super().__init__()
        self.reg_covar = float(reg_covar)
        self.means = nn.Parameter(torch.zeros(n_words, n_features))
        self.log_variances = nn.Parameter(torch.zeros(n_words, n_features))
        self.logits = nn.Parameter(torch.zeros(n_words))
        self.register_buffer("shift", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))

    @property
    def n_words(self) -> int:
        return self.means.shape[0]

    @property
    def n_features(self) -> int:
        return self.means.shape[1]

    @classmethod
    def initialise(cls, columns: torch.Tensor, n_words: int, seed: int = 0, reg_covar: float = 1e-6, name: str = "layer") -> GaussianDictionary:
        """Means = `n_words` random columns, variances = per-channel variance of 1,000 random columns, uniform priors."""
        columns = torch.as_tensor(columns, dtype=torch.float32)
        if columns.ndim != 2:
            raise PhenolensError(f"{name}: columns must be a (M, D) matrix, got shape {tuple(columns.shape)}")
        if n_words < 1 or n_words > len(columns):
            raise PhenolensError(f"{name}: K = {n_words} words but only {len(columns)} activation columns; use K <= {len(columns)} or more images")
        generator = torch_generator(seed)
        dictionary = cls(n_words, columns.shape[1], reg_covar)
        sample = columns[torch.randperm(len(columns), generator=generator)[:VARIANCE_COLUMNS]]
        shift, spread = sample.mean(0), sample.std(0)
        scale = torch.where(spread > 1e-6, spread, torch.ones_like(spread))  # constant channels stay unscaled
        chosen = columns[torch.randperm(len(columns), generator=generator)[:n_words]]
        variance = (spread / scale) ** 2 + 1e-6
        with torch.no_grad():
            dictionary.shift.copy_(shift)
            dictionary.scale.copy_(scale)
            dictionary.means.copy_((chosen - shift) / scale)
            dictionary.log_variances.copy_(variance.log().expand(n_words, -1))
        return dictionary

    @classmethod
    def fixed(cls, means: torch.Tensor, sigma: float) -> GaussianDictionary:
        """A frozen dictionary with the given means, one shared isotropic `sigma` and uniform priors."""
        dictionary = cls(*means.shape, reg_covar=0.0)
        with torch.no_grad():
            dictionary.means.copy_(means)
            dictionary.log_variances.fill_(2.0 * math.log(sigma))
        dictionary.requires_grad_(False)
        return dictionary

    def log_joint(self, x: torch.Tensor) -> torch.Tensor:
        """(M, K) log prior + log density of each column under each word, in the units of `x`."""
        z = (x - self.shift.to(x.dtype)) / self.scale.to(x.dtype)
        variance = self.log_variances.to(x.dtype).exp() + self.reg_covar / self.scale.to(x.dtype) ** 2
        precision = 1.0 / variance
        means = self.means.to(x.dtype)
        # sum_d (z - mu)^2 / var expanded into matrix products: the costly part is two (M, D) x (D, K) products.
        distance = (z * z) @ precision.T - 2.0 * z @ (means * precision).T + (means * means * precision).sum(1)
        log_norm = -0.5 * (variance.log().sum(1) + self.n_features * LOG_2PI) - self.scale.to(x.dtype).log().sum()
        return torch.log_softmax(self.logits.to(x.dtype), 0) + log_norm - 0.5 * distance

    def log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """(M,) log density of each column under the mixture."""
        return torch.logsumexp(self.log_joint(x), dim=1)

    def posteriors(self, x: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """(M, K) word posteriors, softened by `temperature` (1 = the mixture's own posteriors)."""
        return torch.softmax(self.log_joint(x) / temperature, dim=1)

    def assign(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(M,) most probable word of each column and its log posterior."""
        log_posterior = torch.log_softmax(self.log_joint(x), dim=1)
        score, word = log_posterior.max(dim=1)
        return word, score

    def optimizer(self, lr: float, variance_lr: float) -> torch.optim.Optimizer:
        """Adam with its own step for the log-variances: they must travel far (ReLU channels that are
        exactly zero in a word shrink towards `reg_covar`), the means only within the data's range."""
        return torch.optim.Adam([{"params": [self.means, self.logits], "lr": lr}, {"params": [self.log_variances], "lr": variance_lr}])

    def centres(self) -> np.ndarray:
        """(K, D) word means in the original units."""
        return (self.means.detach() * self.scale + self.shift).numpy()

    def variances(self) -> np.ndarray:
        """(K, D) word variances in the original units (regularisation included)."""
        return (self.log_variances.detach().exp() * self.scale**2 + self.reg_covar).numpy()

    def priors(self) -> np.ndarray:
        return torch.softmax(self.logits.detach(), 0).numpy()


def fit_columns(
    dictionary: GaussianDictionary,
    columns: torch.Tensor,
    updates: int = 1000,
    batch_size: int = 2048,
    lr: float = 0.01,
    variance_lr: float = 0.3,
    seed: int = 0,
    description: str = "fitting dictionary",
):
    """Fit `dictionary` in place by Adam on the mean negative log-likelihood of `columns`; return the History.

    About `updates` optimiser steps are taken (whole epochs, at least one), with a cosine-decayed
    learning rate. Columns are shuffled once and served in contiguous chunks, so an epoch costs a
    few hundred tensor slices rather than a million item look-ups.
    """
    from phenolens.training import fit
    from phenolens.training.loop import CosineAnnealing

    columns = torch.as_tensor(columns, dtype=torch.float32)
    chunk = max(1, min(1024, batch_size, len(columns) // 16))
    usable = len(columns) // chunk * chunk
    order = torch.randperm(len(columns), generator=torch_generator(seed))[:usable]
    chunks = columns[order].reshape(-1, chunk, columns.shape[1])
    chunks_per_batch = max(1, batch_size // chunk)
    epochs = max(1, math.ceil(updates / math.ceil(len(chunks) / chunks_per_batch)))

    def step(model: GaussianDictionary, batch, epoch: int) -> torch.Tensor:
        return -model.log_likelihood(batch[0].reshape(-1, model.n_features)).mean() / model.n_features

    return fit(
        dictionary,
        (chunks,),
        step,
        epochs=epochs,
        batch_size=chunks_per_batch,
        optimizer=dictionary.optimizer(lr, variance_lr),
        callbacks=[CosineAnnealing(epochs)],
        seed=seed,
        description=description,
    )
