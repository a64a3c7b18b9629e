"""SenseVoice's speech front end: 16 kHz audio -> kaldi fbank -> LFR -> CMVN.

    audio (N,) float in [-1, 1], 16 kHz
      -> fbank (T, 80)           kaldi-native-fbank, 25 ms hamming frames every 10 ms
      -> lfr   (ceil(T/6), 560)  7 stacked frames every 6 (low frame rate)
      -> feats (ceil(T/6), 560)  (lfr + shift) * scale from am.mvn

The fbank itself is kaldi-native-fbank's; this module only sets it up as FunASR's
WavFrontend does and adds the two cheap steps after it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np

from minmo_core.config import FrontendConfig
from minmo_core.errors import CheckpointError

INT16_SCALE = 32768.0  # WavFrontend feeds kaldi fbank 16-bit sample values


@dataclass(frozen=True)
class CMVN:
    """Global mean/variance normalisation from a Kaldi ``am.mvn`` file."""

    shift: np.ndarray  # (560,) added first
    scale: np.ndarray  # (560,) multiplied second

    @classmethod
    def identity(cls, dim: int) -> CMVN:
        return cls(np.zeros(dim, np.float32), np.ones(dim, np.float32))

    @classmethod
    def from_file(cls, path: Path, dim: int) -> CMVN:
        """Parse the ``<AddShift>`` and ``<Rescale>`` vectors of a Kaldi nnet text file."""
        try:
            text = Path(path).read_text(encoding="utf-8", errors="strict")
        except (OSError, UnicodeDecodeError) as err:
            raise CheckpointError(f"cannot read CMVN file {path}: {err}") from err
        vectors = {}
        for name in ("AddShift", "Rescale"):
            match = re.search(rf"<{name}>[^\[]*\[([^\]]*)\]", text)
            if match is None:
                raise CheckpointError(f"CMVN file {path} has no <{name}> vector")
            try:
                values = np.array(match.group(1).split(), dtype=np.float32)
            except ValueError as err:
                raise CheckpointError(f"CMVN file {path}: <{name}> is not numeric") from err
            if values.shape != (dim,):
                raise CheckpointError(
                    f"CMVN file {path}: <{name}> has {values.size} values, expected {dim}"
                )
            vectors[name] = values
        return cls(shift=vectors["AddShift"], scale=vectors["Rescale"])


class Frontend:
    """Turns 16 kHz float audio into the encoder's 560-dim LFR features."""

    def __init__(self, cfg: FrontendConfig, cmvn: CMVN | None = None) -> None:
        self.cfg = cfg
        self.cmvn = cmvn if cmvn is not None else CMVN.identity(cfg.lfr_dim)
        opts = knf.FbankOptions()
        opts.frame_opts.samp_freq = cfg.sample_rate
        opts.frame_opts.frame_length_ms = cfg.frame_length_ms
        opts.frame_opts.frame_shift_ms = cfg.frame_shift_ms
        opts.frame_opts.dither = cfg.dither
        opts.frame_opts.window_type = cfg.window
        opts.frame_opts.snip_edges = True
        opts.mel_opts.num_bins = cfg.n_mels
        opts.energy_floor = 0.0
        self._fbank_opts = opts

    def fbank(self, audio: np.ndarray) -> np.ndarray:
        """audio : (N,) float in [-1, 1] at cfg.sample_rate -> (T, n_mels) log-mel."""
        fbank = knf.OnlineFbank(self._fbank_opts)
        fbank.accept_waveform(self.cfg.sample_rate, (audio * INT16_SCALE).astype(np.float32))
        fbank.input_finished()
        n = fbank.num_frames_ready
        out = np.empty((n, self.cfg.n_mels), np.float32)
        for i in range(n):
            out[i] = fbank.get_frame(i)
        return out

    def lfr(self, fbank: np.ndarray) -> np.ndarray:
        """(T, n_mels) -> (ceil(T / n), m * n_mels): frames i*n .. i*n+m stacked.

        The sequence is padded with (m - 1) // 2 copies of the first frame on the left and
        copies of the last frame on the right, as FunASR's ``apply_lfr`` does.
        """
        m, n = self.cfg.lfr_m, self.cfg.lfr_n
        t = fbank.shape[0]
        if t == 0:
            return np.zeros((0, m * fbank.shape[1]), np.float32)
        t_lfr = -(-t // n)
        left = (m - 1) // 2
        right = max(0, (t_lfr - 1) * n + m - (t + left))
        padded = np.concatenate(
            [np.repeat(fbank[:1], left, 0), fbank, np.repeat(fbank[-1:], right, 0)]
        )  # (left + T + right, n_mels)
        windows = np.lib.stride_tricks.sliding_window_view(padded, (m, fbank.shape[1]))
        return np.ascontiguousarray(windows[::n, 0][:t_lfr].reshape(t_lfr, -1))

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """audio : (N,) float in [-1, 1] -> feats : (ceil(T / lfr_n), lfr_dim) float32."""
        feats = self.lfr(self.fbank(audio))
        return ((feats + self.cmvn.shift) * self.cmvn.scale).astype(np.float32)

    def num_frames(self, n_samples: int) -> int:
        """Number of LFR frames for ``n_samples`` of audio (snip_edges framing)."""
        frame = int(self.cfg.sample_rate * self.cfg.frame_length_ms / 1000)
        shift = int(self.cfg.sample_rate * self.cfg.frame_shift_ms / 1000)
        t = 0 if n_samples < frame else 1 + (n_samples - frame) // shift
        return -(-t // self.cfg.lfr_n)
