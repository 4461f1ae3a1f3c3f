"""The small pure functions of the pulse reader, checked against values worked out by hand."""

import numpy as np
import pytest

from tubelet.vitals.pulse import (
    Spectrum,
    bandpass,
    detrend,
    heart_rate,
    peak,
    pos_projection,
    pulse_signal,
    rate,
    snr_db,
    uniform,
)


def test_a_sinusoid_gives_its_own_rate_between_bins():
    fs, f = 30.0, 1.2345  # 74.07 bpm: between the bins of a 10 s window, and of the zero-padded spectrum
    t = np.arange(300) / fs
    x = np.sin(2 * np.pi * f * t) + 0.05 * np.random.default_rng(0).normal(size=len(t))
    found = rate(bandpass(x, fs), fs)
    assert abs(found.hz - f) < 0.003  # 0.2 bpm
    assert found.quality_db > 10  # nearly all the band's power is at the peak


def test_the_parabola_moves_the_peak_between_bins():
    spec = Spectrum(np.array([1.0, 1.1, 1.2]), np.array([1.0, 4.0, 3.0]))
    # Vertex of the parabola through (-1, 1), (0, 4), (1, 3): shift = 0.5 (1 - 3) / (1 - 8 + 3) = 0.25 bins.
    assert peak(spec) == pytest.approx(1.125)


def test_snr_counts_the_peak_and_its_harmonic_against_the_rest():
    freqs = np.array([1.0, 1.5, 2.0, 3.0, 3.5])
    power = np.array([4.0, 1.0, 2.0, 1.0, 0.0])
    spec = Spectrum(freqs, power)
    # Near 1.0 (within 0.1): 4; near 2.0 (within 0.2): 2; the rest: 1 + 1 + 0 = 2 -> 10 log10(6 / 2).
    assert snr_db(spec, 1.0) == pytest.approx(10 * np.log10(3.0))
    assert snr_db(spec, 1.0, harmonic=False) == pytest.approx(10 * np.log10(4.0 / 4.0))


def test_pos_projection_of_a_tiny_window():
    rgb = np.array([[1.0, 1.0, 1.0], [1.0, 2.0, 1.0], [1.0, 1.0, 1.0]])
    # Normalised by the channel means (1, 4/3, 1): G = (.75, 1.5, .75). S1 = G - B = (-.25, .5, -.25) and
    # S2 = G + B - 2R the same, so alpha = 1 and h = S1 + S2 = (-.5, 1, -.5), already zero-mean.
    np.testing.assert_allclose(pos_projection(rgb), [-0.5, 1.0, -0.5])
    # A change of white light scales every channel alike: POS projects it out entirely.
    white = np.array([[100.0, 80.0, 60.0]]) * np.array([[1.0], [1.1], [0.9], [1.05]])
    np.testing.assert_allclose(pos_projection(white), 0.0, atol=1e-12)


def test_pos_and_chrom_ignore_white_flicker_that_green_reads():
    fs = 30.0
    t = np.arange(300) / fs
    skin = np.array([150.0, 110.0, 90.0])
    pulse = 0.002 * np.sin(2 * np.pi * 1.2 * t)[:, None] * np.array([0.33, 0.77, 0.53])  # 72 bpm
    flicker = 0.01 * np.sin(2 * np.pi * 2.0 * t)[:, None]  # 120 bpm, five times stronger, all channels alike
    rgb = skin * (1 + pulse + flicker)
    for method, expected in (("pos", 72.0), ("chrom", 72.0), ("green", 120.0)):
        found, _ = heart_rate(rgb, fs, method)
        assert abs(found.bpm - expected) < 1.0, method


def test_uniform_grid_and_detrend():
    grid, values = uniform(np.array([0.0, 0.1, 0.3]), np.array([0.0, 1.0, 3.0]), 10.0)
    np.testing.assert_allclose(grid, [0.0, 0.1, 0.2, 0.3])
    np.testing.assert_allclose(values, [0.0, 1.0, 2.0, 3.0])
    line = 0.5 * np.arange(50.0)
    np.testing.assert_allclose(detrend(line), 0.0, atol=1e-8)  # a straight line is all trend
    with pytest.raises(ValueError, match="unknown pulse method"):
        pulse_signal(np.ones((10, 3)), 30.0, "red")
