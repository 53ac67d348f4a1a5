"""Inference paths of a fully connected network: an HMM over its hidden layers.

Layer l of the MLP is a "time step" with a hidden state h_l taking K_l values. Transitions
P(h_l | h_l-1) are K_l-1 x K_l tables; emissions are diagonal Gaussians rectified at zero, which
is what a ReLU layer produces: an activation a > 0 has density N(a; mu, sigma^2), a = 0 has
probability Phi(-mu / sigma). Training is online EM (Cappe & Moulines 2009): each mini-batch's
expected sufficient statistics, computed by forward-backward, are blended into running
statistics with a decreasing step size, followed by the closed-form M-step. For zero activations
the statistics use the first and second moments of the Gaussian censored to (-inf, 0]:

    E[z | z <= 0] = mu - sigma * lam,  E[z^2 | z <= 0] = mu^2 + sigma^2 - mu * sigma * lam,
    lam = phi(beta) / Phi(beta), beta = -mu / sigma.

Viterbi gives the MAP path of an example. All arithmetic is vectorised over examples, states and
units; the only loops run over layers.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.base import BaseEstimator

from phenolens.core.errors import PhenolensError
from phenolens.core.estimators import check_is_fitted
from phenolens.core.progress import progress
from phenolens.core.seeding import torch_generator

LOG_2PI = math.log(2.0 * math.pi)


def rectified_log_density(x: torch.Tensor, means: torch.Tensor, variances: torch.Tensor) -> torch.Tensor:
    """Log density of rectified observations under diagonal rectified Gaussians.

    Parameters
    ----------
    x : Tensor
        (N, D) observations, >= 0.
    means, variances : Tensor
        (K, D) parameters of the Gaussians before rectification.

    Returns
    -------
    Tensor
        (N, K) log density (zero units contribute the probability mass below zero).
    """
    positive = (x > 0).to(x.dtype)
    precision = 1.0 / variances
    # positive units: Gaussian density, expanded into matrix products over units
    constant = means**2 * precision + torch.log(variances) + LOG_2PI
    gaussian = -0.5 * ((positive * x * x) @ precision.T - 2.0 * (positive * x) @ (means * precision).T + positive @ constant.T)
    # zero units: the probability mass below zero
    censored = (1.0 - positive) @ torch.special.log_ndtr(-means / variances.sqrt()).T
    return gaussian + censored


def censored_moments(means: torch.Tensor, variances: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Moments of a Gaussian censored to z <= 0, elementwise.

    Parameters
    ----------
    means, variances : Tensor
        mu and sigma^2, of any (equal) shape.

    Returns
    -------
    tuple of Tensor
        E[z | z <= 0] and E[z^2 | z <= 0].
    """
    sigma = variances.sqrt()
    beta = -means / sigma
    lam = torch.exp(-0.5 * beta**2 - 0.5 * LOG_2PI - torch.special.log_ndtr(beta))
    return means - sigma * lam, means**2 + variances - means * sigma * lam


class RectifiedGaussianHMM(BaseEstimator):
    """HMM with rectified-Gaussian emissions over the hidden layers of an MLP (a scikit-learn estimator).

    `X` is always a list with one (N, D_l) post-ReLU activation matrix per hidden layer.

    Parameters
    ----------
    states : int or list of int
        States K per layer; an int repeats for every layer.
    epochs : int
        Online-EM passes over the examples.
    batch_size : int
        Examples per online-EM step.
    step_power : float
        kappa of the step size rho_t = (t + 2)^-kappa.
    min_variance : float
        Floor of every emission variance.
    seed : int
        Seed of the initialisation and the example order.

    Attributes
    ----------
    initial_ : Tensor
        (K_1,) initial state probabilities.
    transitions_ : list of Tensor
        (K_l-1, K_l) transition tables.
    means_, variances_ : list of Tensor
        (K_l, D_l) emission parameters.
    log_likelihood_ : list of float
        Mean log-likelihood per example after each epoch.
    """

    def __init__(
        self,
        states: int | list[int] = 10,
        epochs: int = 10,
        batch_size: int = 256,
        step_power: float = 0.6,
        min_variance: float = 1e-3,
        seed: int = 0,
    ):
        self.states = states
        self.epochs = epochs
        self.batch_size = batch_size
        self.step_power = step_power
        self.min_variance = min_variance
        self.seed = seed

    # ------------------------------------------------------------------------------- inference
    def _fitted_input(self, layers: list) -> list[torch.Tensor]:
        """Checked activations for a fitted model: one (N, D_l) matrix per modelled layer, of its widths."""
        check_is_fitted(self, "transitions_")
        tensors = self._check(layers)
        shapes = [tuple(m.shape) for m in self.means_]
        if len(tensors) != len(shapes) or any(a.shape[1] != d for a, (_, d) in zip(tensors, shapes)):
            given = ", ".join(str(a.shape[1]) for a in tensors)
            modelled = ", ".join(str(d) for _, d in shapes)
            raise PhenolensError(f"activations of {len(tensors)} layers ({given} units); the HMM models {len(shapes)} layers ({modelled} units)")
        return tensors

    def _check(self, layers: list) -> list[torch.Tensor]:
        if not layers:
            raise PhenolensError("no layers given; pass one (N, D) activation matrix per hidden layer")
        tensors = [torch.as_tensor(np.asarray(a), dtype=torch.float64) for a in layers]
        for index, a in enumerate(tensors):
            if a.ndim != 2 or len(a) != len(tensors[0]):
                raise PhenolensError(f"layer {index}: activations must be (N, D) with the same N for every layer, got {tuple(a.shape)}")
            if (a < 0).any():
                raise PhenolensError(f"layer {index}: negative activations; the HMM models rectified (post-ReLU) layers")
        return tensors

    def _emissions(self, layers: list[torch.Tensor]) -> list[torch.Tensor]:
        return [rectified_log_density(a, m, v) for a, m, v in zip(layers, self.means_, self.variances_)]

    def _forward_backward(self, emissions: list[torch.Tensor]):
        """Per-layer state posteriors gamma (N, K_l), pairwise posteriors xi (N, K_l-1, K_l), log-likelihood (N,)."""
        log_transitions = [torch.log(t) for t in self.transitions_]
        alpha = [torch.log(self.initial_)[None] + emissions[0]]
        for log_t, e in zip(log_transitions, emissions[1:]):
            alpha.append(torch.logsumexp(alpha[-1][:, :, None] + log_t[None], dim=1) + e)
        beta = [torch.zeros_like(alpha[-1])]
        for log_t, e in zip(log_transitions[::-1], emissions[:0:-1]):
            beta.insert(0, torch.logsumexp(log_t[None] + (e + beta[0])[:, None, :], dim=2))
        log_likelihood = torch.logsumexp(alpha[-1], dim=1)
        gamma = [torch.exp(a + b - log_likelihood[:, None]) for a, b in zip(alpha, beta)]
        xi = [
            torch.exp(a[:, :, None] + log_t[None] + (e + b)[:, None, :] - log_likelihood[:, None, None])
            for a, log_t, e, b in zip(alpha[:-1], log_transitions, emissions[1:], beta[1:])
        ]
        return gamma, xi, log_likelihood

    def posteriors(self, X: list) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """State and pairwise state posteriors.

        Parameters
        ----------
        X : list of array-like
            One (N, D_l) post-ReLU activation matrix per hidden layer.

        Returns
        -------
        tuple of (list of ndarray, list of ndarray)
            P(h_l | activations) as (N, K_l) per layer, and P(h_l-1, h_l | activations) as (N, K_l-1, K_l).

        Raises
        ------
        NotFittedError
            Before `fit`.
        PhenolensError
            For activations that do not match the fitted layers.
        """
        gamma, xi, _ = self._forward_backward(self._emissions(self._fitted_input(X)))
        return [g.numpy() for g in gamma], [x.numpy() for x in xi]

    def score_samples(self, X: list) -> np.ndarray:
        """Log-likelihood of each example.

        Parameters
        ----------
        X : list of array-like
            One (N, D_l) post-ReLU activation matrix per hidden layer.

        Returns
        -------
        ndarray
            (N,) log-likelihood of each example's activations.

        Raises
        ------
        NotFittedError
            Before `fit`.
        """
        return self._forward_backward(self._emissions(self._fitted_input(X)))[2].numpy()

    def viterbi(self, X: list) -> tuple[np.ndarray, np.ndarray]:
        """MAP state paths.

        Parameters
        ----------
        X : list of array-like
            One (N, D_l) post-ReLU activation matrix per hidden layer.

        Returns
        -------
        tuple of ndarray
            (N, L) MAP state path of every example and its (N,) joint log-probability.

        Raises
        ------
        NotFittedError
            Before `fit`.
        """
        emissions = self._emissions(self._fitted_input(X))
        score = torch.log(self.initial_)[None] + emissions[0]
        back = []
        for log_t, e in zip([torch.log(t) for t in self.transitions_], emissions[1:]):
            candidates = score[:, :, None] + log_t[None]  # (N, K_prev, K)
            best, argbest = candidates.max(dim=1)
            back.append(argbest)
            score = best + e
        best_score, last = score.max(dim=1)
        path = [last]
        for pointers in back[::-1]:
            path.insert(0, pointers.gather(1, path[0][:, None])[:, 0])
        return torch.stack(path, 1).numpy(), best_score.numpy()

    def predict(self, X: list) -> np.ndarray:
        """The MAP path of every example (the paths of `viterbi`, without their scores).

        Parameters
        ----------
        X : list of array-like
            One (N, D_l) post-ReLU activation matrix per hidden layer.

        Returns
        -------
        ndarray
            (N, L) state per example and layer.

        Raises
        ------
        NotFittedError
            Before `fit`.
        """
        return self.viterbi(X)[0]

    # --------------------------------------------------------------------------------- fitting
    def fit(self, X: list, y=None) -> RectifiedGaussianHMM:
        """Online EM.

        Parameters
        ----------
        X : list of array-like
            One (N, D_l) post-ReLU activation matrix per hidden layer.
        y : None
            Ignored (scikit-learn convention).

        Returns
        -------
        RectifiedGaussianHMM
            self, fitted.

        Raises
        ------
        PhenolensError
            For no layers, matrices of different lengths, negative activations, a state count per
            layer that does not match the layers, or more states than examples.
        """
        tensors = self._check(X)
        count = len(tensors[0])
        sizes = [self.states] * len(tensors) if isinstance(self.states, int) else list(self.states)
        if len(sizes) != len(tensors):
            raise PhenolensError(f"{len(sizes)} state counts for {len(tensors)} layers; give one K per layer")
        if max(sizes) > count:
            raise PhenolensError(f"{max(sizes)} states requested but only {count} examples; use fewer states")
        generator = torch_generator(self.seed)
        self._initialise(tensors, sizes, generator)
        running = None
        self.log_likelihood_ = []
        updates = 0
        for _ in progress(range(self.epochs), "fitting HMM", total=self.epochs):
            order = torch.randperm(count, generator=generator)
            for start in range(0, count, self.batch_size):
                index = order[start : start + self.batch_size]
                statistics = self._statistics([a[index] for a in tensors])
                rho = 1.0 if running is None else (updates + 2.0) ** -self.step_power
                if running is None:
                    running = statistics
                else:
                    running = [[(1 - rho) * r + rho * s for r, s in zip(old, new)] for old, new in zip(running, statistics)]
                updates += 1
                self._maximise(running)
            self.log_likelihood_.append(float(self._forward_backward(self._emissions(tensors))[2].mean()))
        return self

    def _initialise(self, layers: list[torch.Tensor], sizes: list[int], generator: torch.Generator) -> None:
        """Means at the activations of K random examples, variances = per-unit variance, uniform tables."""
        self.means_, self.variances_ = [], []
        for a, k in zip(layers, sizes):
            chosen = a[torch.randperm(len(a), generator=generator)[:k]]
            self.means_.append(chosen.clone())
            self.variances_.append(a.var(0).clamp_min(self.min_variance).expand(k, -1).clone())
        self.initial_ = torch.full((sizes[0],), 1.0 / sizes[0], dtype=torch.float64)
        self.transitions_ = [torch.full((a, b), 1.0 / b, dtype=torch.float64) for a, b in zip(sizes[:-1], sizes[1:])]

    def _statistics(self, layers: list[torch.Tensor]) -> list[list[torch.Tensor]]:
        """Per-example-averaged expected sufficient statistics of one batch, per layer:
        [state mass S0 (K,), S1 (K, D), S2 (K, D), pair mass (K_prev, K) or the initial mass]."""
        gamma, xi, _ = self._forward_backward(self._emissions(layers))
        n = len(layers[0])
        out = []
        for index, (a, g, m, v) in enumerate(zip(layers, gamma, self.means_, self.variances_)):
            zero_mass = g.T @ (a <= 0).to(a.dtype)  # (K, D) posterior mass of censored units
            first, second = censored_moments(m, v)
            pairs = g.sum(0) if index == 0 else xi[index - 1].sum(0)
            out.append([g.sum(0) / n, (g.T @ a + zero_mass * first) / n, (g.T @ (a * a) + zero_mass * second) / n, pairs / n])
        return out

    def _maximise(self, statistics: list[list[torch.Tensor]]) -> None:
        for index, (mass, first, second, pairs) in enumerate(statistics):
            weight = mass.clamp_min(1e-12)[:, None]
            self.means_[index] = first / weight
            self.variances_[index] = (second / weight - self.means_[index] ** 2).clamp_min(self.min_variance)
            if index == 0:
                self.initial_ = (pairs + 1e-9) / (pairs + 1e-9).sum()
            else:
                table = pairs + 1e-9
                self.transitions_[index - 1] = table / table.sum(1, keepdim=True)
