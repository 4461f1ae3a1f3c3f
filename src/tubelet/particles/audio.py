"""Audio particles: log-mel spectrogram patches on the same seconds axis as the video particles.

The spectrogram is computed with torch alone (``torch.stft`` and a mel filterbank built here). torchaudio is
not a dependency: its wheels are pinned to one torch build each, which would tie every install of tubelet to a
matching torchaudio, and the two functions needed here are a few lines of torch.

A spectrogram is cut exactly like a one-channel video of ``frames x mel bins x 1`` pixels, by the same
`patchify`: an audio particle covers ``patch[0]`` STFT frames (10 ms each by default) and ``patch[1]`` mel bins.
Its fields then mean:

| field | audio meaning |
|---|---|
| `values` | (N, f*m) log-mel energies of the patch, frames-major (``patchify``'s ``(t p q c)`` with q = c = 1) |
| `t` | seconds of the patch centre on the file's time axis (the axis video particles use), incl. `Audio.start` |
| `ti` | index of the patch along time |
| `y` | index of the mel band (0 = lowest frequencies) |
| `x` | 0 |
| `span` | 1 (audio is never pruned) |
| `modality` | `AUDIO` |

Audio values are wider or narrower than video pixels, so a model embeds them with its own linear patch
embedding (``f*m -> D``); after that audio particles can share a sequence with video particles, and their
rotary positions over `t` line a sound up with the frames it belongs to.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tubelet.errors import ConfigError, VideoError
from tubelet.particles.patchify import grid_shape, patchify
from tubelet.particles.structure import AUDIO, Particles
from tubelet.particles.tokenize import tubelet_times

# STFT frames x mel bins per audio particle: 16 frames of 10 ms hop = 160 ms, 16 mel bins (as AST's 16x16).
DEFAULT_AUDIO_PATCH = (16, 16)
# Floor added before the log so that digital silence gives a finite value (log(1e-6) = -13.8).
LOG_FLOOR = 1e-6


def hz_to_mel(hz: torch.Tensor | float) -> torch.Tensor:
    """HTK mel scale: ``2595 * log10(1 + hz / 700)``."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(hz, dtype=torch.float64) / 700.0)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(
    n_fft: int, n_mels: int, sample_rate: int, *, f_min: float = 0.0, f_max: float | None = None
) -> torch.Tensor:
    """Triangular filters, unnormalized (peak 1), evenly spaced on the HTK mel scale.

    Returns:
        (n_fft // 2 + 1, n_mels) float32: column j weights the STFT bins of mel bin j, whose peak is at
        ``mel_centres(...)[j]`` Hz.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)  # (F,)
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2))  # (M+2,)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]  # (M,) each
    rising = (freqs[:, None] - lower) / (centre - lower)  # (F, M)
    falling = (upper - freqs[:, None]) / (upper - centre)  # (F, M)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


def mel_centres(n_mels: int, sample_rate: int, *, f_min: float = 0.0, f_max: float | None = None) -> torch.Tensor:
    """(n_mels,) float64 Hz at which each mel filter of `mel_filterbank` peaks."""
    f_max = sample_rate / 2 if f_max is None else f_max
    return mel_to_hz(torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2))[1:-1]


def log_mel(
    samples: torch.Tensor, sample_rate: int, *, n_fft: int = 400, hop: int = 160, n_mels: int = 64
) -> torch.Tensor:
    """Log-mel spectrogram of mono audio.

    Frames are centred (``torch.stft(center=True)``): frame k is centred on sample ``k * hop``, so it sits at
    ``k * hop / sample_rate`` seconds after the first sample.

    Args:
        samples: (S,) float mono in [-1, 1].
        n_fft: window and FFT length in samples (400 = 25 ms at 16 kHz); a Hann window.
        hop: samples between frames (160 = 10 ms at 16 kHz).

    Returns:
        (frames, n_mels) float32 ``log(power_mel + 1e-6)`` with frames = ``1 + S // hop``.
    """
    samples = torch.as_tensor(samples, dtype=torch.float32)
    spec = torch.stft(
        samples, n_fft, hop_length=hop, window=torch.hann_window(n_fft), center=True, return_complex=True
    )  # (n_fft//2+1, frames)
    power = spec.abs().pow(2).T  # (frames, n_fft//2+1)
    mel = power @ mel_filterbank(n_fft, n_mels, sample_rate)  # (frames, n_mels)
    return torch.log(mel + LOG_FLOOR)


def tokenize_audio(
    audio,
    *,
    patch: Sequence[int] = DEFAULT_AUDIO_PATCH,
    n_fft: int = 400,
    hop: int = 160,
    n_mels: int = 64,
) -> Particles:
    """Cut a decoded audio track into particles.

    Args:
        audio: a `tubelet.io.Audio` (mono float samples, sample rate, start seconds, path), as `decode_audio`
            returns it; a missing audio stream has already raised `VideoError` there.
        patch: (f, m) STFT frames and mel bins per particle; `n_mels` must be a multiple of m.
        n_fft, hop, n_mels: as in `log_mel` (defaults: 25 ms windows every 10 ms, 64 bins, at 16 kHz).

    Returns:
        `Particles` ordered by (ti, y), values (N, f*m) log-mel, tubelet (f, m, 1), grid (T', n_mels/m, 1),
        frame_shape (frames, n_mels, 1), channels 1, modality `AUDIO`. A partial last patch repeats the last
        frame, as `patchify` pads video.

    Raises:
        ConfigError: `n_mels` is not a multiple of the patch's mel bins.
        VideoError: the audio is shorter than one STFT window.
    """
    f, m = (int(v) for v in patch)
    if n_mels % m:
        raise ConfigError(f"n_mels ({n_mels}) must be a multiple of the audio patch's mel bins ({m})")
    if len(audio.samples) < n_fft:
        raise VideoError(
            audio.path, f"audio is too short for particles ({len(audio.samples)} samples, one window is {n_fft})"
        )
    spec = log_mel(torch.from_numpy(audio.samples), audio.sample_rate, n_fft=n_fft, hop=hop, n_mels=n_mels)
    frames = spec.shape[0]
    tubelet = (f, m, 1)
    patches = patchify(spec[:, :, None, None], tubelet)  # (T', M', 1, f*m)
    Tp, Mp, _, _ = patches.shape
    ti, y, x = torch.ones(Tp, Mp, 1, dtype=torch.bool).nonzero(as_tuple=True)  # row-major: ordered by (ti, y)
    frame_times = audio.start + torch.arange(frames, dtype=torch.float64) * hop / audio.sample_rate  # (frames,)
    return Particles(
        values=patches[ti, y, x],  # (N, f*m)
        t=tubelet_times(frame_times, f)[ti],
        ti=ti,
        y=y,
        x=x,
        span=torch.ones_like(ti),
        seq=torch.zeros_like(ti),
        grid=grid_shape((frames, n_mels, 1), tubelet),
        tubelet=tubelet,
        frame_shape=(frames, n_mels, 1),
        channels=1,
        modality=torch.full_like(ti, AUDIO),
    )
