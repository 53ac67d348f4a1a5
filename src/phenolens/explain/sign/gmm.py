"""Diagonal Gaussian mixtures ("visual word" dictionaries) over activation columns, fitted in torch.

A dictionary is a K-component diagonal GMM over D-dimensional columns. The generative fit
(`fit_columns`) is scikit-learn's GaussianMixture recipe in torch (a k-means partition, one M-step,
expectation-maximisation passes chunked to bound memory, with `reg_covar` added to every variance,
stopped when a pass changes the mean log-likelihood per column by less than `tol`) with two changes:
the start is the winner of a race of many k-means starts on growing random samples (`halving_start`),
and EM is accelerated by SQUAREM (`run_em`).

Why (issue 25, 10^6 Fashion-MNIST activation columns of benchmarks/sign_dictionary_speed.py, held-out
log-likelihood per column): from scikit-learn's own k-means partition plain EM here ends where
scikit-learn's does (seed 0: 42.729 both), so the gap to scikit-learn is the start alone. The words'
variances collapse to `reg_covar` on the channels where their members are exactly zero (ReLU), and which
zero patterns they end up on is decided by the start: starts of one seed end several nats apart, so one
start is a lottery. A start's rank after 20 passes on 10^4 columns predicts its rank at the end well
enough that 24 cheap starts, 6 survivors on 5 x 10^4 and 1 on 2 x 10^5, then 12 accelerated passes over
all columns, reach held-out 43.97 / 49.54 / 36.66 on seeds 0 / 1 / 2 (scikit-learn 42.73 / 49.52 / 33.35;
session 12's six starts fitted to convergence on 10^5 columns 44.20 / 49.20 / 34.87) with about 30
passes' worth of E-steps against 80-100. Tried before
(sessions 11-12, seed 0; scikit-learn 42.73): Adam 25.7; EM from random columns 42.18; one k-means++ start
on a sample with Lloyd over all columns 41.42; stepwise EM then EM 42.30; over-relaxed EM and words
seeded on exactly repeated columns lower still; k-means on columns extended by their zero pattern gave
no better starts (session 13).

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

    def as_vector(self, reg_covar: float) -> torch.Tensor:
        """The parameters as one vector in which an EM step is extrapolated: log weights, means, log(variance + `reg_covar`).

        Parameters
        ----------
        reg_covar : float
            Added to the variances before the logarithm (so a variance of zero stays finite).

        Returns
        -------
        torch.Tensor
            (K + 2 K D,) float64.
        """
        return torch.cat([self.log_weights, self.means.flatten(), (self.variances + reg_covar).log().flatten()])

    @classmethod
    def from_vector(cls, vector: torch.Tensor, n_words: int, n_features: int, reg_covar: float) -> Mixture:
        """The inverse of `as_vector`: weights renormalised, variances below `reg_covar` raised to zero before it is subtracted.

        Parameters
        ----------
        vector : torch.Tensor
            (K + 2 K D,) as `as_vector` lays it out.
        n_words, n_features : int
            K and D.
        reg_covar : float
            As given to `as_vector`.

        Returns
        -------
        Mixture
        """
        split = n_words + n_words * n_features
        log_weights = vector[:n_words] - torch.logsumexp(vector[:n_words], 0)
        variances = (vector[split:].view(n_words, n_features).exp() - reg_covar).clamp_min(0.0)
        return cls(log_weights, vector[n_words:split].view(n_words, n_features), variances)


@dataclass(frozen=True)
class EMTrace:
    """What `fit_columns` did.

    Attributes
    ----------
    log_likelihoods : tuple[float, ...]
        Mean log-likelihood per column of all columns at each parameter set EM over all columns evaluated
        (plain and extrapolated steps; non-decreasing up to rounding).
    converged : bool
        Whether a plain EM pass over all columns changed it by less than the tolerance within the allowed passes.
    start_log_likelihoods : tuple[float, ...]
        Mean log-likelihood per column of all columns under each candidate that survived the samples; EM went on from the highest
        (one survivor: its log-likelihood, the first of `log_likelihoods`).
    start : Mixture or None
        That candidate: the mixture the EM over all columns began from.
    column_passes : float
        Work done, in passes over all columns: the columns of every E-step (on samples and on all columns) divided by M.
    full_passes : int
        E-steps over all columns (EM passes and the scoring of the surviving candidates).
    """

    log_likelihoods: tuple[float, ...]
    converged: bool
    start_log_likelihoods: tuple[float, ...] = ()
    start: Mixture | None = None
    column_passes: float = 0.0
    full_passes: int = 0


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


def column_powers(columns: torch.Tensor) -> torch.Tensor:
    """(M, 2D + 1) [x^2, x, 1] of each column, in its dtype: what every E-step multiplies, computed once per fit.

    The ones carry each word's constant term through the E-step's product and give each word's
    responsibility mass in the M-step's product (a separate float64 sum cost as much as the product).

    Parameters
    ----------
    columns : torch.Tensor
        (M, D) columns.

    Returns
    -------
    torch.Tensor
    """
    return torch.cat([columns * columns, columns, torch.ones(len(columns), 1, dtype=columns.dtype)], 1)


class PassCounter:
    """Counts the work of one fit's E-steps: the columns they ran over, and how many ran over all `total` columns.

    Parameters
    ----------
    total : int
        M, the columns of the fit.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.columns = 0
        self.full_passes = 0

    def add(self, columns: int) -> None:
        """Count one E-step over `columns` columns."""
        self.columns += columns
        self.full_passes += columns == self.total


def expectation(
    powers: torch.Tensor, mixture: Mixture, reg_covar: float, chunk_size: int, statistics: bool = True, counter: PassCounter | None = None
) -> tuple[float, Mixture | None]:
    """One E-step: the mean log-likelihood per column and the responsibility-weighted sums of the M-step.

    The squared distances are expanded into matrix products (as scikit-learn does): one of the chunk's
    [x^2, x, 1] (`column_powers`) with the words' [-precision / 2; mean x precision; constant], one back for the sums,
    in the dtype of `powers`; sums over chunks are kept in float64. float32 is exact enough for EM on
    activations: a word's variance only reaches `reg_covar` on channels where its members are exactly zero
    and its mean is then ~1e-5, so the expansion does not cancel. Log joints more than 80 nats below a
    column's best word are raised to -80 before the exponential: their responsibilities (< 2e-35) do not
    change any sum, and exponentials of numbers near -1e6 (a nonzero channel under a collapsed variance)
    take torch's slow path, which made them 40 % of a pass.

    Parameters
    ----------
    powers : torch.Tensor
        (M, 2D + 1) `column_powers` of the columns; float32 for fitting, float64 to score exactly as scikit-learn does.
    mixture : Mixture
        Current parameters.
    reg_covar : float
        Added to every variance.
    chunk_size : int
        Columns per chunk (bounds memory to a few chunk_size x K numbers).
    statistics : bool
        False to skip the sums (scoring only).
    counter : PassCounter, optional
        Adds the columns of this E-step.

    Returns
    -------
    tuple
        (mean log-likelihood, the mixture of the M-step that follows, or None when `statistics` is False).
    """
    variances = mixture.variances + reg_covar
    precisions = 1.0 / variances
    n_words, n_features = mixture.means.shape
    constant = mixture.log_weights - 0.5 * (n_features * LOG_2PI + variances.log().sum(1) + (mixture.means**2 * precisions).sum(1))
    weights = torch.cat([-0.5 * precisions.T, (mixture.means * precisions).T, constant[None]]).to(powers.dtype).contiguous()
    total = 0.0
    sums = torch.zeros(n_words, 2 * n_features + 1, dtype=torch.float64)
    for chunk in powers.split(chunk_size):
        joint = chunk @ weights
        best = joint.max(1, keepdim=True).values
        joint.sub_(best).clamp_min_(-80.0).exp_()
        norm = joint.sum(1, keepdim=True)
        total += float((best + norm.log()).sum(dtype=torch.float64))
        if statistics:
            sums += (joint.div_(norm).T @ chunk).double()
    if counter is not None:
        counter.add(len(powers))
    if not statistics:
        return total / len(powers), None
    return total / len(powers), maximisation(sums[:, -1], sums[:, n_features:-1], sums[:, :n_features], len(powers))


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
    powers: torch.Tensor,
    mixture: Mixture,
    reg_covar: float,
    tol: float,
    max_passes: int,
    chunk_size: int,
    accelerate: bool = True,
    counter: PassCounter | None = None,
) -> tuple[Mixture, list[float], bool]:
    """EM passes until one plain pass changes the mean log-likelihood by less than `tol` (scikit-learn's rule), at most `max_passes`.

    With `accelerate`, SQUAREM (Varadhan & Roland 2008, scheme S3): two EM steps θ1 = F(θ0), θ2 = F(θ1)
    give r = θ1 - θ0 and v = θ2 - θ1 - r; the step α = -max(1, min(step_max, |r| / |v|)) extrapolates to
    θ0 - 2 α r + α² v, and one EM step from there is the next θ0. Safeguard: an extrapolated point whose
    log-likelihood is below θ1's is dropped for θ2 and the largest allowed step shrinks, so an extrapolation
    never does worse than the plain steps it replaces (EM itself may lose a few thousandths of a nat where a
    word collapses: variance + `reg_covar` is not the M-step's maximiser there, in scikit-learn's EM too).
    EM on activations crawls (variances collapse onto exactly-zero channels over dozens of passes);
    SQUAREM takes about half the passes to the same optimum.

    Parameters
    ----------
    powers : torch.Tensor
        (M, 2D + 1) `column_powers` of the columns.
    mixture : Mixture
        Start.
    reg_covar : float
        Added to every variance.
    tol : float
        Convergence threshold on the change of the mean log-likelihood per column across one plain EM pass.
    max_passes : int
        At most this many E-steps (plain and extrapolated).
    chunk_size : int
        Columns per E-step chunk.
    accelerate : bool
        False for plain EM (scikit-learn's iterations, one for one).
    counter : PassCounter, optional
        Counts the columns of every E-step.

    Returns
    -------
    tuple
        (the mixture after the last M-step, the mean log-likelihood of every parameter set kept (extrapolations that lost
        likelihood are left out, so it never falls), whether it converged).
    """
    history: list[float] = []
    n_words, n_features = mixture.means.shape
    passes, step_max = 0, 1.0
    while passes < max_passes:
        # `mixture` is always the M-step of the parameters history[-1] was evaluated at: this pass is a plain EM pass
        start_log_likelihood, middle = expectation(powers, mixture, reg_covar, chunk_size, counter=counter)
        passes += 1
        converged = bool(history) and abs(start_log_likelihood - history[-1]) < tol
        history.append(start_log_likelihood)
        if converged or not accelerate or passes == max_passes:
            mixture = middle
            if converged:
                return mixture, history, True
            continue
        middle_log_likelihood, end = expectation(powers, middle, reg_covar, chunk_size, counter=counter)
        passes += 1
        history.append(middle_log_likelihood)
        if abs(middle_log_likelihood - start_log_likelihood) < tol:
            return end, history, True
        if passes == max_passes:
            return end, history, False
        origin = mixture.as_vector(reg_covar)
        r = middle.as_vector(reg_covar) - origin
        v = end.as_vector(reg_covar) - middle.as_vector(reg_covar) - r
        alpha = -max(1.0, min(step_max, float(r.norm() / v.norm()) if float(v.norm()) > 0 else 1.0))
        trial = Mixture.from_vector(origin - 2.0 * alpha * r + alpha**2 * v, n_words, n_features, reg_covar)
        trial_log_likelihood, after_trial = expectation(powers, trial, reg_covar, chunk_size, counter=counter)
        passes += 1
        if math.isfinite(trial_log_likelihood) and trial_log_likelihood >= middle_log_likelihood:
            history.append(trial_log_likelihood)
            mixture = after_trial
            if alpha == -step_max:
                step_max *= 4.0
        else:  # the extrapolation lost likelihood: go on from the second EM step, with a shorter largest step
            mixture = end
            step_max = max(1.0, step_max / 4.0)
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


def kmeans_start(powers: torch.Tensor, n_words: int, generator: torch.Generator, kmeans_iterations: int, chunk_size: int) -> Mixture:
    """A mixture from one k-means partition of the columns: each word's weight, mean and variance from one cluster.

    Parameters
    ----------
    powers : torch.Tensor
        (M, 2D + 1) float32 `column_powers`, M >= `n_words`.
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
    n_features = powers.shape[1] // 2
    columns = powers[:, n_features:-1]
    labels = kmeans_partition(columns, kmeans_plus_plus(columns, n_words, generator), kmeans_iterations, chunk_size)
    sums = (torch.nn.functional.one_hot(labels, n_words).to(powers.dtype).T @ powers).double()
    return maximisation(sums[:, -1], sums[:, n_features:-1], sums[:, :n_features], len(powers))


def halving_start(
    powers: torch.Tensor,
    n_words: int,
    seed: int,
    samples: tuple[int, ...],
    candidates: tuple[int, ...],
    sample_passes: int,
    kmeans_iterations: int,
    reg_covar: float,
    tol: float,
    chunk_size: int,
    counter: PassCounter,
) -> tuple[Mixture, list[float]]:
    """The start of the EM over all columns: successive halving of k-means starts on growing random samples.

    `candidates[0]` k-means starts (greedy k-means++ seeds and Lloyd iterations) on the first
    `samples[0]` columns of one random permutation; on each sample the candidates still in the race
    run at most `sample_passes` accelerated EM passes, and before the next, larger sample only the
    `candidates[i]` that give its columns the highest mean log-likelihood go on. The survivors of the
    last sample are scored on all columns (when more than one) and the best is returned. A sample at least as large as all
    columns ends the schedule there (it is all of them). Which optimum EM reaches depends on its start by
    several nats per column on activations, and a start's rank after a few passes on a small sample
    predicts its rank at the end, so many cheap starts and few expensive ones.

    Parameters
    ----------
    powers : torch.Tensor
        (M, 2D + 1) float32 `column_powers`, M >= `n_words`.
    n_words : int
        K.
    seed : int
        Chooses the permutation and the k-means++ seeds.
    samples : tuple of int
        Growing sample sizes.
    candidates : tuple of int
        Candidates fitted on each sample (non-increasing; the first is the number of k-means starts).
    sample_passes : int
        At most this many E-steps per candidate and sample.
    kmeans_iterations : int
        At most this many Lloyd iterations per start.
    reg_covar, tol : float
        As in `run_em`.
    chunk_size : int
        Columns per chunk.
    counter : PassCounter
        Counts the columns of every E-step.

    Returns
    -------
    tuple
        (the chosen mixture, the mean log-likelihood of all columns under each survivor of the last sample; empty when one survived).
    """
    generator = torch_generator(seed)
    order = torch.randperm(len(powers), generator=generator)
    race: list[Mixture] = []
    for size, count in zip(samples, candidates):
        sample = powers[order[:size]] if size < len(powers) else powers
        if not race:
            race = [kmeans_start(sample, n_words, generator, kmeans_iterations, chunk_size) for _ in range(count)]
        elif len(race) > count:
            scores = [expectation(sample, mixture, reg_covar, chunk_size, statistics=False, counter=counter)[0] for mixture in race]
            race = [race[i] for i in sorted(range(len(race)), key=lambda i: -scores[i])[:count]]
        race = [run_em(sample, mixture, reg_covar, tol, sample_passes, chunk_size, counter=counter)[0] for mixture in race]
        if size >= len(powers):
            break
    if len(race) == 1:  # nothing to choose: EM over all columns scores it in its first E-step
        return race[0], []
    scores = [expectation(powers, mixture, reg_covar, chunk_size, statistics=False, counter=counter)[0] for mixture in race]
    return race[int(np.argmax(scores))], scores


def fit_columns(
    dictionary: GaussianDictionary,
    columns: torch.Tensor,
    updates: int = 100,
    batch_size: int = 4096,
    seed: int = 0,
    description: str = "fitting dictionary",
    tol: float = 1e-3,
    samples: tuple[int, ...] = (10_000, 50_000, 200_000),
    candidates: tuple[int, ...] = (24, 6, 1),
    sample_passes: int = 20,
    kmeans_iterations: int = 10,
) -> EMTrace:
    """Fit `dictionary` in place to `columns`: the best of many k-means starts raced on growing samples, then EM over all columns.

    scikit-learn's GaussianMixture recipe (k-means partition, one M-step, EM until the mean log-likelihood
    per column changes by less than `tol` across a pass) with two changes. The start is the winner of a
    race (`halving_start`): `candidates[0]` k-means starts on a random sample of `samples[0]` columns,
    the best `candidates[1]` by likelihood go on to `samples[1]` columns, and so on; the survivors of the
    last sample are scored on all columns. And EM is accelerated (SQUAREM with a monotone safeguard,
    `run_em`). Then at most `updates` E-steps over all columns. Which optimum EM reaches depends on its
    start by several nats per column on activations (words collapse onto exact zeros), so one start is a
    lottery; the samples keep the many starts cheap. The dictionary's standardisation (`shift`, `scale`)
    and `reg_covar` are kept; its parameters are replaced.

    Parameters
    ----------
    dictionary : GaussianDictionary
        The dictionary to fit (for example from `GaussianDictionary.initialise`); its `reg_covar` is scikit-learn's.
    columns : torch.Tensor
        (M, D) activation columns, M >= K.
    updates : int
        At most this many E-steps over all columns after the race (scikit-learn's `max_iter`).
    batch_size : int
        Columns per chunk of the E-step and k-means: bounds memory, does not change the result beyond rounding.
    seed : int
        Chooses the samples and the k-means++ seeds.
    description : str
        Names the fit in errors.
    tol : float
        Convergence threshold on the change of the mean log-likelihood per column (scikit-learn's `tol`).
    samples : tuple of int
        Growing sample sizes of the race (a size of M or more is all columns and ends the race there).
    candidates : tuple of int
        Candidates fitted on each sample, non-increasing; the first is the number of k-means starts.
    sample_passes : int
        At most this many E-steps per candidate and sample.
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
    race_ok = len(samples) == len(candidates) >= 1 and all(n >= dictionary.n_words for n in samples) and list(samples) == sorted(samples)
    race_ok = race_ok and candidates[-1] >= 1 and list(candidates) == sorted(candidates, reverse=True)
    if updates < 1 or batch_size < 1 or sample_passes < 1 or kmeans_iterations < 0 or not tol > 0 or not race_ok:
        raise PhenolensError(
            f"{description}: need updates >= 1, batch_size >= 1, sample_passes >= 1, kmeans_iterations >= 0, tol > 0, and as many "
            f"samples (increasing, each >= K) as candidates (non-increasing, >= 1); got samples {samples}, candidates {candidates}"
        )
    if not dictionary.reg_covar > 0:
        raise PhenolensError(f"{description}: reg_covar must be > 0 for EM (a word on constant channels would have zero variance)")
    powers, counter = column_powers(columns), PassCounter(len(columns))
    start, start_log_likelihoods = halving_start(
        powers, dictionary.n_words, seed, samples, candidates, sample_passes, kmeans_iterations, dictionary.reg_covar, tol, batch_size, counter
    )
    mixture, log_likelihoods, converged = run_em(powers, start, dictionary.reg_covar, tol, updates, batch_size, counter=counter)
    start_log_likelihoods = start_log_likelihoods or log_likelihoods[:1]
    dictionary.set_mixture(mixture)
    return EMTrace(tuple(log_likelihoods), converged, tuple(start_log_likelihoods), start, counter.columns / len(powers), counter.full_passes)
