"""Mel spectrograms of the two kinds CosyVoice 2 consumes.

- ``prompt_mel``: the flow's 80-bin log-mel at 24 kHz (n_fft 1920, hop 480, fmax 8000 for
  CosyVoice 2 and None, i.e. 12 kHz, for CosyVoice 3, center False, reflect padding of
  (n_fft - hop) / 2 each side), 50 frames per second.
- ``whisper_log_mel``: the speech tokenizer's 128-bin Whisper log-mel at 16 kHz
  (n_fft 400, hop 160), 100 frames per second.

Both use Slaney-style mel filters (the librosa default the releases were made with).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    log_step = math.log(6.4) / 27.0
    return np.where(
        hz < 1000.0, hz * 3.0 / 200.0, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / log_step
    )


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    log_step = math.log(6.4) / 27.0
    return np.where(mel < 15.0, mel * 200.0 / 3.0, 1000.0 * np.exp(log_step * (mel - 15.0)))


@functools.cache
def mel_filters(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float
) -> torch.Tensor:
    """Slaney-normalised triangular filters: (n_mels, n_fft // 2 + 1) float32."""
    fft_hz = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)  # (n_mels + 1,)
    ramps = edges[:, None] - fft_hz[None, :]  # (n_mels + 2, n_freqs)
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # equal area per filter
    return torch.from_numpy(weights.astype(np.float32))


@functools.cache
def _hann(n: int) -> torch.Tensor:
    return torch.hann_window(n, periodic=True)


PROMPT_FMAX = {2: 8000.0, 3: None}  # Hz, per CosyVoice generation (None: half the rate)


def prompt_mel(
    audio: torch.Tensor, sample_rate: int = 24000, fmax: float | None = 8000.0
) -> torch.Tensor:
    """audio : (N,) float in [-1, 1] at 24 kHz -> log-mel (frames, 80), 50 frames per second;
    the filters span 0 Hz to ``fmax`` (None: sample_rate / 2, as CosyVoice 3's yaml says)."""
    n_fft, hop = 1920, 480
    pad = (n_fft - hop) // 2
    x = F.pad(audio.float()[None, None], (pad, pad), mode="reflect")[0]  # (1, N + 2 pad)
    spec = torch.stft(
        x,
        n_fft,
        hop_length=hop,
        win_length=n_fft,
        window=_hann(n_fft),
        center=False,
        return_complex=True,
    )  # (1, 961, frames)
    magnitude = torch.sqrt(spec.real**2 + spec.imag**2 + 1e-9)
    top = sample_rate / 2.0 if fmax is None else float(fmax)
    mel = mel_filters(sample_rate, n_fft, 80, 0.0, top) @ magnitude[0]  # (80, frames)
    return torch.log(torch.clamp(mel, min=1e-5)).T.contiguous()


def whisper_log_mel(audio: torch.Tensor, n_mels: int = 128) -> torch.Tensor:
    """audio : (N,) float at 16 kHz -> Whisper's normalised log-mel (n_mels, N // 160)."""
    n_fft, hop = 400, 160
    spec = torch.stft(audio.float(), n_fft, hop, window=_hann(n_fft), return_complex=True)
    power = spec[..., :-1].abs() ** 2  # (201, frames): the last frame is dropped, as Whisper does
    mel = mel_filters(16000, n_fft, n_mels, 0.0, 8000.0) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0
