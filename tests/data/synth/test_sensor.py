"""Depth sensor model: statistics against the stated formulas; determinism; the noise-free switch."""

import numpy as np

from cleanpose.data.synth.sensor import SensorNoise, apply_sensor_noise, to_millimetres


def test_axial_noise_std_matches_model():
    depth = np.full((200, 200), 1.2)
    noise = SensorNoise(grazing_drop_probability=0.0, edge_drop_probability=0.0, dropout_probability=0.0)
    noisy = apply_sensor_noise(depth, np.ones_like(depth), np.random.default_rng(0), noise)
    expected = 0.0012 + 0.0019 * (1.2 - 0.4) ** 2
    assert (noisy > 0).all()
    assert abs((noisy - depth).std() / expected - 1.0) < 0.02 and abs((noisy - depth).mean()) < 1e-4


def test_holes_at_edges_grazing_and_range():
    depth = np.full((100, 100), 0.8)
    depth[:, 50:] = 1.5  # a depth edge at column 50
    depth[0:10, 0:10] = 0.1  # closer than the minimum range
    cos_incidence = np.ones_like(depth)
    cos_incidence[60:, :20] = 0.1  # grazing region
    noise = SensorNoise(dropout_probability=0.0)
    noisy = apply_sensor_noise(depth, cos_incidence, np.random.default_rng(1), noise)
    assert (noisy[0:10, 0:10] == 0).all()
    grazing_holes = (noisy[60:, :20] == 0).mean()
    assert abs(grazing_holes - 0.8) < 0.06
    edge_holes = (noisy[10:, 49:51] == 0).mean()
    assert abs(edge_holes - 0.5) < 0.12
    assert (noisy[12:60, 12:47] > 0).all()  # away from edges and grazing angles nothing is dropped


def test_deterministic_and_disabled():
    depth = np.random.default_rng(3).uniform(0.4, 2.0, (40, 50))
    cos_incidence = np.full_like(depth, 0.5)
    noise = SensorNoise(dropout_probability=0.01)
    first = apply_sensor_noise(depth, cos_incidence, np.random.default_rng(9), noise)
    second = apply_sensor_noise(depth, cos_incidence, np.random.default_rng(9), noise)
    np.testing.assert_array_equal(first, second)
    clean = apply_sensor_noise(depth, cos_incidence, np.random.default_rng(9), SensorNoise(enabled=False))
    np.testing.assert_array_equal(clean, depth)


def test_to_millimetres_rounds_and_clears_out_of_range():
    np.testing.assert_array_equal(to_millimetres(np.array([[0.0, 0.0004996, 1.2345, 70.0]])), [[0, 0, 1234, 0]])
