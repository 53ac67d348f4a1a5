"""Hit criterion, matching, precision-recall, NMS and threshold lowering on hand-built cases."""

import numpy as np
import pytest

from phenolens.echoes.detection import Detections, detect_echoes, lowered_thresholds, non_maximum_suppression
from phenolens.echoes.metrics import envelope_error, match_detections, precision_recall

SIGMA = 9.0


@pytest.mark.parametrize(
    ("shift", "det_amp", "expected"),
    [
        (0.0, 1.0, 0.0),  # identical
        (0.0, 0.7, 0.09),  # amplitude 30 % low: (1 - 0.7)^2
        (0.0, 1.3, 0.09),
        (4.0, 1.0, 2 * (1 - np.exp(-16 / (4 * SIGMA**2)))),  # 4 samples late
        (5.0, 1.0, 2 * (1 - np.exp(-25 / (4 * SIGMA**2)))),
        (100.0, 1.0, 2.0),  # far away: the sum of both energies
    ],
)
def test_envelope_error_closed_form(shift, det_amp, expected):
    assert envelope_error(200.0 + shift, det_amp, 200.0, 1.0, SIGMA) == pytest.approx(expected, abs=1e-9)


def test_envelope_error_matches_sampled_envelopes():
    t = np.arange(1000.0)
    det = 0.8 * np.exp(-0.5 * ((t - 503.0) / SIGMA) ** 2)
    true = 1.0 * np.exp(-0.5 * ((t - 500.0) / SIGMA) ** 2)
    sampled = np.sum((det - true) ** 2) / np.sum(true**2)
    assert envelope_error(503.0, 0.8, 500.0, 1.0, SIGMA) == pytest.approx(sampled, rel=1e-6)


def test_hits_need_both_position_and_amplitude_at_epsilon_0_1():
    # a 4-sample shift is a hit (error 0.096), 5 samples a miss (0.149); 30 % amplitude error a hit (0.09), 40 % a miss
    assert envelope_error(204.0, 1.0, 200.0, 1.0, SIGMA) < 0.1 < envelope_error(205.0, 1.0, 200.0, 1.0, SIGMA)
    assert envelope_error(200.0, 0.7, 200.0, 1.0, SIGMA) < 0.1 < envelope_error(200.0, 0.6, 200.0, 1.0, SIGMA)


def test_matching_is_one_to_one_and_strongest_first():
    true_pos = np.array([[100.0, 150.0, np.nan]])
    true_amp = np.array([[0.8, 0.6, np.nan]])  # already unit norm
    sigma = np.full((1, 3), SIGMA)
    # strongest detection on echo 1, a duplicate on echo 1, one on echo 2, one far from both
    detections = Detections(np.array([[101.0, 99.0, 152.0, 300.0]]), np.array([[0.8, 0.8, 0.6, 0.3]]), np.array([0.01]))
    hits, found = match_detections(detections, true_pos, true_amp, sigma, epsilon=0.1)
    np.testing.assert_array_equal(hits, [[True, False, True, False]])
    np.testing.assert_array_equal(found, [[True, True, False]])


def test_true_amplitudes_are_normalised_per_signal():
    detections = Detections(np.array([[100.0, 150.0]]), np.array([[0.8, 0.6]]), np.array([0.01]))
    hits, _ = match_detections(detections, np.array([[100.0, 150.0]]), np.array([[4.0, 3.0]]), np.full((1, 2), SIGMA), 0.1)
    assert hits.all()


def test_precision_recall_auc_and_f1_on_a_hand_case():
    # scores 0.9 (hit), 0.8 (miss), 0.7 (hit) against 4 true echoes
    score = precision_recall(np.array([0.9, 0.8, 0.7]), np.array([True, False, True]), n_true=4)
    # points: (recall 0.25, precision 1), (0.25, 0.5), (0.5, 2/3); interpolated precision 1 up to 0.25, 2/3 to 0.5
    assert score.f1 == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert score.auc == pytest.approx(0.25 * 1.0 + 0.25 * 2 / 3)
    np.testing.assert_allclose(score.recall, [0.0, 0.25, 0.5])
    np.testing.assert_allclose(score.precision, [1.0, 1.0, 2 / 3])
    assert score.n_hits == 2 and score.n_true == 4
    assert precision_recall(np.array([0.5]), np.array([False]), 3).auc == 0.0


def test_non_maximum_suppression_keeps_the_strongest_peak_per_window():
    activation = np.zeros((2, 200))
    activation[0, [50, 60, 80, 120]] = [1.0, 0.8, 0.5, -2.0]  # 60 is within 14 of 50; negative values are no echoes
    activation[1, 10] = 0.3
    positions, values = non_maximum_suppression(activation, window=14, max_detections=5)
    np.testing.assert_array_equal(positions[0, :3], [50, 80, -1])
    np.testing.assert_allclose(values[0, :2], [1.0, 0.5])
    np.testing.assert_array_equal(positions[1, :2], [10, -1])


def test_beta_is_lowered_by_0_8_until_two_echoes_pass():
    values = np.array([[0.9, 0.05, 0.0], [0.9, 0.5, 0.0], [0.9, 0.0, 0.0]])
    thresholds = lowered_thresholds(values, beta=0.1, min_echoes=2, lowering=0.8)
    assert thresholds[0] == pytest.approx(0.1 * 0.8**4)  # 0.1 * 0.8^3 = 0.0512 > 0.05 >= 0.1 * 0.8^4
    assert thresholds[1] == pytest.approx(0.1)
    assert thresholds[2] == pytest.approx(0.1)  # only one echo exists: nothing to lower for
    activation = np.zeros((1, 300))
    activation[0, [100, 200]] = [1.0, 0.05]
    assert detect_echoes(activation, beta=0.1).counts[0] == 1
    found = detect_echoes(activation, beta=0.1, min_echoes=2)
    assert found.counts[0] == 2
    np.testing.assert_allclose(np.linalg.norm(found.amplitudes[0]), 1.0)
