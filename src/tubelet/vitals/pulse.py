"""Heart rate from a window of mean skin colour: the pulse signal (GREEN, CHROM, POS), its spectral peak, its quality.

Every function takes RGB means on a *uniform* time grid (`uniform` puts decoder times onto one), as (N, 3) float
arrays, and `fs` samples per second:

- ``green``: the green channel over its mean, minus one (Verkruysse et al. 2008): blood absorbs green most, but a
  change of light or of the skin's angle changes green just as much.
- ``chrom`` (de Haan & Jeanne 2013): two chrominance signals ``X = 3R - 2G`` and ``Y = 1.5R + G - 1.5B`` of the
  normalised channels, band-passed, combined as ``X - (std X / std Y) Y`` so that a white (all-channel) change of
  light cancels; over 1.6 s sub-windows, Hann-weighted and overlap-added as the rPPG-Toolbox implementation does.
- ``pos`` (Wang et al. 2017): the normalised channels projected onto the plane orthogonal to the skin tone,
  ``S1 = G - B`` and ``S2 = G + B - 2R``, combined as ``S1 + (std S1 / std S2) S2`` over sliding 1.6 s sub-windows
  and overlap-added.

A rate is the highest peak of the band-passed signal's spectrum in 0.7-4 Hz (42-240 bpm), refined between bins by a
parabola through the peak and its neighbours. Its quality is the signal-to-noise ratio of de Haan & Jeanne: the power
within 0.1 Hz of the peak and within 0.2 Hz of its first harmonic over the rest of the band, in dB. A window whose
quality falls below `MIN_QUALITY_DB` has no confident rate.

Written with numpy and scipy rather than a dependency: the methods are a few lines each, and the packages that
implement them pull in deep-learning stacks or are not on the package index.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import signal
from scipy.sparse import diags, identity
from scipy.sparse.linalg import spsolve

METHODS = ("pos", "chrom", "green")
BAND_HZ = (0.7, 4.0)  # 42-240 beats per minute
SUB_WINDOW_S = 1.6  # CHROM's and POS's sub-window: about one cardiac cycle at 40 bpm
# Below this SNR a window's peak is not trusted. Checked on the training split of `sample-data --vitals`
# (bench_vitals): at -1 dB POS refuses 91% of the windows of no-pulse videos and keeps 36% of the pulse windows, most
# of the rest being crf 16-22 videos whose pulse the encoder removed; 0 dB refuses 95% but keeps only 26%.
MIN_QUALITY_DB = -1.0
POS_PROJECTION = np.array([[0.0, 1.0, -1.0], [-2.0, 1.0, 1.0]])  # rows: S1 = G - B, S2 = -2R + G + B


@dataclass
class Spectrum:
    """Power of a signal over frequency: `freqs` (F,) Hz and `power` (F,), restricted to the band it was cut to."""

    freqs: np.ndarray
    power: np.ndarray


@dataclass
class Rate:
    """A rate read from a spectrum: `hz` (and `bpm`), `quality_db` (SNR of the peak), and the spectrum itself."""

    hz: float
    quality_db: float
    spectrum: Spectrum

    @property
    def bpm(self) -> float:
        return 60.0 * self.hz


def uniform(times: np.ndarray, values: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """`values` (N, ...) sampled at increasing `times` (N,) seconds, linearly interpolated onto ``t0 + k / fs``.

    Returns:
        (K,) grid seconds and (K, ...) values on it.
    """
    times = np.asarray(times, np.float64)
    values = np.asarray(values, np.float64)
    count = int(np.floor((times[-1] - times[0]) * fs + 1e-6)) + 1
    grid = times[0] + np.arange(count) / fs
    flat = values.reshape(len(times), -1)  # (N, C)
    out = np.stack([np.interp(grid, times, flat[:, c]) for c in range(flat.shape[1])], axis=1)  # (K, C)
    return grid, out.reshape(count, *values.shape[1:])


def detrend(x: np.ndarray, smoothness: float = 100.0) -> np.ndarray:
    """`x` (N,) minus its smooth trend by the smoothness-priors method (Tarvainen et al. 2002), the rPPG standard.

    The trend z solves ``(I + smoothness^2 D2' D2) z = x`` with D2 the second-difference operator; lambda = 100 at
    about 30 samples per second removes changes slower than about 0.1 Hz and keeps the pulse.
    """
    x = np.asarray(x, np.float64)
    n = len(x)
    if n < 3:
        return x - x.mean()
    d2 = diags([np.ones(n - 2), -2 * np.ones(n - 2), np.ones(n - 2)], [0, 1, 2], shape=(n - 2, n))
    trend = spsolve((identity(n) + smoothness**2 * (d2.T @ d2)).tocsc(), x)
    return x - trend


def bandpass(x: np.ndarray, fs: float, band: tuple[float, float] = BAND_HZ, order: int = 3) -> np.ndarray:
    """`x` (N, ...) filtered along its first axis by a zero-phase Butterworth band-pass of `band` Hz."""
    high = min(band[1], 0.45 * fs)  # the upper edge must stay below Nyquist at 8-10 samples per second
    sos = _butter(order, float(band[0]), float(high), float(fs))
    padlen = min(3 * (2 * len(sos) + 1), len(x) - 1)
    return signal.sosfiltfilt(sos, x, axis=0, padlen=padlen)


@lru_cache(maxsize=64)
def _butter(order: int, low: float, high: float, fs: float) -> np.ndarray:
    """Second-order sections of a Butterworth band-pass (designed once per rate: CHROM filters every sub-window)."""
    return signal.butter(order, [low, high], btype="bandpass", fs=fs, output="sos")


def green(rgb: np.ndarray, fs: float) -> np.ndarray:
    """(N,) pulse signal: the band-passed green channel relative to its mean."""
    g = rgb[:, 1] / max(float(rgb[:, 1].mean()), 1e-9) - 1.0
    return bandpass(detrend(g), fs)


def chrom(rgb: np.ndarray, fs: float) -> np.ndarray:
    """(N,) pulse signal by CHROM over Hann-weighted half-overlapping 1.6 s sub-windows (see the module docstring)."""
    length = int(np.ceil(SUB_WINDOW_S * fs))
    length += length % 2  # even, so half-overlapping windows tile the signal
    half = length // 2
    out = np.zeros(len(rgb))
    if len(rgb) < length:
        length, half = len(rgb) - len(rgb) % 2, (len(rgb) - len(rgb) % 2) // 2
    hann = signal.windows.hann(length)
    for start in range(0, len(rgb) - length + 1, half):
        block = rgb[start : start + length]  # (L, 3)
        norm = block / np.maximum(block.mean(axis=0), 1e-9)
        xs = 3 * norm[:, 0] - 2 * norm[:, 1]
        ys = 1.5 * norm[:, 0] + norm[:, 1] - 1.5 * norm[:, 2]
        xf, yf = bandpass(xs, fs), bandpass(ys, fs)
        alpha = np.std(xf) / max(np.std(yf), 1e-12)
        out[start : start + length] += (xf - alpha * yf) * hann
    return bandpass(out, fs)


def pos_projection(rgb: np.ndarray) -> np.ndarray:
    """(L,) POS's pulse of one sub-window of RGB means (L, 3): temporally normalised, projected, tuned, zero mean."""
    norm = rgb / np.maximum(rgb.mean(axis=0), 1e-9)  # (L, 3) each channel over its mean
    s = norm @ POS_PROJECTION.T  # (L, 2)
    h = s[:, 0] + (np.std(s[:, 0]) / max(np.std(s[:, 1]), 1e-12)) * s[:, 1]
    return h - h.mean()


def pos(rgb: np.ndarray, fs: float) -> np.ndarray:
    """(N,) pulse signal by POS: `pos_projection` over every 1.6 s sub-window, overlap-added, then band-passed."""
    length = min(int(np.ceil(SUB_WINDOW_S * fs)), len(rgb))
    out = np.zeros(len(rgb))
    for start in range(0, len(rgb) - length + 1):
        out[start : start + length] += pos_projection(rgb[start : start + length])
    return bandpass(detrend(out), fs)


_SIGNALS = {"green": green, "chrom": chrom, "pos": pos}


def pulse_signal(rgb: np.ndarray, fs: float, method: str = "pos") -> np.ndarray:
    """(N,) band-passed pulse signal of RGB means (N, 3) on a uniform grid of `fs` samples per second."""
    if method not in _SIGNALS:
        raise ValueError(f"unknown pulse method {method!r}; use one of {', '.join(METHODS)}")
    return _SIGNALS[method](np.asarray(rgb, np.float64), fs)


def spectrum(x: np.ndarray, fs: float, band: tuple[float, float]) -> Spectrum:
    """The Hann-windowed periodogram of `x` (N,), zero-padded to at least 8192 points, within `band` Hz."""
    n = len(x)
    nfft = max(8192, 1 << int(np.ceil(np.log2(max(n, 2)))))
    power = np.abs(np.fft.rfft((x - x.mean()) * np.hanning(n), nfft)) ** 2
    freqs = np.fft.rfftfreq(nfft, 1.0 / fs)
    keep = (freqs >= band[0]) & (freqs <= band[1])
    return Spectrum(freqs[keep], power[keep])


def peak(spec: Spectrum) -> float:
    """Frequency (Hz) of the spectrum's highest bin, refined by a parabola through it and its two neighbours."""
    i = int(np.argmax(spec.power))
    if 0 < i < len(spec.power) - 1:
        a, b, c = spec.power[i - 1 : i + 2]
        denom = a - 2 * b + c
        shift = 0.5 * (a - c) / denom if denom != 0 else 0.0
        step = spec.freqs[1] - spec.freqs[0]
        return float(spec.freqs[i] + np.clip(shift, -0.5, 0.5) * step)
    return float(spec.freqs[i])


def snr_db(spec: Spectrum, f0: float, *, width: float = 0.1, harmonic: bool = True) -> float:
    """Power within `width` Hz of `f0` (and within 2 `width` of ``2 f0`` when `harmonic`) over the rest, in dB."""
    near = np.abs(spec.freqs - f0) <= width
    if harmonic:
        near |= np.abs(spec.freqs - 2 * f0) <= 2 * width
    signal_power, noise_power = spec.power[near].sum(), spec.power[~near].sum()
    if signal_power <= 0:
        return float("-inf")
    return float(10 * np.log10(signal_power / max(noise_power, 1e-30 * signal_power)))


def rate(x: np.ndarray, fs: float, band: tuple[float, float] = BAND_HZ, *, width: float = 0.1,
         harmonic: bool = True) -> Rate:  # fmt: skip
    """The dominant rate of signal `x` (N,) in `band` and its SNR (see `snr_db`)."""
    spec = spectrum(x, fs, band)
    if not len(spec.power) or not np.any(spec.power > 0):
        return Rate(float("nan"), float("-inf"), spec)
    f0 = peak(spec)
    return Rate(f0, snr_db(spec, f0, width=width, harmonic=harmonic), spec)


def heart_rate(rgb: np.ndarray, fs: float, method: str = "pos") -> tuple[Rate, np.ndarray]:
    """The heart rate of RGB means (N, 3) on a uniform grid of `fs` per second, and the pulse signal (N,) it read."""
    pulse = pulse_signal(rgb, fs, method)
    return rate(pulse, fs), pulse
