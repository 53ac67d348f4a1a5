"""Diagonal Gaussian mixtures ("visual word" dictionaries) over activation columns, fitted in torch.

A dictionary is a K-component diagonal GMM over D-dimensional columns. The generative fit
(`fit_columns`) is scikit-learn's GaussianMixture recipe in torch (a k-means partition, one M-step,
exact expectation-maximisation passes over all columns, chunked to bound memory, with `reg_covar` added
to every variance, stopped when the mean log-likelihood per column changes by less than `tol`) with one
change: EM over all columns starts from the best of several k-means + EM fits on a random sample
(`best_sample_start`), chosen by the mean log-likelihood of all columns.

Why (issue 25, 10^6 Fashion-MNIST activation columns of benchmarks/sign_dictionary_speed.py, held-out
log-likelihood per column): from scikit-learn's own k-means partition this EM ends where scikit-learn's
does (seed 0: 42.729 both), so the gap to scikit-learn is the start alone. The words' variances collapse
to `reg_covar` on the channels where their members are exactly zero (ReLU), and which zero patterns they
end up on is decided by the start: six k-means starts on a 10^5-column sample of seed 0 ended their
sample EM between 38.7 and 42.1, so one start is a lottery and the best of several, by likelihood on all
columns, is the better bet. Tried before (session 11, seed 0; scikit-learn 42.73): Adam 25.7; EM from
random columns 42.18; one k-means++ start on a sample with Lloyd over all columns 41.42; stepwise EM then
EM 42.30; over-relaxed EM and words seeded on exactly repeated columns lower still.

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
# a variance of exactly zero (a word whose members are all zero in a channel) is stored as the smallest normal float32
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
        """The parameters as EM works on them.

        Returns
        -------
        Mixture
            Log weights, means and variances without `reg_covar`, in original units and float64.
        """
        with torch.no_grad():
            scale = self.scale.double()
            return Mixture(
                torch.log_softmax(self.logits.double(), 0),
                self.means.double() * scale + self.shift.double(),
                self.log_variances.double().exp() * scale**2,
            )

    def set_mixture(self, mixture: Mixture) -> None:
        """Store `mixture` in this dictionary's standardised coordinates (a zero variance as the smallest float32).

        Parameters
        ----------
        mixture : Mixture
            Log weights, means and variances without `reg_covar`, in original units.
        """
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
    log_likelihoods : tuple[float, ...]
        Mean log-likelihood per column of all columns, before each EM pass over them (non-decreasing up to rounding).
    converged : bool
        Whether the passes met the tolerance within the allowed number.
    start_log_likelihoods : tuple[float, ...]
        Mean log-likelihood per column of all columns under each start fitted on the sample; EM went on from the highest.
    start : Mixture or None
        That start: the mixture the EM over all columns began from.
    """

    log_likelihoods: tuple[float, ...]
    converged: bool
    start_log_likelihoods: tuple[float, ...] = ()
    start: Mixture | None = None


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


def expectation(columns: torch.Tensor, mixture: Mixture, reg_covar: float, chunk_size: int, statistics: bool = True, dtype=torch.float32):
    """One E-step: the mean log-likelihood per column and the responsibility-weighted sums of the M-step.

    The squared distances are expanded into matrix products (as scikit-learn does): one of the chunk's
    [x^2, x] with the words' [-precision / 2; mean x precision], one back for the sums, computed in
    `dtype`; sums over chunks are kept in float64. float32 is exact enough for EM on activations: a
    word's variance only reaches `reg_covar` on channels where its members are exactly zero and its
    mean is then ~1e-5, so the expansion does not cancel.

    Parameters
    ----------
    columns : torch.Tensor
        (M, D) columns.
    mixture : Mixture
        Current parameters.
    reg_covar : float
        Added to every variance.
    chunk_size : int
        Columns per chunk (bounds memory to a few chunk_size x max(D, K) numbers).
    statistics : bool
        False to skip the sums (scoring only).
    dtype : torch.dtype
        Precision of the per-chunk products (float64 to score exactly as scikit-learn does).

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
    constant = constant.to(dtype)
    # [x^2, x] @ [-precision / 2; mean * precision]: one (chunk, 2D) x (2D, K) product per chunk, and one back for the sums
    weights = torch.cat([-0.5 * precisions.T, (mixture.means * precisions).T]).to(dtype).contiguous()
    total = 0.0
    mass = torch.zeros(n_words, dtype=torch.float64) if statistics else None
    sums = torch.zeros(n_words, 2 * n_features, dtype=torch.float64) if statistics else None
    powers = torch.empty(min(chunk_size, len(columns)), 2 * n_features, dtype=dtype)
    for chunk in columns.split(chunk_size):
        both = powers[: len(chunk)]
        both[:, n_features:] = chunk
        torch.mul(both[:, n_features:], both[:, n_features:], out=both[:, :n_features])
        joint = torch.addmm(constant, both, weights)
        norm = torch.logsumexp(joint, 1)
        total += float(norm.sum(dtype=torch.float64))
        if statistics:
            responsibilities = joint.sub_(norm[:, None]).exp_()
            mass += responsibilities.sum(0, dtype=torch.float64)
            sums += (responsibilities.T @ both).double()
    if not statistics:
        return total / len(columns), None, None, None
    return total / len(columns), mass, sums[:, n_features:], sums[:, :n_features]


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


def kmeans_plus_plus(columns: torch.Tensor, n_words: int, generator: torch.Generator) -> torch.Tensor:
    """(K, D) greedy k-means++ seeds (scikit-learn's: 2 + log K candidates per seed, the one that lowers the inertia most).

    Parameters
    ----------
    columns : torch.Tensor
        (M, D) columns, M >= K.
    n_words : int
        K.
    generator : torch.Generator
        Draws the seeds.

    Returns
    -------
    torch.Tensor
    """
    candidates_per_seed = 2 + int(math.log(n_words))
    norms = (columns * columns).sum(1)

    def distances(points: torch.Tensor) -> torch.Tensor:
        return (norms[:, None] - 2.0 * columns @ points.T + (points * points).sum(1)).clamp_min(0.0)

    seeds = [columns[torch.randint(len(columns), (1,), generator=generator)]]
    closest = distances(seeds[0])[:, 0]
    for _ in range(1, n_words):
        weights = closest if closest.sum() > 0 else torch.ones_like(closest)
        candidates = torch.multinomial(weights, candidates_per_seed, replacement=True, generator=generator)
        trial = torch.minimum(closest[:, None], distances(columns[candidates]))
        best = int(trial.sum(0).argmin())
        seeds.append(columns[candidates[best : best + 1]])
        closest = trial[:, best]
    return torch.cat(seeds)


def kmeans_partition(columns: torch.Tensor, seeds: torch.Tensor, max_iterations: int, chunk_size: int) -> torch.Tensor:
    """(M,) nearest-centre labels after Lloyd iterations from `seeds`, stopped when no label changes.

    Parameters
    ----------
    columns : torch.Tensor
        (M, D) columns.
    seeds : torch.Tensor
        (K, D) starting centres.
    max_iterations : int
        At most this many Lloyd iterations.
    chunk_size : int
        Columns per chunk of the distance computation.

    Returns
    -------
    torch.Tensor
    """
    centres, labels = seeds.clone(), None
    for _ in range(max_iterations + 1):
        squared = (centres * centres).sum(1)
        new = torch.cat([(squared - 2.0 * chunk @ centres.T).argmin(1) for chunk in columns.split(chunk_size)])
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        counts = torch.bincount(labels, minlength=len(centres)).to(columns.dtype)
        sums = torch.zeros_like(centres).index_add_(0, labels, columns)
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1.0)[:, None], centres)  # an empty cluster keeps its centre
    return labels


def kmeans_start(columns: torch.Tensor, n_words: int, generator: torch.Generator, kmeans_iterations: int, chunk_size: int) -> Mixture:
    """A mixture from one k-means partition of `columns`: each word's weight, mean and variance from one cluster.

    Parameters
    ----------
    columns : torch.Tensor
        (M, D) float32 columns, M >= `n_words`.
    n_words : int
        K.
    generator : torch.Generator
        Draws the k-means++ seeds.
    kmeans_iterations : int
        At most this many Lloyd iterations.
    chunk_size : int
        Columns per chunk of the distance computation.

    Returns
    -------
    Mixture
    """
    labels = kmeans_partition(columns, kmeans_plus_plus(columns, n_words, generator), kmeans_iterations, chunk_size)
    responsibilities = torch.nn.functional.one_hot(labels, n_words).to(columns.dtype)
    return maximisation(
        responsibilities.sum(0).double(), (responsibilities.T @ columns).double(), (responsibilities.T @ (columns * columns)).double(), len(columns)
    )


def best_sample_start(
    columns: torch.Tensor,
    n_words: int,
    seed: int,
    sample_columns: int,
    starts: int,
    kmeans_iterations: int,
    reg_covar: float,
    tol: float,
    max_passes: int,
    chunk_size: int,
) -> tuple[Mixture, list[float]]:
    """The start of the EM over all columns: the best of `starts` k-means + EM fits on one random sample.

    Each start is k-means++ seeds and Lloyd iterations on the sample, then EM on the sample to `tol`;
    the one whose mixture gives all columns the highest mean log-likelihood is kept.

    Parameters
    ----------
    columns : torch.Tensor
        (M, D) float32 columns, M >= `n_words`.
    n_words : int
        K.
    seed : int
        Chooses the sample and the k-means++ seeds.
    sample_columns : int
        Columns in the sample (all of them when M is smaller).
    starts : int
        k-means starts to choose from.
    kmeans_iterations : int
        At most this many Lloyd iterations per start.
    reg_covar, tol : float
        As in `run_em`.
    max_passes : int
        At most this many EM passes over the sample per start.
    chunk_size : int
        Columns per chunk.

    Returns
    -------
    tuple
        (the chosen mixture, the mean log-likelihood of all columns under each start's mixture).
    """
    generator = torch_generator(seed)
    sample = columns[torch.randperm(len(columns), generator=generator)[:sample_columns]]
    best, scores = None, []
    for _ in range(starts):
        fitted, _, _ = run_em(sample, kmeans_start(sample, n_words, generator, kmeans_iterations, chunk_size), reg_covar, tol, max_passes, chunk_size)
        scores.append(expectation(columns, fitted, reg_covar, chunk_size, statistics=False)[0])
        if scores[-1] >= max(scores):
            best = fitted
    return best, scores


def fit_columns(
    dictionary: GaussianDictionary,
    columns: torch.Tensor,
    updates: int = 100,
    batch_size: int = 65536,
    seed: int = 0,
    description: str = "fitting dictionary",
    tol: float = 1e-3,
    sample_columns: int = 100_000,
    starts: int = 6,
    kmeans_iterations: int = 30,
) -> EMTrace:
    """Fit `dictionary` in place to `columns` by EM from the best of several k-means starts on a sample.

    scikit-learn's GaussianMixture recipe (k-means partition, one M-step, EM until the mean log-likelihood
    per column changes by less than `tol`), with the k-means start replaced by the best of `starts`
    (see `best_sample_start`): on a random sample of `sample_columns` columns, greedy k-means++ seeds,
    at most `kmeans_iterations` Lloyd iterations and EM to `tol`, kept by the mean log-likelihood of all
    columns. Then EM passes over all columns from it, at most `updates`. Which optimum EM reaches depends on
    its start by several nats per column on activations (words collapse onto exact zeros), so one start
    is a lottery; the sample keeps the extra starts cheap. The dictionary's standardisation (`shift`,
    `scale`) and `reg_covar` are kept; its parameters are replaced.

    Parameters
    ----------
    dictionary : GaussianDictionary
        The dictionary to fit (for example from `GaussianDictionary.initialise`); its `reg_covar` is scikit-learn's.
    columns : torch.Tensor
        (M, D) activation columns, M >= K.
    updates : int
        At most this many EM passes, over the sample per start and over all columns (scikit-learn's `max_iter`).
    batch_size : int
        Columns per chunk of the E-step and k-means: bounds memory, does not change the result beyond rounding.
    seed : int
        Chooses the sample and the k-means++ seeds.
    description : str
        Names the fit in errors.
    tol : float
        Convergence threshold on the change of the mean log-likelihood per column (scikit-learn's `tol`).
    sample_columns : int
        Columns of the sample the starts are fitted on.
    starts : int
        k-means starts to choose from.
    kmeans_iterations : int
        At most this many Lloyd iterations per start.

    Returns
    -------
    EMTrace

    Raises
    ------
    PhenolensError
        When the columns are not a finite matrix with the dictionary's channels and at least K rows, or a setting is out of range.
    """
    columns = check_columns(columns, description)
    if columns.shape[1] != dictionary.n_features or len(columns) < dictionary.n_words:
        raise PhenolensError(
            f"{description}: {tuple(columns.shape)} columns for a dictionary of {dictionary.n_words} words over {dictionary.n_features} channels; "
            "give at least one column per word, with the dictionary's channels"
        )
    if updates < 1 or batch_size < 1 or sample_columns < dictionary.n_words or starts < 1 or kmeans_iterations < 0 or not tol > 0:
        raise PhenolensError(
            f"{description}: need updates >= 1, batch_size >= 1, sample_columns >= K, starts >= 1, kmeans_iterations >= 0 and tol > 0"
        )
    if not dictionary.reg_covar > 0:
        raise PhenolensError(f"{description}: reg_covar must be > 0 for EM (a word on constant channels would have zero variance)")
    start, start_log_likelihoods = best_sample_start(
        columns, dictionary.n_words, seed, sample_columns, starts, kmeans_iterations, dictionary.reg_covar, tol, updates, batch_size
    )
    mixture, log_likelihoods, converged = run_em(columns, start, dictionary.reg_covar, tol, updates, batch_size)
    dictionary.set_mixture(mixture)
    return EMTrace(tuple(log_likelihoods), converged, tuple(start_log_likelihoods), start)
