"""Simulator and pulse model: unit-norm echoes, requested SNR, gap bounds, determinism, caching, pulse fit."""

import numpy as np
import pytest

from phenolens.core.errors import PhenolensError
from phenolens.echoes.pulse import PulseShape, angular_frequency, echo_waveforms, fit_pulse
from phenolens.echoes.settings import EchoSimulationSettings
from phenolens.echoes.simulate import EchoSet, cached_simulation, realised_snr_db, simulate, truncated_exponential


def test_echo_waveforms_have_unit_norm_and_the_requested_shape():
    waves = echo_waveforms([100.0, 250.5, 400.0], [9.0, 10.0, 12.0], angular_frequency([5.4, 4.0, 3.0]), [0.0, 1.0, 2.0], 500)
    assert waves.shape == (3, 500)
    np.testing.assert_allclose(np.linalg.norm(waves, axis=1), 1.0, atol=1e-12)
    assert np.argmax(np.abs(waves[0])) in range(96, 105)


def test_simulated_signal_is_the_sum_of_its_unit_norm_echoes():
    data = simulate(EchoSimulationSettings(n_signals=50, seed=3))
    present = np.isfinite(data.tof)
    waves = echo_waveforms(
        np.where(present, data.tof, 0),
        np.where(present, data.sigma, 1),
        angular_frequency(np.nan_to_num(data.freq_mhz)),
        np.nan_to_num(data.phase),
        500,
    )
    np.testing.assert_allclose(np.linalg.norm(waves[present], axis=1), 1.0, atol=1e-12)
    rebuilt = np.einsum("nk,nkt->nt", np.where(present, data.amplitude, 0), waves)
    np.testing.assert_allclose(rebuilt, data.clean, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(data.clean, axis=1), 1.0, atol=1e-5)
    assert set(np.unique(data.counts)) <= set(range(1, 9))


@pytest.mark.parametrize("snr", [5.0, 20.0])
def test_noise_has_the_requested_snr_within_half_a_db(snr):
    data = simulate(EchoSimulationSettings(n_signals=400, snr_db=snr, seed=1))
    realised = realised_snr_db(data)
    assert abs(np.mean(realised) - snr) < 0.5
    assert abs(np.median(realised) - snr) < 0.5
    pooled = 10 * np.log10(np.sum(data.clean.astype(float) ** 2) / np.sum(data.noise**2))
    assert abs(pooled - snr) < 0.1


@pytest.mark.parametrize("mean_gap", [1.0, 5.0])
def test_time_of_flight_gaps_stay_within_bounds(mean_gap):
    config = EchoSimulationSettings(n_signals=300, mean_gap=mean_gap, seed=2)
    data = simulate(config)
    gaps = np.diff(np.sort(data.tof, axis=1), axis=1)
    gaps = gaps[np.isfinite(gaps)] / config.sigma0
    assert gaps.min() >= 1.5 - 1e-9 and gaps.max() <= 6.0 + 1e-9
    assert np.nanmin(data.tof) >= config.margin - 1e-9 and np.nanmax(data.tof) <= config.length - 1 - config.margin + 1e-9
    if mean_gap == 1.0:
        assert gaps.mean() < 3.0  # heavy overlap: the truncated exponential piles up near 1.5 sigma_0
    else:
        assert gaps.mean() > 3.0


def test_truncated_exponential_matches_its_mean():
    samples = truncated_exponential(np.random.default_rng(0), 3.0, 1.5, 6.0, 200_000)
    rate = 1 / 3.0
    expected = 1.5 + 1 / rate - (6.0 - 1.5) * np.exp(-rate * 4.5) / (1 - np.exp(-rate * 4.5))
    assert abs(samples.mean() - expected) < 0.01


def test_heat_map_peaks_at_each_isolated_echo_with_its_amplitude():
    data = simulate(EchoSimulationSettings(n_signals=20, mean_gap=5.0, seed=4))
    single = np.flatnonzero(data.counts == 1)
    for index in single:
        position = int(round(np.nanmax(data.tof[index])))
        assert abs(data.heatmaps[index, position] - np.nanmax(data.amplitude[index])) < 0.05 * np.nanmax(data.amplitude[index])


def test_same_seed_same_signals_and_the_cache_round_trips(tmp_path):
    config = EchoSimulationSettings(n_signals=30, seed=9)
    first = cached_simulation(config, cache=tmp_path)
    assert len(list(tmp_path.glob("simulation-*.npz"))) == 1
    again = cached_simulation(config, cache=tmp_path)
    np.testing.assert_array_equal(first.signals, again.signals)
    np.testing.assert_array_equal(first.signals, simulate(config).signals)
    assert not np.array_equal(first.signals, simulate(EchoSimulationSettings(n_signals=30, seed=10)).signals)
    assert isinstance(again, EchoSet) and again.settings == config


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"distribution": "medium"}, r"distribution \(--distribution\) = 'medium': choose one of none, narrow, wide"),
        ({"length": 200}, "cannot hold 8 echoes"),
        ({"snr_db": float("nan")}, r"snr_db \(--snr\) = nan: must be a finite number"),
        ({"fs_mhz": 0}, r"fs_mhz \(--fs\) = 0.0: must be > 0"),
        ({"fs_mhz": 8}, "Nyquist"),
        ({"mean_gap": -1}, r"mean_gap \(--mean-gap\) = -1.0: must be > 0"),
        ({"sigma0": 0}, r"sigma0 \(--sigma0\) = 0.0: must be > 0"),
        ({"n_signals": 0}, "must be >= 1"),
        ({"gap_bounds": (6.0, 1.5)}, "smallest first"),
    ],
)
def test_bad_settings_raise_a_clear_error(changes, message):
    with pytest.raises(PhenolensError, match=message) as caught:
        EchoSimulationSettings(**changes)
    assert "\n" not in str(caught.value)


def test_the_cache_key_follows_every_setting():
    from phenolens.echoes.simulate import simulation_key

    base = EchoSimulationSettings()
    keys = {simulation_key(base.replace(**{name: value})) for name, value in [("seed", 1), ("snr_db", 10.0), ("fs_mhz", 50.0), ("target_width", 0.3)]}
    assert len(keys | {simulation_key(base)}) == 5 and simulation_key(EchoSimulationSettings()) == simulation_key(base)


def test_pulse_fit_recovers_a_synthetic_echo():
    t = np.arange(400)
    truth = PulseShape(sigma=10.5, freq_mhz=4.8, phase=1.2)
    values = 0.7 * np.exp(-0.5 * ((t - 180.3) / truth.sigma) ** 2) * np.cos(truth.omega * (t - 180.3) + truth.phase)
    fit = fit_pulse(values + np.random.default_rng(0).normal(0, 0.002, 400))
    assert abs(fit.pulse.sigma - 10.5) < 0.1
    assert abs(fit.pulse.freq_mhz - 4.8) < 0.02
    assert abs(np.angle(np.exp(1j * (fit.pulse.phase - 1.2)))) < 0.05
    assert abs(fit.tof - 180.3) < 0.1


@pytest.mark.parametrize(("mean_gap", "realised"), [(1.0, 2.45), (5.0, 3.42)])
def test_lambda_is_the_exponential_s_mean_not_the_realised_gap_and_the_words_say_so(mean_gap, realised):
    """Restricted to [1.5, 6] sigma_0, Exp(lambda) gaps average 1.5 + lambda - 4.5 e^(-4.5/lambda) / (1 - e^(-4.5/lambda)):
    2.45 sigma_0 at lambda 1, 3.42 at lambda 5. The --mean-gap help and the sweep's axis called lambda the mean gap."""
    from phenolens.echoes.settings import EchoEvaluationSettings
    from phenolens.report.echoes import SWEEP_LABELS

    width = 4.5
    expected = 1.5 + mean_gap - width * np.exp(-width / mean_gap) / (1 - np.exp(-width / mean_gap))
    assert expected == pytest.approx(realised, abs=0.01)
    data = simulate(EchoSimulationSettings(n_signals=1500, mean_gap=mean_gap, seed=0))
    gaps = np.diff(np.sort(data.tof, axis=1), axis=1) / data.settings.sigma0
    assert np.nanmean(gaps) == pytest.approx(expected, abs=0.06)
    help_text = EchoSimulationSettings.__dataclass_fields__["mean_gap"].metadata["help"]
    for text in (help_text, SWEEP_LABELS["lambda"], EchoEvaluationSettings.__doc__):
        assert "mean time-of-flight gap" not in text and "mean gap in" not in text
    assert "restricted to --gap-bounds" in help_text and "Exp(lambda sigma_0)" in SWEEP_LABELS["lambda"]
