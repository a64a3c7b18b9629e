"""CausalHiFTVocoder: CosyVoice 3's vocoder, 80-bin mel (50 Hz) -> 24 kHz waveform.

The release's ``CausalHiFTGenerator`` with ``CausalConvRNNF0Predictor``: the same neural
source filter and iSTFT head as CosyVoice 2's HiFT (``minmo_core.voice.hift``, same 328
parameter names), made causal so that a stream can be vocoded as its mel arrives:

* every convolution pads on the left only, except two that look right: ``conv_pre``
  (kernel 5, 4 frames ahead) and the F0 predictor's first conv (kernel 4, 3 frames ahead);
* the upsampling stages are a nearest-neighbour upsample and an ordinary convolution
  (weights [out, in, k]) instead of transposed convolutions;
* the F0 predictor runs in float64 (the release moves it there: its output decides the
  sine phases, which accumulate over the whole utterance);
* the excitation draws nothing at run time: its additive noise reads a fixed table of
  uniform numbers at the sample's position (``NoiseTable``), and the sine phase is held
  for each frame (nearest, not linear, upsampling of the per-frame phase).

``inference(mel, finalize=False)`` is the release's streaming call: the last 3 mel frames
are only the F0 predictor's look-ahead, the next 4 only conv_pre's, and the last 480
samples are held back, so a call on a growing mel gives a prefix of the final audio.
Run it in float32: the sine phases reach thousands of radians.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from minmo_core.config import HiFTConfig
from minmo_core.voice.hift import (
    LRELU_SLOPE,
    POST_LRELU_SLOPE,
    SOURCE_RESBLOCK_DILATIONS,
    ISTFTHead,
    ResBlock,
)

NOISE_SEED = 0  # our noise table's seed (the release draws its table afresh per process)
NOISE_BLOCK = 24000  # noise table rows made at a time (one second at 24 kHz)
F0_CONTEXT = 8  # frames the F0 predictor's four causal convolutions (kernel 3) reach back
STREAM_CONTEXT_FRAMES = 24  # frames before the new ones a stream re-runs (the decoder's reach)


class CausalConv1d(nn.Conv1d):
    """A stride-1 convolution padded on one side: the left (causal), or the right, where
    ``context`` (the next frames, in streaming) replaces the zeros.
    x (B, C_in, T) -> (B, C_out, T)."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, dilation: int = 1, look_right: bool = False
    ) -> None:
        super().__init__(c_in, c_out, kernel, dilation=dilation)
        # the release's formula; (kernel - 1) * dilation for every kernel it uses
        self.pad = (kernel * dilation - dilation) // 2 * 2 + (kernel + 1) % 2
        self.look_right = look_right

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if not self.look_right:
            return super().forward(F.pad(x, (self.pad, 0)))
        if context is None:
            context = x.new_zeros(x.shape[0], x.shape[1], self.pad)
        return super().forward(torch.cat([x, context], dim=2))


class UpsampleConv1d(nn.Conv1d):
    """x rate (nearest), then a causal convolution. x (B, C_in, T) -> (B, C_out, rate·T)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, rate: int) -> None:
        super().__init__(c_in, c_out, kernel)
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=self.rate, mode="nearest")
        return super().forward(F.pad(x, (self.kernel_size[0] - 1, 0)))


class DownsampleConv1d(nn.Conv1d):
    """Strided convolution (kernel 2·rate) padded rate - 1 on the left.
    x (B, C_in, T) -> (B, C_out, ceil(T / rate))."""

    def __init__(self, c_in: int, c_out: int, rate: int) -> None:
        super().__init__(c_in, c_out, 2 * rate, rate)
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.rate - 1, 0)))


def _causal(c_in: int, c_out: int, kernel: int, dilation: int = 1, look_right: bool = False):
    return weight_norm(CausalConv1d(c_in, c_out, kernel, dilation, look_right))


class CausalF0Predictor(nn.Module):
    """The release's CausalConvRNNF0Predictor: 5 convolutions (the first looks 3 frames
    ahead), ELU, a linear layer. mel (B, n_mels, T) -> f0 (B, T) Hz, or (B, T - 3) when
    not ``finalize`` (the last 3 frames are look-ahead only)."""

    def __init__(self, in_channels: int, channels: int, look_right: int = 3):
        super().__init__()
        layers: list[nn.Module] = [_causal(in_channels, channels, look_right + 1, 1, True)]
        layers.append(nn.ELU())
        for _ in range(4):
            layers += [_causal(channels, channels, 3), nn.ELU()]
        self.condnet = nn.Sequential(*layers)  # keys condnet.{0,2,4,6,8}
        self.classifier = nn.Linear(channels, 1)

    @property
    def look_right(self) -> int:
        return self.condnet[0].pad

    def forward(self, mel: torch.Tensor, finalize: bool = True) -> torch.Tensor:
        first, ahead = self.condnet[0], self.look_right
        x = first(mel) if finalize else first(mel[:, :, :-ahead], mel[:, :, -ahead:])
        for layer in self.condnet[1:]:
            x = layer(x)
        return self.classifier(x.transpose(1, 2)).squeeze(-1).abs()


class NoiseTable:
    """The causal source's fixed noise: uniform [0, 1) numbers, ``columns`` per sample,
    the same at every call for the same sample position (so a stream re-run over a growing
    mel sees the same noise). Rows are made a second at a time from ``seed``; ``fixed``
    (1, N, columns), when given, is used instead (the release's own table, for parity)."""

    def __init__(self, columns: int, seed: int = NOISE_SEED, fixed: torch.Tensor | None = None):
        self.columns, self.seed, self.fixed = columns, seed, fixed

    def rows(self, start: int, length: int, device, dtype) -> torch.Tensor:
        """Rows start..start+length -> (1, length, columns)."""
        if self.fixed is not None:
            if start + length > self.fixed.shape[1]:
                raise ValueError(
                    f"the noise table has {self.fixed.shape[1]} rows, not {start + length}"
                )
            return self.fixed[:, start : start + length].to(device=device, dtype=dtype)
        first, last = start // NOISE_BLOCK, (start + length - 1) // NOISE_BLOCK
        blocks = []
        for block in range(first, last + 1):
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + block)
            blocks.append(torch.rand(NOISE_BLOCK, self.columns, generator=generator))
        table = torch.cat(blocks)[start - first * NOISE_BLOCK :][:length]
        return table[None].to(device=device, dtype=dtype)


class CausalHarmonicSource(nn.Module):
    """The release's SourceModuleHnNSF with SineGen2 in causal mode: F0 and its harmonics
    as sines whose phase is held for each frame, uniform table noise, a linear layer and
    tanh."""

    def __init__(self, cfg: HiFTConfig, upsample_scale: int):
        super().__init__()
        self.cfg = cfg
        self.upsample_scale = upsample_scale  # 480 samples per mel frame
        self.l_linear = nn.Linear(cfg.nb_harmonics + 1, 1)
        self.noise = NoiseTable(cfg.nb_harmonics + 1)

    def frame_rad(self, f0: torch.Tensor) -> torch.Tensor:
        """f0 (B, T) Hz -> each harmonic's phase step per sample in cycles, mod 1:
        (B, T, H+1), per frame (the release's per-sample values averaged back to frame rate
        are these)."""
        cfg = self.cfg
        harmonics = torch.arange(1, cfg.nb_harmonics + 2, device=f0.device, dtype=f0.dtype)
        return (f0[:, :, None] * harmonics) / cfg.sample_rate % 1

    def sine_waves(
        self, f0: torch.Tensor, start: int = 0, rad_before: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """f0 (B, T) Hz -> sine_waves (B, L, H+1), uv (B, L, 1), L = 480·T; ``start`` is
        the first sample's position in the utterance (where the noise table is read),
        ``rad_before`` (B, P, H+1) the ``frame_rad`` of the P frames before it: the phase
        sums them first, as one pass over the whole utterance would (a float32 cumulative
        sum in the same order, so a stream's phases are the whole utterance's)."""
        cfg, scale = self.cfg, self.upsample_scale
        rad = self.frame_rad(f0)  # (B, T, H+1)
        if rad_before is not None and rad_before.size(1):
            cumulative = torch.cumsum(torch.cat([rad_before, rad], dim=1), dim=1)
            cumulative = cumulative[:, rad_before.size(1) :]
        else:
            cumulative = torch.cumsum(rad, dim=1)
        phase = cumulative * 2 * math.pi  # (B, T, H+1)
        phase = phase.transpose(1, 2) * scale  # (B, H+1, T)
        phase = phase.repeat_interleave(scale, dim=2).transpose(1, 2)  # (B, L, H+1) held
        sines = torch.sin(phase) * cfg.nsf_alpha
        uv = (f0.repeat_interleave(scale, dim=1)[..., None] > cfg.nsf_voiced_threshold).to(
            sines.dtype
        )  # (B, L, 1)
        noise_amp = uv * cfg.nsf_sigma + (1 - uv) * cfg.nsf_alpha / 3
        table = self.noise.rows(start, sines.shape[1], sines.device, sines.dtype)
        return sines * uv + noise_amp * table, uv

    def forward(
        self, f0: torch.Tensor, start: int = 0, rad_before: torch.Tensor | None = None
    ) -> torch.Tensor:
        """f0 (B, T) Hz -> source (B, 1, 480·T) (``sine_waves`` for the arguments)."""
        sine_waves, _ = self.sine_waves(f0, start, rad_before)
        return torch.tanh(self.l_linear(sine_waves)).transpose(1, 2)


class CausalHiFTVocoder(ISTFTHead):
    """CosyVoice 3's CausalHiFTGenerator with its F0 predictor: mel (B, 80, T) -> audio."""

    def __init__(self, cfg: HiFTConfig):
        super().__init__()
        self.cfg = cfg
        n_fft, rates = cfg.istft_n_fft, cfg.upsample_rates
        self.upsample_scale = math.prod(rates) * cfg.istft_hop  # 480 samples per mel frame
        spec_channels = n_fft + 2
        widths = [cfg.base_channels // 2**i for i in range(len(rates) + 1)]

        self.m_source = CausalHarmonicSource(cfg, self.upsample_scale)
        self.conv_pre = _causal(cfg.in_channels, widths[0], cfg.conv_pre_look_right + 1, 1, True)
        self.ups = nn.ModuleList(
            weight_norm(UpsampleConv1d(widths[i], widths[i + 1], k, u))
            for i, (u, k) in enumerate(zip(rates, cfg.upsample_kernel_sizes, strict=True))
        )
        self.source_downs = nn.ModuleList()
        for i in range(len(rates)):
            r = math.prod(rates[i + 1 :])
            self.source_downs.append(
                CausalConv1d(spec_channels, widths[i + 1], 1)
                if r == 1
                else DownsampleConv1d(spec_channels, widths[i + 1], r)
            )
        self.source_resblocks = nn.ModuleList(
            ResBlock(widths[i + 1], k, SOURCE_RESBLOCK_DILATIONS, conv=_causal)
            for i, k in enumerate(cfg.source_resblock_kernel_sizes)
        )
        self.resblocks = nn.ModuleList(
            ResBlock(widths[i + 1], k, d, conv=_causal)
            for i in range(len(rates))
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilations, strict=True)
        )
        self.conv_post = _causal(widths[-1], spec_channels, 7)
        self.f0_predictor = CausalF0Predictor(
            cfg.in_channels, cfg.f0_cond_channels, cfg.f0_look_right
        )
        window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
        self.register_buffer("window", window.float(), persistent=False)

    def predict_f0(self, mel: torch.Tensor, finalize: bool = True) -> torch.Tensor:
        """mel (B, n_mels, T) -> f0 (B, T) Hz (B, T - 3 unless ``finalize``), computed in
        float64 as the release does, returned in the mel's dtype."""
        if self.f0_predictor.classifier.weight.dtype != torch.float64:
            self.f0_predictor.to(torch.float64)
        return self.f0_predictor(mel.to(torch.float64), finalize).to(mel)

    def predict_spectrum(
        self, mel: torch.Tensor, s_stft: torch.Tensor, finalize: bool = True
    ) -> torch.Tensor:
        """mel (B, n_mels, T), s_stft (B, n_fft + 2, 120·T + 1) -> conv_post output, for
        120·T + 1 frames, or 120·(T - 4) + 1 unless ``finalize`` (conv_pre's look-ahead)."""
        ahead = self.cfg.conv_pre_look_right
        if finalize:
            x = self.conv_pre(mel)
        else:
            x = self.conv_pre(mel[:, :, :-ahead], mel[:, :, -ahead:])
            s_stft = s_stft[:, :, : -math.prod(self.cfg.upsample_rates) * ahead]
        n_kernels = len(self.cfg.resblock_kernel_sizes)
        for i, (up, down, source_block) in enumerate(
            zip(self.ups, self.source_downs, self.source_resblocks, strict=True)
        ):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            if i == len(self.ups) - 1:
                x = F.pad(x, (1, 0), mode="reflect")
            x = x + source_block(down(s_stft))
            blocks = self.resblocks[i * n_kernels : (i + 1) * n_kernels]
            xs = blocks[0](x)
            for block in blocks[1:]:
                xs = xs + block(x)
            x = xs / n_kernels
        return self.conv_post(F.leaky_relu(x, POST_LRELU_SLOPE))

    def decode(self, mel: torch.Tensor, source: torch.Tensor, finalize: bool = True):
        """mel (B, n_mels, T), source (B, 1, 480·T) -> audio (B, 480·T), or
        (B, 480·(T - 5)) unless ``finalize`` (look-ahead, then the held-back last frame)."""
        audio = self.inverse_stft(self.predict_spectrum(mel, self.source_stft(source), finalize))
        if not finalize:
            audio = audio[:, : -self.upsample_scale]
        return audio.clamp(-self.cfg.audio_limit, self.cfg.audio_limit)

    def forward(
        self, mel: torch.Tensor, finalize: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """mel (B, n_mels, T) -> audio, source (B, 1, 480·T'), T' = T, or T - 3 unless
        ``finalize``; the audio has 480·T samples, or 480·(T - 8) unless ``finalize``."""
        f0 = self.predict_f0(mel, finalize)
        source = self.m_source(f0)
        if not finalize:
            mel = mel[:, :, : -self.f0_predictor.look_right]
        return self.decode(mel, source, finalize), source

    @torch.inference_mode()
    def inference(
        self, mel: torch.Tensor, finalize: bool = True, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` without autograd. ``generator`` is accepted as CosyVoice 2's vocoder
        takes it; this one draws nothing."""
        return self(mel, finalize)

    def stream(self, context_frames: int = STREAM_CONTEXT_FRAMES) -> CausalHiFTStream:
        """A stream for one utterance whose mel arrives in pieces (``CausalHiFTStream``)."""
        return CausalHiFTStream(self, context_frames)


class CausalHiFTStream:
    """One utterance vocoded as its mel arrives, at a bounded cost per call.

    The release re-runs the vocoder over all the mel so far and keeps the new samples.
    The vocoder is causal, so here each call runs it over a window instead: the frames
    whose audio is new, ``context_frames`` before them (the convolutions' reach: their
    output there is discarded), and F0_CONTEXT more for the F0 predictor; the sine phases
    continue from the earlier frames' phase steps (kept: 36 bytes a frame), and the noise table
    is read at the window's place in the utterance. The audio equals the whole
    utterance's within float rounding (tests/test_hift_v3.py). ``push`` returns every
    sample that no later mel can change: all but the last 8 frames' (3 of F0 look-ahead,
    4 of conv_pre's, 1 held back), until ``finalize``.
    """

    def __init__(self, vocoder: CausalHiFTVocoder, context_frames: int) -> None:
        self.vocoder = vocoder
        self.context = context_frames
        cfg = vocoder.cfg
        self.hold = cfg.f0_look_right + cfg.conv_pre_look_right + 1  # frames held back
        self.mel: torch.Tensor | None = None  # (B, 80, kept frames), from frame ``first``
        self.first = 0
        self.emitted = 0  # frames whose audio was given out
        self.rad: torch.Tensor | None = None  # (B, frames, H+1): every earlier frame's phase step
        self.finished = False

    @torch.inference_mode()
    def push(self, mel: torch.Tensor, finalize: bool = False) -> torch.Tensor:
        """mel (B, 80, n) the utterance's next frames (n may be 0 when finalising) ->
        audio (B, samples) that is now final; ``finalize``: the utterance ends here."""
        if self.finished:
            raise RuntimeError("this vocoder stream was finalised; start a new one")
        v, scale = self.vocoder, self.vocoder.upsample_scale
        self.mel = mel if self.mel is None else torch.cat([self.mel, mel], dim=2)
        total = self.first + self.mel.size(2)  # frames so far
        end = total if finalize else total - self.hold  # frames whose audio is ready
        self.finished = finalize
        if end <= self.emitted:
            return self.mel.new_zeros(self.mel.size(0), 0)
        start = max(0, self.emitted - self.context)  # the decode window's first frame
        f0_start = max(0, start - F0_CONTEXT)
        window = self.mel[:, :, f0_start - self.first :]
        f0 = v.predict_f0(window, finalize)[:, start - f0_start :]  # frames start..
        if self.rad is None:
            self.rad = f0.new_zeros(f0.size(0), 0, v.cfg.nb_harmonics + 1)
        if self.rad.size(1) != start:
            raise AssertionError(f"phase steps kept to frame {self.rad.size(1)}, window at {start}")
        source = v.m_source(f0, start * scale, self.rad)
        decode_mel = window[:, :, start - f0_start :]
        if not finalize:
            decode_mel = decode_mel[:, :, : -v.f0_predictor.look_right]
        audio = v.decode(decode_mel, source, finalize)  # frames start..end
        new = audio[:, (self.emitted - start) * scale :]
        # the next window starts ``context`` frames before the next new frame: keep the
        # phase steps up to there (this call's F0 is exact from ``start`` on); 36 bytes a
        # frame, so the whole utterance's are kept and summed in one pass
        following = max(0, end - self.context)
        self.rad = torch.cat([self.rad, v.m_source.frame_rad(f0[:, : following - start])], 1)
        keep_from = max(0, following - F0_CONTEXT)  # frames the next call may read
        self.mel = self.mel[:, :, keep_from - self.first :]
        self.first, self.emitted = keep_from, end
        return new


def load_causal_vocoder(
    folder: Path | str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    allow_unpinned: bool = False,
) -> CausalHiFTVocoder:
    """A CosyVoice 3 release folder's ``hift.pt`` with the sizes of its ``cosyvoice3.yaml``
    (the F0 predictor's look-ahead from the checkpoint) -> CausalHiFTVocoder in eval mode."""
    import dataclasses

    from minmo_core.common.checkpoints import load_into, load_state_dict
    from minmo_core.common.release_config import RELEASE_YAMLS, hift_config, read_release_yaml
    from minmo_core.common.releases import COSYVOICE3, verify_files
    from minmo_core.errors import CheckpointError
    from minmo_core.voice.hift import HIFT_FILE, load_hift_state

    folder = Path(folder)
    yaml_name = RELEASE_YAMLS[3]
    verify_files(folder, COSYVOICE3, [yaml_name, HIFT_FILE], allow_unpinned)
    hift = read_release_yaml(folder / yaml_name).get("hift")
    if not isinstance(hift, dict):
        raise CheckpointError(f"{folder / yaml_name} has no hift section")
    cfg = hift_config(hift, causal=True, source=str(folder / yaml_name))
    state = load_hift_state(load_state_dict(folder / HIFT_FILE))
    first = state.get("f0_predictor.condnet.0.parametrizations.weight.original1")
    if first is None or first.dim() != 3:
        raise CheckpointError(f"{folder / HIFT_FILE} has no F0 predictor: not a HiFT vocoder")
    cfg = dataclasses.replace(cfg, f0_look_right=first.shape[2] - 1)
    model = CausalHiFTVocoder(cfg)
    load_into(model, state, folder / HIFT_FILE)
    return model.to(device=torch.device(device), dtype=dtype).eval()


__all__ = [
    "CausalConv1d",
    "CausalF0Predictor",
    "CausalHarmonicSource",
    "CausalHiFTStream",
    "CausalHiFTVocoder",
    "DownsampleConv1d",
    "NoiseTable",
    "UpsampleConv1d",
    "load_causal_vocoder",
]
