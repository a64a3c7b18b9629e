"""HiFTVocoder: CosyVoice 2's vocoder, 80-bin mel (50 Hz) -> 24 kHz waveform.

HiFT-GAN is a neural source filter with an iSTFT head. For a mel of T frames the output
has L = 480·T samples (upsampling 8·5·3, then an iSTFT hop of 4):

    mel (B, 80, T) -> F0Predictor -> f0 (B, T) Hz -> HarmonicSource -> source (B, 1, L)
    source -> STFT (n_fft 16, hop 4) -> (B, 18, 120·T + 1), fused into every upsampling stage
    mel -> conv_pre -> 3 x [leaky relu, transposed conv x8/x5/x3, + source branch,
           mean of 3 ResBlocks] -> conv_post -> (B, 18, 120·T + 1)
        -> magnitude exp(ch 0..8), phase sin(ch 9..17) -> iSTFT -> audio (B, L), clamped

Parameter names are those of the released ``hift.pt`` once its ``generator.`` prefix is
stripped (``m_source.l_linear``, ``conv_pre``, ``ups``, ``source_downs``,
``source_resblocks``, ``resblocks``, ``conv_post``, ``f0_predictor.*``), weight norm
included (``*.parametrizations.weight.original0/1``). Run it in float32: the sine phases
reach thousands of radians and the STFT needs a full-precision float type.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from minmo_core.common.checkpoints import load_into, load_state_dict
from minmo_core.common.releases import ALLOW_FLAG, COSYVOICE2, verify_files
from minmo_core.config import HiFTConfig
from minmo_core.errors import CheckpointError

HIFT_FILE = "hift.pt"

# Settings of the release that HiFTConfig does not carry.
LRELU_SLOPE = 0.1  # before each upsampling stage
POST_LRELU_SLOPE = 0.01  # before conv_post: torch's default slope, as the release uses
SOURCE_RESBLOCK_DILATIONS = (1, 3, 5)  # every source ResBlock
MAX_MAGNITUDE = 1e2  # the iSTFT magnitudes exp(x) are clipped here
SNAKE_EPS = 1e-9  # keeps 1 / alpha finite
_LEGACY_WEIGHT_NORM = {  # torch.nn.utils.weight_norm's key names -> the parametrization's
    "weight_g": "parametrizations.weight.original0",
    "weight_v": "parametrizations.weight.original1",
}


def _conv(c_in: int, c_out: int, kernel: int, dilation: int = 1) -> nn.Conv1d:
    """Weight-normed Conv1d with "same" padding."""
    padding = dilation * (kernel - 1) // 2
    return weight_norm(nn.Conv1d(c_in, c_out, kernel, padding=padding, dilation=dilation))


class Snake(nn.Module):
    """x + sin²(αx) / α with a learnt α per channel. x: (B, C, T) -> (B, C, T)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha[:, None]  # (C, 1)
        return x + (1.0 / (alpha + SNAKE_EPS)) * torch.sin(x * alpha).pow(2)


class ResBlock(nn.Module):
    """HiFi-GAN residual block with Snake activations: one residual unit per dilation,
    each a dilated conv then an undilated one. x: (B, C, T) -> (B, C, T)."""

    def __init__(
        self,
        channels: int,
        kernel: int,
        dilations: tuple[int, ...],
        conv: Callable[..., nn.Module] | None = None,
    ):
        """``conv(c_in, c_out, kernel, dilation=...)`` makes each convolution: weight-normed
        with "same" padding by default; CosyVoice 3's vocoder passes its causal one."""
        super().__init__()
        conv = conv or _conv
        self.convs1 = nn.ModuleList(conv(channels, channels, kernel, dilation=d) for d in dilations)
        self.convs2 = nn.ModuleList(conv(channels, channels, kernel) for _ in dilations)
        self.activations1 = nn.ModuleList(Snake(channels) for _ in dilations)
        self.activations2 = nn.ModuleList(Snake(channels) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for act1, conv1, act2, conv2 in zip(
            self.activations1, self.convs1, self.activations2, self.convs2, strict=True
        ):
            x = x + conv2(act2(conv1(act1(x))))
        return x


class F0Predictor(nn.Module):
    """F0 in Hz from the mel (the release's ConvRNNF0Predictor: 5 convs, no RNN despite the
    name). mel (B, n_mels, T) -> f0 (B, T)."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(5):
            layers += [_conv(in_channels if i == 0 else channels, channels, 3), nn.ELU()]
        self.condnet = nn.Sequential(*layers)  # keys condnet.{0,2,4,6,8}
        self.classifier = nn.Linear(channels, 1)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.condnet(mel).transpose(1, 2)  # (B, T, C)
        return self.classifier(x).squeeze(-1).abs()  # (B, T)


@dataclass(frozen=True)
class SourceDraws:
    """The random numbers one source excitation uses, in the release's order.

    initial_phase (B, H+1): uniform [0, 1), the release's random initial phase of each
        harmonic. It is drawn but has no effect: the release adds it to the first sample
        only, and its downsampling to frame rate never reads that sample.
    noise (B, L, H+1): standard normal, scaled by the voiced/unvoiced noise amplitude.
    """

    initial_phase: torch.Tensor
    noise: torch.Tensor

    @classmethod
    def sample(
        cls,
        batch: int,
        length: int,
        dim: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> SourceDraws:
        """Draw as the release does, so that a seed reproduces its source exactly.

        The noise fills a (B, L, H+1) view of (B, H+1, L) memory, like the release's
        ``randn_like``: torch fills a non-contiguous tensor element by element, so the
        layout decides which number lands where.
        """
        initial_phase = torch.rand(batch, dim, generator=generator, device=device)
        noise = torch.empty(batch, dim, length, device=device).transpose(1, 2)  # (B, L, H+1)
        return cls(initial_phase, noise.normal_(generator=generator))


class HarmonicSource(nn.Module):
    """Neural-source-filter excitation: F0 and its harmonics as sines (noise where
    unvoiced), merged by a linear layer and tanh. The release's SourceModuleHnNSF with
    SineGen2 (its 24 kHz sine generator)."""

    def __init__(self, cfg: HiFTConfig, upsample_scale: int):
        super().__init__()
        self.cfg = cfg
        self.upsample_scale = upsample_scale  # 480 samples per mel frame
        self.l_linear = nn.Linear(cfg.nb_harmonics + 1, 1)

    def upsample(self, f0: torch.Tensor) -> torch.Tensor:
        """f0 (B, T) -> (B, L, 1), each frame's value repeated over its samples."""
        return f0.repeat_interleave(self.upsample_scale, dim=1)[..., None]

    def sine_waves(self, f0: torch.Tensor, draws: SourceDraws) -> tuple[torch.Tensor, torch.Tensor]:
        """f0 (B, T) Hz -> sine_waves (B, L, H+1), uv (B, L, 1) (1.0 where voiced).

        Each frame advances a harmonic's phase by 480 samples at its frequency (in cycles
        per sample, mod 1); the per-frame phases are linearly interpolated to the sample
        rate. This equals the release's computation, which works at the sample rate but
        averages samples 239 and 240 of each frame to get the frame's frequency.
        """
        cfg = self.cfg
        harmonics = torch.arange(1, cfg.nb_harmonics + 2, device=f0.device, dtype=f0.dtype)
        rad = (f0[:, None, :] * harmonics[:, None]) / cfg.sample_rate % 1  # (B, H+1, T)
        phase = torch.cumsum(rad, dim=2) * 2 * math.pi * self.upsample_scale  # (B, H+1, T)
        phase = F.interpolate(phase, scale_factor=float(self.upsample_scale), mode="linear")
        sines = torch.sin(phase).transpose(1, 2) * cfg.nsf_alpha  # (B, L, H+1)
        uv = (self.upsample(f0) > cfg.nsf_voiced_threshold).to(sines.dtype)  # (B, L, 1)
        noise_amp = uv * cfg.nsf_sigma + (1 - uv) * cfg.nsf_alpha / 3  # (B, L, 1)
        return sines * uv + noise_amp * draws.noise, uv

    def forward(
        self,
        f0: torch.Tensor,
        generator: torch.Generator | None = None,
        draws: SourceDraws | None = None,
    ) -> torch.Tensor:
        """f0 (B, T) Hz -> source (B, 1, L). Random unless ``draws`` are given."""
        if draws is None:
            length = f0.shape[1] * self.upsample_scale
            draws = SourceDraws.sample(
                f0.shape[0], length, self.cfg.nb_harmonics + 1, generator, f0.device
            )
        sine_waves, _ = self.sine_waves(f0, draws)  # (B, L, H+1)
        return torch.tanh(self.l_linear(sine_waves)).transpose(1, 2)  # (B, 1, L)


class ISTFTHead(nn.Module):
    """What CosyVoice 2's and 3's vocoders share around their networks: the source's STFT,
    the iSTFT of the predicted spectrum, folding weight norm. Needs ``cfg`` (a HiFTConfig)
    and the ``window`` buffer."""

    cfg: HiFTConfig
    window: torch.Tensor

    def source_stft(self, source: torch.Tensor) -> torch.Tensor:
        """source (B, 1, L) -> (B, n_fft + 2, L / hop + 1): real parts, then imaginary."""
        n_fft = self.cfg.istft_n_fft
        spec = torch.stft(
            source.squeeze(1), n_fft, self.cfg.istft_hop, n_fft, self.window, return_complex=True
        )  # (B, n_fft / 2 + 1, L / hop + 1)
        return torch.cat([spec.real, spec.imag], dim=1)

    def inverse_stft(self, spectrum: torch.Tensor) -> torch.Tensor:
        """conv_post output (B, n_fft + 2, F) -> audio (B, (F - 1)·hop), not clamped."""
        n_bins = self.cfg.istft_n_fft // 2 + 1
        magnitude = torch.exp(spectrum[:, :n_bins]).clamp(max=MAX_MAGNITUDE)  # (B, 9, F)
        phase = torch.sin(spectrum[:, n_bins:])  # (B, 9, F)
        spec = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
        n_fft = self.cfg.istft_n_fft
        return torch.istft(spec, n_fft, self.cfg.istft_hop, n_fft, self.window)  # (B, L)

    def remove_weight_norm(self):
        """Fold g·v/‖v‖ into plain weights (faster inference; state dict keys become
        ``*.weight``, so load checkpoints first)."""
        for module in list(self.modules()):
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight")
        return self


class HiFTVocoder(ISTFTHead):
    """CosyVoice 2's HiFTGenerator with its F0 predictor: mel (B, 80, T) -> audio (B, 480·T)."""

    def __init__(self, cfg: HiFTConfig):
        super().__init__()
        self.cfg = cfg
        n_fft, rates = cfg.istft_n_fft, cfg.upsample_rates
        self.upsample_scale = math.prod(rates) * cfg.istft_hop  # 480 samples per mel frame
        spec_channels = n_fft + 2  # 9 real + 9 imaginary (source) / 9 log-mag + 9 phase (out)
        widths = [cfg.base_channels // 2**i for i in range(len(rates) + 1)]  # 512 256 128 64

        self.m_source = HarmonicSource(cfg, self.upsample_scale)
        self.conv_pre = _conv(cfg.in_channels, widths[0], 7)
        self.ups = nn.ModuleList(
            weight_norm(nn.ConvTranspose1d(widths[i], widths[i + 1], k, u, padding=(k - u) // 2))
            for i, (u, k) in enumerate(zip(rates, cfg.upsample_kernel_sizes, strict=True))
        )
        # The source spectrum (hop 4) brought to each stage's rate: x15, x3, x1 for (8, 5, 3).
        self.source_downs = nn.ModuleList()
        for i in range(len(rates)):
            r = math.prod(rates[i + 1 :])
            self.source_downs.append(
                nn.Conv1d(spec_channels, widths[i + 1], 1)
                if r == 1
                else nn.Conv1d(spec_channels, widths[i + 1], 2 * r, r, padding=r // 2)
            )
        self.source_resblocks = nn.ModuleList(
            ResBlock(widths[i + 1], k, SOURCE_RESBLOCK_DILATIONS)
            for i, k in enumerate(cfg.source_resblock_kernel_sizes)
        )
        self.resblocks = nn.ModuleList(
            ResBlock(widths[i + 1], k, d)
            for i in range(len(rates))
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilations, strict=True)
        )
        self.conv_post = _conv(widths[-1], spec_channels, 7)
        self.f0_predictor = F0Predictor(cfg.in_channels, cfg.f0_cond_channels)
        # periodic Hann, computed in float64 like the release's scipy window
        window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
        self.register_buffer("window", window.float(), persistent=False)

    def predict_spectrum(self, mel: torch.Tensor, s_stft: torch.Tensor) -> torch.Tensor:
        """mel (B, n_mels, T), s_stft (B, n_fft + 2, 120·T + 1) -> conv_post output of the
        same shape as s_stft: log-magnitudes, then phases (before their sine)."""
        n_kernels = len(self.cfg.resblock_kernel_sizes)
        x = self.conv_pre(mel)  # (B, C, T)
        for i, (up, down, source_block) in enumerate(
            zip(self.ups, self.source_downs, self.source_resblocks, strict=True)
        ):
            x = up(F.leaky_relu(x, LRELU_SLOPE))  # (B, C / 2^(i+1), T·8 | T·40 | T·120)
            if i == len(self.ups) - 1:
                x = F.pad(x, (1, 0), mode="reflect")  # (B, C / 8, 120·T + 1)
            x = x + source_block(down(s_stft))
            blocks = self.resblocks[i * n_kernels : (i + 1) * n_kernels]
            x = sum(block(x) for block in blocks) / n_kernels
        return self.conv_post(F.leaky_relu(x, POST_LRELU_SLOPE))  # (B, n_fft + 2, 120·T + 1)

    def istft(self, spectrum: torch.Tensor) -> torch.Tensor:
        """conv_post output (B, n_fft + 2, F) -> audio (B, (F - 1)·hop), clamped."""
        return self.inverse_stft(spectrum).clamp(-self.cfg.audio_limit, self.cfg.audio_limit)

    def decode(self, mel: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """mel (B, n_mels, T), source (B, 1, 480·T) -> audio (B, 480·T)."""
        return self.istft(self.predict_spectrum(mel, self.source_stft(source)))

    def forward(
        self,
        mel: torch.Tensor,
        cache_source: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """mel (B, n_mels, T) -> audio (B, 480·T), source (B, 1, 480·T).

        ``cache_source`` (B, 1, n), when given, replaces the first n source samples: in
        streaming, the release passes the last 8·480 source samples of the previous chunk,
        whose mel frames it repeats at the start of this one, so that the excitation is
        continuous across chunks.
        """
        source = self.m_source(self.f0_predictor(mel), generator)  # (B, 1, L)
        if cache_source is not None:
            n = cache_source.shape[2]
            if n > source.shape[2]:
                raise ValueError(f"cache_source has {n} samples, the source {source.shape[2]}")
            source = torch.cat([cache_source, source[:, :, n:]], dim=2)
        return self.decode(mel, source), source

    @torch.inference_mode()
    def inference(
        self,
        mel: torch.Tensor,
        cache_source: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` without autograd."""
        return self(mel, cache_source, generator)


def load_hift_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A hift checkpoint's state -> HiFTVocoder's keys.

    Strips the ``generator.`` prefix of the release and renames legacy weight-norm keys
    (``X.weight_g`` / ``X.weight_v``) to ``X.parametrizations.weight.original0`` / ``1``.
    """
    converted = {}
    for key, value in state.items():
        key = key.removeprefix("generator.")
        head, _, leaf = key.rpartition(".")
        if leaf in _LEGACY_WEIGHT_NORM:
            key = f"{head}.{_LEGACY_WEIGHT_NORM[leaf]}"
        converted[key] = value
    return converted


def load_vocoder(
    path: Path | str,
    cfg: HiFTConfig | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    allow_unpinned: bool = False,
) -> HiFTVocoder:
    """The release's ``hift.pt`` (or a folder holding it) -> HiFTVocoder in eval mode.

    The file must match the pinned release unless ``allow_unpinned`` (fine-tuned or test
    checkpoints, any file name). Without ``cfg`` the widths (base_channels,
    f0_cond_channels) are read from the checkpoint and the rest is the release's config.
    """
    path = Path(path)
    if path.is_dir():
        path = path / HIFT_FILE
    if not allow_unpinned:
        if path.name != HIFT_FILE:
            raise CheckpointError(f"{path} is not the release's {HIFT_FILE}; pass {ALLOW_FLAG}")
        verify_files(path.parent, COSYVOICE2, [HIFT_FILE])
    state = load_hift_state(load_state_dict(path))
    if cfg is None:
        conv_pre = "conv_pre.parametrizations.weight.original1"
        classifier = "f0_predictor.classifier.weight"
        if conv_pre not in state or classifier not in state:
            raise CheckpointError(f"{path} has no {conv_pre} or {classifier}: not a HiFT vocoder")
        cfg = HiFTConfig(
            base_channels=state[conv_pre].shape[0], f0_cond_channels=state[classifier].shape[1]
        )
    model = HiFTVocoder(cfg)
    load_into(model, state, path)
    return model.to(device=device, dtype=dtype).eval()


__all__ = [
    "HIFT_FILE",
    "F0Predictor",
    "HarmonicSource",
    "HiFTVocoder",
    "ISTFTHead",
    "ResBlock",
    "Snake",
    "SourceDraws",
    "load_hift_state",
    "load_vocoder",
]
