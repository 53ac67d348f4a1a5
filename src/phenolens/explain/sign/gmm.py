"""Diagonal Gaussian mixtures ("visual word" dictionaries) over activation columns, fitted in torch.

A dictionary is a K-component diagonal GMM over D-dimensional columns. The generative fit
(`fit_columns`) is expectation-maximisation with scikit-learn's semantics (`reg_covar` added to every
variance, stopped when the mean log-likelihood per column changes by less than `tol`), made fast by
where it starts:

1. Words are seeded on the columns that repeat exactly and often. ReLU activations of blank background
   repeat exactly, and a word that sits on such a column collapses to a point mass (every variance
   `reg_covar`) whose members gain hundreds of nats; EM from random means finds those point masses
   only slowly, one variance at a time, and often not at all.
2. EM runs to convergence on a random sample of the columns (each pass a fraction of the cost).
3. Exact EM passes over all columns (E-step and closed-form M-step, chunked to bound memory, float64
   like scikit-learn) polish the sample's solution until the tolerance is met.

The parameters live in coordinates standardised per channel (mean/std of the initial columns) so one
learning rate suits every layer in the discriminative fit; densities are always reported in the
original units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from phenolens.core.errors import PhenolensError
from phenolens.core.seeding import torch_generator

VARIANCE_COLUMNS = 1000  # columns the initial variances are estimated from
LOG_2PI = math.log(2.0 * math.pi)
# scikit-learn adds 10 machine epsilons to every word's responsibility mass so an empty word stays finite
EMPTY_WORD_MASS = 10 * float(np.finfo(np.float64).eps)
# a variance of exactly zero (a point mass before `reg_covar`) is stored as the smallest normal float32
SMALLEST_VARIANCE = float(torch.finfo(torch.float32).tiny)


class GaussianDictionary(nn.Module):
    """K diagonal Gaussians over D-dimensional columns: `log_joint(x)[m, k] = log pi_k + log N(x_m | mu_k, diag var_k)`.

    Parameters
    ----------
    n_words : int
        K, the number of Gaussians (words).
    n_features : int
        D, the channels of a column.
    reg_covar : float
        Added to every variance, in original units, as scikit-learn's `reg_covar`.
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
        """A dictionary with means at `n_words` random columns, the per-channel variance of 1,000 random columns, uniform priors.

        Parameters
        ----------
        columns : torch.Tensor
            (M, D) activation columns.
        n_words : int
            K, between 1 and M.
        seed : int
            Chooses the columns.
        reg_covar : float
            Added to every variance (original units).
        name : str
            The layer, named in errors.

        Returns
        -------
        GaussianDictionary

        Raises
        ------
        PhenolensError
            When `columns` is not a matrix or K is outside 1..M.
        """
        columns = check_columns(columns, name)
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
        """A frozen dictionary with the given means, one shared isotropic `sigma` and uniform priors.

        Parameters
        ----------
        means : torch.Tensor
            (K, D) word means.
        sigma : float
            Standard deviation of every word in every channel.

        Returns
        -------
        GaussianDictionary
        """
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

    def centres(self) -> np.ndarray:
        """(K, D) word means in the original units."""
        return (self.means.detach() * self.scale + self.shift).numpy()

    def variances(self) -> np.ndarray:
        """(K, D) word variances in the original units (regularisation included)."""
        return (self.log_variances.detach().exp() * self.scale**2 + self.reg_covar).numpy()

    def priors(self) -> np.ndarray:
        """(K,) word priors."""
        return torch.softmax(self.logits.detach(), 0).numpy()

    def mixture(self) -> Mixture:
        """The parameters in original units and float64, variances without `reg_covar`, as EM works on them."""
        with torch.no_grad():
            scale = self.scale.double()
            return Mixture(
                torch.log_softmax(self.logits.double(), 0),
                self.means.double() * scale + self.shift.double(),
                self.log_variances.double().exp() * scale**2,
            )

    def set_mixture(self, mixture: Mixture) -> None:
        """Store `mixture` (original units, variances without `reg_covar`) in this dictionary's coordinates."""
        with torch.no_grad():
            scale = self.scale.double()
            self.logits.copy_(mixture.log_weights)
            self.means.copy_((mixture.means - self.shift.double()) / scale)
            self.log_variances.copy_((mixture.variances / scale**2).clamp_min(SMALLEST_VARIANCE).log())


@dataclass
class Mixture:
    """Diagonal GMM parameters in original units, float64: (K,) log weights, (K, D) means, (K, D) variances without `reg_covar`."""

    log_weights: torch.Tensor
    means: torch.Tensor
    variances: torch.Tensor


@dataclass(frozen=True)
class EMTrace:
    """What `fit_columns` did.

    Attributes
    ----------
    seeded_words : int
        Words moved onto exactly repeated columns before EM.
    sample_log_likelihoods : tuple[float, ...]
        Mean log-likelihood per column of the sample, before each warm-up pass.
    log_likelihoods : tuple[float, ...]
        Mean log-likelihood per column of all columns, before each exact pass.
    converged : bool
        Whether the exact passes met the tolerance within the allowed number.
    """

    seeded_words: int
    sample_log_likelihoods: tuple[float, ...]
    log_likelihoods: tuple[float, ...]
    converged: bool


def check_columns(columns, name: str = "layer") -> torch.Tensor:
    """`columns` as a float32 (M, D) tensor.

    Parameters
    ----------
    columns : array-like
        Activation columns.
    name : str
        The layer, named in the error.

    Returns
    -------
    torch.Tensor

    Raises
    ------
    PhenolensError
        When `columns` is not a non-empty matrix of finite numbers.
    """
    columns = torch.as_tensor(columns, dtype=torch.float32)
    if columns.ndim != 2 or len(columns) == 0:
        raise PhenolensError(f"{name}: columns must be a non-empty (M, D) matrix, got shape {tuple(columns.shape)}")
    if not torch.isfinite(columns).all():
        raise PhenolensError(f"{name}: the activation columns hold NaN or infinite values; check the network and its inputs")
    return columns


def expectation(columns: torch.Tensor, mixture: Mixture, reg_covar: float, chunk_size: int, statistics: bool = True):
    """One E-step: the mean log-likelihood per column and the responsibility-weighted sums of the M-step.

    Computed in float64 over chunks of `chunk_size` columns, the squared distances expanded into two
    matrix products per chunk (as scikit-learn does).

    Parameters
    ----------
    columns : torch.Tensor
        (M, D) columns, any float dtype.
    mixture : Mixture
        Current parameters.
    reg_covar : float
        Added to every variance.
    chunk_size : int
        Columns per chunk (bounds memory to about 8 x chunk_size x max(D, K) float64 numbers).
    statistics : bool
        False to skip the sums (scoring only).

    Returns
    -------
    tuple
        (mean log-likelihood, (K,) responsibility mass, (K, D) weighted sum of x, (K, D) weighted sum of x^2);
        the last three are None when `statistics` is False.
    """
    variances = mixture.variances + reg_covar
    precisions = 1.0 / variances
    n_words, n_features = mixture.means.shape
    constant = mixture.log_weights - 0.5 * (n_features * LOG_2PI + variances.log().sum(1) + (mixture.means**2 * precisions).sum(1))
    half_precisions, scaled_means = (-0.5 * precisions).T.contiguous(), (mixture.means * precisions).T.contiguous()
    total = 0.0
    mass = torch.zeros(n_words, dtype=torch.float64) if statistics else None
    first = torch.zeros(n_words, n_features, dtype=torch.float64) if statistics else None
    second = torch.zeros(n_words, n_features, dtype=torch.float64) if statistics else None
    for chunk in columns.split(chunk_size):
        x = chunk.double()
        squares = x * x
        joint = torch.addmm(constant, squares, half_precisions).addmm_(x, scaled_means)
        norm = torch.logsumexp(joint, 1)
        total += float(norm.sum())
        if statistics:
            responsibilities = joint.sub_(norm[:, None]).exp_()
            mass += responsibilities.sum(0)
            first.addmm_(responsibilities.T, x)
            second.addmm_(responsibilities.T, squares)
    return total / len(columns), mass, first, second


def maximisation(mass: torch.Tensor, first: torch.Tensor, second: torch.Tensor, n_columns: int) -> Mixture:
    """The closed-form M-step of a diagonal GMM from the E-step's sums (variances without `reg_covar`).

    Parameters
    ----------
    mass, first, second : torch.Tensor
        (K,), (K, D), (K, D) sums of the responsibilities, of responsibility x column and of responsibility x column^2.
    n_columns : int
        Columns the sums ran over.

    Returns
    -------
    Mixture
    """
    mass = mass + EMPTY_WORD_MASS
    means = first / mass[:, None]
    variances = (second / mass[:, None] - means**2).clamp_min(0.0)
    return Mixture((mass / n_columns).log() - math.log(float((mass / n_columns).sum())), means, variances)


def run_em(
    columns: torch.Tensor, mixture: Mixture, reg_covar: float, tol: float, max_passes: int, chunk_size: int
) -> tuple[Mixture, list[float], bool]:
    """EM passes over `columns` until the mean log-likelihood changes by less than `tol` (scikit-learn's rule).

    Parameters
    ----------
    columns : torch.Tensor
        (M, D) columns.
    mixture : Mixture
        Start.
    reg_covar : float
        Added to every variance.
    tol : float
        Convergence threshold on the change of the mean log-likelihood per column between passes.
    max_passes : int
        At most this many passes.
    chunk_size : int
        Columns per E-step chunk.

    Returns
    -------
    tuple
        (the mixture after the last M-step, the mean log-likelihood before each pass, whether it converged).
    """
    history: list[float] = []
    for _ in range(max_passes):
        log_likelihood, mass, first, second = expectation(columns, mixture, reg_covar, chunk_size)
        history.append(log_likelihood)
        mixture = maximisation(mass, first, second, len(columns))
        if len(history) > 1 and abs(history[-1] - history[-2]) < tol:
            return mixture, history, True
    return mixture, history, False


def seed_repeated_columns(mixture: Mixture, sample: torch.Tensor, min_share: float, max_words: int) -> tuple[Mixture, int]:
    """Move words onto the columns that repeat exactly in at least `min_share` of `sample` (most frequent first).

    Each seeded word gets its column as mean, zero variance (a point mass, `reg_covar` added when
    evaluated) and the column's share as weight; the other words keep their parameters and share the
    remaining weight in proportion to their old weights. The words replaced are the last ones.

    Parameters
    ----------
    mixture : Mixture
        Start for the words that are not seeded.
    sample : torch.Tensor
        (S, D) columns whose repeats are counted.
    min_share : float
        A column must make up at least this share of the sample (and appear at least twice).
    max_words : int
        At most this many words are seeded.

    Returns
    -------
    tuple
        (the seeded mixture, the number of seeded words).
    """
    rows, counts = torch.unique(sample, dim=0, return_counts=True)
    frequent = counts >= max(2.0, min_share * len(sample))
    rows, counts = rows[frequent], counts[frequent]
    order = counts.argsort(descending=True, stable=True)[:max_words]
    if len(order) == 0:
        return mixture, 0
    rows, shares = rows[order].double(), counts[order].double() / len(sample)
    kept = len(mixture.means) - len(rows)
    weights = mixture.log_weights[:kept].softmax(0) * (1.0 - shares.sum()).clamp_min(1.0 / len(sample))
    seeded = Mixture(
        torch.cat([weights.log(), shares.log()]),
        torch.cat([mixture.means[:kept], rows]),
        torch.cat([mixture.variances[:kept], torch.zeros_like(rows)]),
    )
    return seeded, len(rows)


def fit_columns(
    dictionary: GaussianDictionary,
    columns: torch.Tensor,
    updates: int = 100,
    batch_size: int = 65536,
    seed: int = 0,
    description: str = "fitting dictionary",
    tol: float = 1e-3,
    sample_columns: int = 100_000,
    repeat_share: float = 5e-4,
    max_seeded_fraction: float = 0.5,
) -> EMTrace:
    """Fit `dictionary` in place to `columns` by EM with scikit-learn's semantics, started from its current parameters.

    Frequent exactly repeated columns first become point-mass words, then EM runs to convergence on a
    random sample of `sample_columns` columns, then exact EM passes over all columns run until the mean
    log-likelihood per column changes by less than `tol` (scikit-learn's `tol`), at most `updates` of them.

    Parameters
    ----------
    dictionary : GaussianDictionary
        Start (for example `GaussianDictionary.initialise`); its `reg_covar` is used as scikit-learn's.
    columns : torch.Tensor
        (M, D) activation columns.
    updates : int
        At most this many exact EM passes over all columns (and as many on the sample).
    batch_size : int
        Columns per E-step chunk: bounds memory, does not change the result.
    seed : int
        Chooses the sample.
    description : str
        Names the fit in errors.
    tol : float
        Convergence threshold on the change of the mean log-likelihood per column (scikit-learn's `tol`).
    sample_columns : int
        Columns of the warm-up sample; when M is at most this, the warm-up is skipped.
    repeat_share : float
        A column that repeats exactly in at least this share of the sample becomes a point-mass word.
    max_seeded_fraction : float
        At most this fraction of the words is seeded on repeated columns.

    Returns
    -------
    EMTrace

    Raises
    ------
    PhenolensError
        When the columns are not a finite matrix with the dictionary's number of channels, or a setting is out of range.
    """
    columns = check_columns(columns, description)
    if columns.shape[1] != dictionary.n_features:
        raise PhenolensError(f"{description}: columns have {columns.shape[1]} channels but the dictionary has {dictionary.n_features}")
    if updates < 1 or batch_size < 1 or sample_columns < 1 or not tol > 0 or not 0 <= max_seeded_fraction < 1:
        raise PhenolensError(f"{description}: need updates >= 1, batch_size >= 1, sample_columns >= 1, tol > 0 and 0 <= max_seeded_fraction < 1")
    reg_covar = dictionary.reg_covar
    if not reg_covar > 0:
        raise PhenolensError(f"{description}: reg_covar must be > 0 for EM (a word on repeated columns would have zero variance); got {reg_covar}")
    sample = columns[torch.randperm(len(columns), generator=torch_generator(seed))[:sample_columns]]
    mixture, seeded = seed_repeated_columns(dictionary.mixture(), sample, repeat_share, int(max_seeded_fraction * dictionary.n_words))
    sample_history: list[float] = []
    if len(sample) < len(columns):
        mixture, sample_history, _ = run_em(sample, mixture, reg_covar, tol, updates, batch_size)
    mixture, history, converged = run_em(columns, mixture, reg_covar, tol, updates, batch_size)
    dictionary.set_mixture(mixture)
    return EMTrace(seeded, tuple(sample_history), tuple(history), converged)
