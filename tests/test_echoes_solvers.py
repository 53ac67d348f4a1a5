"""Gabor dictionaries and the sparse solvers: exact recovery of noiseless two-atom signals, scikit-learn as oracle."""

import numpy as np
import pytest

from phenolens.echoes.dictionary import GaborDictionary, codes_to_activation
from phenolens.echoes.pursuit import omp_codes, smp_codes
from phenolens.echoes.solvers import StoppingRule, ista_codes, sklearn_omp_codes

EXACT = StoppingRule(residual_ratio=1e-12, max_atoms=4)


def two_atom_signal(dictionary, tofs, amplitudes=(0.8, 0.5), phases=(0.3, 2.0)):
    """Re(sum x e^{i phi} a) for two atoms of shape 0: cos(phi) * cosine part - sin(phi) * sine part."""
    pairs = dictionary.atom_pairs(np.zeros(2, dtype=int), np.asarray(tofs))
    weights = np.stack([np.cos(phases), -np.sin(phases)], axis=1) * np.asarray(amplitudes)[:, None]
    return np.einsum("ki,kit->t", weights, pairs)[None]


def support(codes, floor=1e-6):
    activation = codes_to_activation(codes)[0]
    index = np.flatnonzero(activation > floor)
    return index, activation[index]


@pytest.mark.parametrize(("distribution", "atoms"), [("none", 500), ("narrow", 4500), ("wide", 18000)])
def test_dictionary_sizes(distribution, atoms):
    assert GaborDictionary.for_distribution(distribution).n_atoms == atoms


def test_fft_correlation_equals_the_explicit_matrix():
    dictionary = GaborDictionary.for_distribution("narrow", length=160)
    signals = np.random.default_rng(0).standard_normal((2, 160))
    corr = dictionary.correlate(signals)
    explicit = (dictionary.real_matrix().T @ signals.T).T.reshape(2, dictionary.n_shapes, 160, 2)
    inside = slice(50, 110)  # atoms fully inside the record
    np.testing.assert_allclose(corr.real[..., inside], explicit[..., inside, 0], atol=1e-3)
    np.testing.assert_allclose(-corr.imag[..., inside], explicit[..., inside, 1], atol=1e-3)


@pytest.mark.parametrize("gap", [20, 30, 60])  # 2.2, 3.3 and 6.7 sigma: overlapping to separate
def test_smp_recovers_a_noiseless_two_atom_signal_exactly(gap):
    dictionary = GaborDictionary.for_distribution("none", length=200)
    signal = two_atom_signal(dictionary, [70, 70 + gap])
    codes = smp_codes(dictionary, signal, EXACT)
    index, amplitude = support(codes)
    np.testing.assert_array_equal(index, [70, 70 + gap])
    np.testing.assert_allclose(amplitude, [0.8, 0.5], atol=1e-6)
    np.testing.assert_allclose(np.angle(codes[0, 0, index]), [0.3, 2.0], atol=1e-6)


def test_ista_recovers_a_noiseless_two_atom_signal():
    # ISTA converges slowly on coherent shift-invariant atoms; a short atom makes exact recovery reachable
    dictionary = GaborDictionary(np.array([1.0]), np.array([1.0]), 64)
    signal = two_atom_signal(dictionary, [24, 36])
    codes = ista_codes(dictionary, signal, iterations=3000, threshold=1e-3)
    index, amplitude = support(codes, floor=1e-3)
    np.testing.assert_array_equal(index, [24, 36])
    np.testing.assert_allclose(amplitude, [0.8, 0.5], atol=3e-3)
    np.testing.assert_allclose(np.angle(codes[0, 0, index]), [0.3, 2.0], atol=1e-2)


def test_ista_three_iterations_peak_at_the_echoes():
    dictionary = GaborDictionary.for_distribution("none", length=200)
    activation = codes_to_activation(ista_codes(dictionary, two_atom_signal(dictionary, [60, 140])))[0]
    assert abs(np.argmax(activation[:100]) - 60) <= 1 and abs(100 + np.argmax(activation[100:]) - 140) <= 1


def test_complex_omp_agrees_with_scikit_learn_where_both_are_exact():
    # cosine-phase echoes far apart: scikit-learn's real-column OMP picks the right columns too
    dictionary = GaborDictionary.for_distribution("none", length=200)
    signal = two_atom_signal(dictionary, [60, 140], phases=(0.0, 0.0))
    ours, library = omp_codes(dictionary, signal, EXACT), sklearn_omp_codes(dictionary, signal, EXACT)
    np.testing.assert_array_equal(support(ours)[0], [60, 140])
    np.testing.assert_allclose(codes_to_activation(ours), codes_to_activation(library), atol=1e-8)
    np.testing.assert_allclose(support(library)[1], [0.8, 0.5], atol=1e-8)


def test_stopping_rule_caps_the_number_of_atoms():
    dictionary = GaborDictionary.for_distribution("none", length=200)
    noise = np.random.default_rng(1).standard_normal((1, 200))
    for solve in (omp_codes, smp_codes):
        assert len(support(solve(dictionary, noise, StoppingRule(0.0, 3)))[0]) <= 3
    assert np.count_nonzero(codes_to_activation(sklearn_omp_codes(dictionary, noise, StoppingRule(0.0, 3)))) <= 6


def test_ista_converges_to_the_complex_lasso_optimum():
    """The docstring's claim, by the optimality conditions of min 1/2 ||y - Re(D c)||^2 + t ||c||_1 (no library solves the
    complex-modulus l1 problem): on the support D^H r = t c / |c|, elsewhere |D^H r| <= t; and the Lipschitz constant
    estimated by power iteration is the normal operator's largest eigenvalue (dense matrix) to 1 %."""
    dictionary = GaborDictionary(np.array([1.0]), np.array([1.0]), 64)
    signal = np.random.default_rng(0).normal(size=(1, 64))
    threshold = 0.5
    codes = ista_codes(dictionary, signal, iterations=3000, threshold=threshold)
    correlation = dictionary.correlate(signal - dictionary.synthesize(codes))
    support = np.abs(codes) > 1e-9
    assert 5 < support.sum() < 60
    np.testing.assert_allclose(correlation[support], threshold * codes[support] / np.abs(codes[support]), atol=1e-9)
    assert np.abs(correlation[~support]).max() <= threshold + 1e-9
    unit = np.zeros((2 * 64, 1, 1, 64), dtype=np.complex128)
    unit[np.arange(64), 0, 0, np.arange(64)], unit[64 + np.arange(64), 0, 0, np.arange(64)] = 1.0, 1j
    columns = np.stack([dictionary.synthesize(code)[0] for code in unit], axis=1)  # Re(D c) as a real (T, 2T) matrix
    assert dictionary.lipschitz == pytest.approx(np.linalg.eigvalsh(columns.T @ columns).max(), rel=0.01)
