"""The fit of SIGN dictionaries (`fit_columns`: a race of k-means starts on samples, then accelerated EM): scikit-learn's likelihood and
optimum, known means, monotone EM, determinism."""

import numpy as np
import pytest
import torch

from phenolens.core.errors import PhenolensError
from phenolens.core.seeding import torch_generator
from phenolens.explain.sign.gmm import GaussianDictionary, Mixture, column_powers, expectation, fit_columns, kmeans_start, run_em

pytestmark = pytest.mark.usefixtures("one_thread")

MEANS = np.array([[0.0, 3.0, 1.0, 0.0, 2.0], [4.0, 0.0, 2.0, 1.0, 0.0], [1.0, 1.0, 6.0, 3.0, 1.0], [3.0, 4.0, 0.0, 5.0, 4.0]])
SDS = np.array([[0.5, 1.0, 0.3, 0.2, 0.4], [1.0, 0.4, 0.6, 0.5, 0.3], [0.3, 0.3, 1.0, 0.8, 0.5], [0.6, 0.5, 0.4, 0.3, 0.7]])
WEIGHTS = [0.4, 0.3, 0.2, 0.1]


def mixture_columns(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    state = rng.choice(len(WEIGHTS), n, p=WEIGHTS)
    return (MEANS[state] + SDS[state] * rng.standard_normal((n, MEANS.shape[1]))).astype(np.float32)


def fitted(train: np.ndarray, k: int, seed: int = 0, **options) -> tuple[GaussianDictionary, object]:
    dictionary = GaussianDictionary.initialise(torch.from_numpy(train), k, seed=seed)
    return dictionary, fit_columns(dictionary, torch.from_numpy(train), seed=seed, **options)


def score(columns: np.ndarray, mixture: Mixture, reg_covar: float = 1e-6) -> float:
    """Mean log-likelihood per column in float64, as scikit-learn scores."""
    return expectation(column_powers(torch.from_numpy(columns).double()), mixture, reg_covar, 4096, statistics=False)[0]


def held_out_log_likelihood(dictionary: GaussianDictionary, test: np.ndarray) -> float:
    return score(test, dictionary.mixture(), dictionary.reg_covar)


def sklearn_log_likelihood(train: np.ndarray, test: np.ndarray, k: int, seed: int = 0) -> float:
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(k, covariance_type="diag", random_state=seed).fit(train.astype(np.float64)).score(test.astype(np.float64))


def test_fit_reaches_scikit_learn_and_recovers_the_means():
    train, test = mixture_columns(20_000, 0), mixture_columns(5_000, 1)
    dictionary, trace = fitted(train, 4, seed=1, samples=(1_000, 4_000), candidates=(6, 1))
    assert len(trace.log_likelihoods) >= 2 and trace.converged
    ours = held_out_log_likelihood(dictionary, test)
    assert ours >= sklearn_log_likelihood(train, test, 4) - 0.05
    # our scoring is scikit-learn's: the same parameters in a GaussianMixture give the same number
    from sklearn.mixture import GaussianMixture

    reference = GaussianMixture(4, covariance_type="diag")
    reference.weights_, reference.means_ = dictionary.priors().astype(np.float64), dictionary.centres().astype(np.float64)
    reference.covariances_ = dictionary.variances().astype(np.float64)
    reference.precisions_cholesky_ = 1.0 / np.sqrt(reference.covariances_)
    assert reference.score(test.astype(np.float64)) == pytest.approx(ours, abs=1e-4)
    # every true mean has a word within 0.1 of it, with the true weight and spread
    centres = dictionary.centres()
    nearest = np.linalg.norm(centres[None] - MEANS[:, None], axis=2).argmin(1)
    assert sorted(nearest) == [0, 1, 2, 3]
    np.testing.assert_allclose(centres[nearest], MEANS, atol=0.1)
    np.testing.assert_allclose(dictionary.priors()[nearest], WEIGHTS, atol=0.02)
    np.testing.assert_allclose(np.sqrt(dictionary.variances()[nearest]), SDS, rtol=0.1)


def relu_columns() -> tuple[np.ndarray, np.ndarray]:
    train, test = mixture_columns(6_000, 9), mixture_columns(2_000, 10)
    for columns in (train, test):
        columns[:, 4] = np.maximum(columns[:, 4] - 2.0, 0.0)  # a ReLU-like channel: exact zeros, variances collapse to reg_covar
    return train, test


def test_from_the_same_start_our_plain_em_is_scikit_learns_iteration_for_iteration():
    from sklearn.mixture import GaussianMixture

    train, test = relu_columns()
    powers = column_powers(torch.from_numpy(train))
    start = kmeans_start(powers, 6, torch_generator(0), kmeans_iterations=100, chunk_size=4096)
    ours, history, converged = run_em(powers, start, 1e-6, 1e-3, 100, 4096, accelerate=False)
    weights = start.log_weights.exp().numpy()
    reference = GaussianMixture(
        6, covariance_type="diag", init_params="random_from_data", weights_init=weights / weights.sum(),
        means_init=start.means.numpy(), precisions_init=1.0 / (start.variances.numpy() + 1e-6),
    ).fit(train.astype(np.float64))  # fmt: skip
    assert converged and len(history) == reference.n_iter_
    ours_score = score(test, ours)
    assert ours_score == pytest.approx(reference.score(test.astype(np.float64)), abs=5e-4)  # float32 passes: rounding, not a different optimum
    np.testing.assert_allclose(ours.means.numpy(), reference.means_, atol=1e-4)
    np.testing.assert_allclose(ours.variances.numpy() + 1e-6, reference.covariances_, rtol=1e-3, atol=1e-6)


def test_accelerated_em_reaches_the_optimum_of_plain_em_in_fewer_passes_and_never_loses_likelihood():
    train, test = relu_columns()
    powers = column_powers(torch.from_numpy(train))
    start = kmeans_start(powers, 6, torch_generator(1), kmeans_iterations=0, chunk_size=4096)
    plain, plain_history, plain_converged = run_em(powers, start, 1e-6, 1e-6, 2000, 4096, accelerate=False)
    fast, fast_history, fast_converged = run_em(powers, start, 1e-6, 1e-6, 2000, 4096)
    assert plain_converged and fast_converged
    assert len(fast_history) < 0.7 * len(plain_history)  # E-steps: every entry of the history is one, rejected extrapolations are fewer
    # plain EM never loses likelihood here; an accepted extrapolation is at least as good as the EM step it replaces, though the EM
    # step after it may lose a little (variances + reg_covar are not the M-step's maximiser where a word collapses)
    assert (np.diff(plain_history) >= -1e-9).all() and (np.diff(fast_history) >= -0.01).all()
    assert fast_history[-1] == pytest.approx(plain_history[-1], abs=1e-3)
    assert score(test, fast) == pytest.approx(score(test, plain), abs=1e-3)
    np.testing.assert_allclose(fast.means.numpy(), plain.means.numpy(), atol=1e-2)
    # plain EM stops on scikit-learn's rule: the first pass that changes the mean log-likelihood by less than tol
    steps = np.abs(np.diff(plain_history))
    assert steps[-1] < 1e-6 and (steps[:-1] >= 1e-6).all()
    # with one E-step allowed either stops there, unconverged
    for accelerate in (False, True):
        _, history, converged = run_em(powers, start, 1e-6, 1e-6, 1, 4096, accelerate=accelerate)
        assert len(history) == 1 and not converged


def test_a_mixture_survives_its_vector_form():
    weights, means, variances = torch.tensor([0.2, 0.8]), torch.tensor([[0.0, 1.0], [2.0, -1.0]]), torch.tensor([[0.0, 0.5], [2.0, 1e-3]])
    mixture = Mixture((weights.double() / weights.double().sum()).log(), means.double(), variances.double())
    back = Mixture.from_vector(mixture.as_vector(1e-6), 2, 2, 1e-6)
    for name in ("log_weights", "means", "variances"):
        torch.testing.assert_close(getattr(back, name), getattr(mixture, name), atol=1e-12, rtol=1e-9)
    # weights that do not sum to one come back normalised; a log-variance below log(reg_covar) comes back as variance 0
    vector = mixture.as_vector(1e-6)
    vector[:2] += 3.0
    vector[-1] = -40.0
    odd = Mixture.from_vector(vector, 2, 2, 1e-6)
    assert float(odd.log_weights.exp().sum()) == pytest.approx(1.0) and float(odd.variances[1, 1]) == 0.0


def test_the_same_seed_gives_the_same_dictionary_and_chunking_does_not_change_it():
    train = mixture_columns(5_000, 3)
    race = {"samples": (500, 2_000), "candidates": (4, 2)}
    first, _ = fitted(train, 5, seed=4, **race)
    second, _ = fitted(train, 5, seed=4, **race)
    for name, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[name]), name
    chunked, _ = fitted(train, 5, seed=4, batch_size=333, **race)
    # float32 sums in another order: the same words, perhaps from another start that reached the same optimum in another order
    nearest = np.linalg.norm(chunked.centres()[:, None] - first.centres()[None], axis=2).argmin(1)
    assert sorted(nearest) == list(range(5))
    np.testing.assert_allclose(chunked.centres(), first.centres()[nearest], atol=1e-4)
    other, _ = fitted(train, 5, seed=5, **race)
    assert not np.allclose(other.centres(), first.centres())


def test_bad_columns_and_settings_are_refused():
    train = mixture_columns(500, 8)
    dictionary = GaussianDictionary.initialise(torch.from_numpy(train), 3, seed=0)
    broken = train.copy()
    broken[3, 1] = np.nan
    with pytest.raises(PhenolensError, match="NaN"):
        fit_columns(dictionary, torch.from_numpy(broken))
    with pytest.raises(PhenolensError, match="channels"):
        fit_columns(dictionary, torch.from_numpy(train[:, :3]))
    with pytest.raises(PhenolensError, match="tol"):
        fit_columns(dictionary, torch.from_numpy(train), tol=0.0)
    unordered, unmatched, growing = ((100, 50), (2, 1)), ((100,), (2, 1)), ((100, 200), (1, 2))
    for samples, candidates in (unordered, unmatched, growing):
        with pytest.raises(PhenolensError, match="samples"):
            fit_columns(dictionary, torch.from_numpy(train), samples=samples, candidates=candidates)
    with pytest.raises(PhenolensError, match="reg_covar"):
        fit_columns(GaussianDictionary.initialise(torch.from_numpy(train), 3, reg_covar=0.0), torch.from_numpy(train))


GRID = np.array([[6.0 * i, 6.0 * j, 0.0] for i in range(3) for j in range(3)])  # nine unit Gaussians, six sds apart


def grid_columns(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (GRID[rng.choice(len(GRID), n, p=np.full(len(GRID), 1 / len(GRID)))] + rng.standard_normal((n, 3))).astype(np.float32)


def found_every_centre(dictionary: GaussianDictionary) -> bool:
    distances = np.linalg.norm(dictionary.centres()[None] - GRID[:, None], axis=2)
    return len(set(distances.argmin(1))) == len(GRID) and distances.min(1).max() < 0.3


def test_the_race_of_several_starts_finds_every_centre_where_one_start_does_not():
    train = torch.from_numpy(grid_columns(4_000, 1))
    one = GaussianDictionary.initialise(train, 9, seed=0)
    fit_columns(one, train, seed=0, samples=(1_000,), candidates=(1,))
    assert not found_every_centre(one)  # this start ends in a local optimum that misses a centre
    several = GaussianDictionary.initialise(train, 9, seed=0)
    trace = fit_columns(several, train, seed=0, samples=(500, 1_000), candidates=(12, 3))
    assert found_every_centre(several)
    assert len(trace.start_log_likelihoods) == 3  # the survivors of the last sample, scored on all columns
    # EM over all columns went on from the survivor that scored highest on them
    chosen = expectation(column_powers(train), trace.start, several.reg_covar, 4096, statistics=False)[0]
    assert chosen == pytest.approx(max(trace.start_log_likelihoods), abs=1e-6)
    assert trace.log_likelihoods[0] == pytest.approx(chosen, abs=1e-6)
    np.testing.assert_allclose(several.priors(), 1 / 9, atol=0.02)
    # its cost over all 4,000 columns: 3 scorings, then the E-steps of EM (at least one per kept log-likelihood); samples add fractions
    assert 3 + len(trace.log_likelihoods) <= trace.full_passes <= 3 + 100
    assert trace.full_passes < trace.column_passes < trace.full_passes + (12 * 500 + 3 * 1_000) * 20 / 4_000 + 12 * 1_000 / 4_000


def test_the_race_keeps_the_starts_that_score_highest_on_the_next_sample():
    from phenolens.explain.sign.gmm import PassCounter, halving_start

    powers = column_powers(torch.from_numpy(grid_columns(4_000, 2)))
    settings = {"sample_passes": 5, "kmeans_iterations": 2, "reg_covar": 1e-6, "tol": 1e-3, "chunk_size": 4096}
    winner, _ = halving_start(powers, 9, 3, (400, 2_000), (6, 1), counter=PassCounter(len(powers)), **settings)
    # the same six starts by hand: fitted on the first 400 columns of the permutation, ranked on the first 2,000
    generator = torch_generator(3)
    order = torch.randperm(len(powers), generator=generator)
    small, large = powers[order[:400]], powers[order[:2_000]]
    starts = [kmeans_start(small, 9, generator, 2, 4096) for _ in range(6)]
    fitted = [run_em(small, start, 1e-6, 1e-3, 5, 4096)[0] for start in starts]
    scores = [expectation(large, mixture, 1e-6, 4096, statistics=False)[0] for mixture in fitted]
    assert max(scores) - min(scores) > 0.01  # a real choice
    best = run_em(large, fitted[int(np.argmax(scores))], 1e-6, 1e-3, 5, 4096)[0]
    torch.testing.assert_close(winner.means, best.means)
