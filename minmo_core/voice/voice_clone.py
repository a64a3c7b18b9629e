"""Cloning a voice from a reference clip: its speech tokens, speaker embedding and prompt mel.

    clip (any format, rate, channels; 3..30 s of speech)
      ├─ 16 kHz ─► Whisper log-mel (128) ─► speech_tokenizer_v2.onnx ─► tokens (25 Hz)
      ├─ 16 kHz ─► kaldi fbank (80), mean-normalised ─► campplus.onnx ─► embedding (192,)
      └─ 24 kHz ─► prompt mel (80, 50 Hz), trimmed so mel frames = 2 x tokens

CosyVoice 3 clones the same way with its own speech tokenizer (speech_tokenizer_v3.onnx, same
Whisper features) and a prompt mel whose filters reach 12 kHz instead of 8 kHz (its yaml's
``fmax: null``); the release is recognised from the folder's yaml, and the profile says
which release it was cloned for.

The two ONNX models are the release's own files, run by onnxruntime. Clips that are too
short, too long, silent, clipped, mostly pauses or not speech are refused with a message
saying which.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np
import torch

from minmo_core.common.audio import frame_levels_dbfs, read_audio, resample, to_mono_float32
from minmo_core.common.release_config import release_generation
from minmo_core.common.releases import COSYVOICE2, COSYVOICE3, verify_files
from minmo_core.errors import AudioError, CheckpointError
from minmo_core.voice.mel import PROMPT_FMAX, prompt_mel, whisper_log_mel
from minmo_core.voice.voice_prompt import VoiceProfile

SPEECH_TOKENIZER = "speech_tokenizer_v2.onnx"
SPEECH_TOKENIZERS = {2: SPEECH_TOKENIZER, 3: "speech_tokenizer_v3.onnx"}  # per generation
CAMPPLUS = "campplus.onnx"


@dataclass(frozen=True)
class ClipRules:
    """What a usable reference clip is."""

    min_seconds: float = 3.0
    max_seconds: float = 30.0  # the speech tokenizer's limit
    silence_dbfs: float = -50.0  # loudest 10 ms frame below this: silent
    clip_level: float = 0.999  # samples at or above this magnitude count as clipped
    max_clipped_fraction: float = 0.001
    sounding_range_db: float = 35.0  # frames within this of the loudest are "sounding"
    min_sounding_fraction: float = 0.3
    # share of the level contour's modulation at syllable rate (2-8 Hz): speech 0.55-0.75,
    # noise, tones and chords <= 0.1 (measured on the fixture clips and synthetic signals)
    min_syllabic_modulation: float = 0.3


def check_clip(audio16k: np.ndarray, rules: ClipRules = ClipRules()) -> None:
    """Raise AudioError naming the problem if a 16 kHz clip cannot serve as a voice prompt."""
    seconds = audio16k.size / 16000
    if seconds < rules.min_seconds:
        raise AudioError(
            f"the reference clip is {seconds:.1f} s; at least {rules.min_seconds:.0f} s of "
            "speech is needed to clone a voice"
        )
    if seconds > rules.max_seconds:
        raise AudioError(
            f"the reference clip is {seconds:.0f} s; at most {rules.max_seconds:.0f} s can be "
            "used: trim it to one or two clear sentences"
        )
    levels = frame_levels_dbfs(audio16k, 16000)  # 10 ms frames
    loudest = float(levels.max())
    if loudest < rules.silence_dbfs:
        raise AudioError(f"the reference clip is silent (loudest {loudest:.0f} dBFS)")
    clipped = float(np.mean(np.abs(audio16k) >= rules.clip_level))
    if clipped > rules.max_clipped_fraction:
        raise AudioError(
            f"the reference clip is clipped ({clipped:.1%} of samples at full scale); "
            "record it again with lower input gain"
        )
    sounding = float(np.mean(levels > loudest - rules.sounding_range_db))
    if sounding < rules.min_sounding_fraction:
        raise AudioError(
            f"the reference clip is mostly pauses (sound in {sounding:.0%} of it, at least "
            f"{rules.min_sounding_fraction:.0%} needed): trim the silence"
        )
    modulation = syllabic_modulation(audio16k, rules.sounding_range_db)
    if modulation < rules.min_syllabic_modulation:
        raise AudioError(
            "the reference clip does not sound like speech (its loudness does not rise and "
            f"fall with syllables: modulation {modulation:.2f}, speech is above "
            f"{rules.min_syllabic_modulation})"
        )


def syllabic_modulation(audio16k: np.ndarray, range_db: float = 35.0) -> float:
    """Share of the loudness envelope's modulation energy between 2 and 8 Hz, over the
    frames within ``range_db`` of the loudest.

    Speech rises and falls with its syllables (about 4 per second); noise, tones and held
    chords keep a steady level.
    """
    levels = frame_levels_dbfs(audio16k, 16000)  # 100 frames per second
    levels = levels[levels > levels.max() - range_db]  # the sounding part; pauses say nothing
    if levels.size < 50:
        return 0.0
    envelope = 10 ** (levels / 20)
    envelope = (envelope - envelope.mean()) * np.hanning(envelope.size)
    power = np.abs(np.fft.rfft(envelope)) ** 2
    hz = np.fft.rfftfreq(envelope.size, d=0.01)
    total = power[hz > 0.5].sum()
    return float(power[(hz >= 2) & (hz <= 8)].sum() / total) if total > 0 else 0.0


def campplus_features(audio16k: np.ndarray) -> np.ndarray:
    """Kaldi fbank (80 bins, povey window, dither 0) minus its mean over time: (T, 80)."""
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.samp_freq = 16000
    opts.mel_opts.num_bins = 80
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(16000, audio16k.astype(np.float32))
    fbank.input_finished()
    feats = np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)])
    return (feats - feats.mean(axis=0, keepdims=True)).astype(np.float32)


def _session(path: Path, providers: list[str] | None):
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own types for unreadable models
        raise CheckpointError(f"{path} is not a usable ONNX model ({err})") from err


class VoiceCloner:
    """The release's speech tokenizer and speaker encoder, and the clip rules; ``cosyvoice``
    is the generation whose tokenizer this is (it sets the prompt mel and the profiles')."""

    def __init__(
        self, tokenizer_model: Path, speaker_model: Path, providers=None, cosyvoice: int = 2
    ) -> None:
        if cosyvoice not in SPEECH_TOKENIZERS:
            raise ValueError(f"no CosyVoice {cosyvoice}")  # a programming slip
        self.tokenizer = _session(tokenizer_model, providers)
        self.speaker = _session(speaker_model, providers)
        self.rules = ClipRules()
        self.cosyvoice = cosyvoice

    @classmethod
    def from_folder(
        cls, folder: Path | str, allow_unpinned: bool = False, providers=None
    ) -> VoiceCloner:
        """The cloner of the CosyVoice release in ``folder`` (2 or 3, from its yaml)."""
        folder = Path(folder)
        generation = release_generation(folder)
        release = COSYVOICE3 if generation == 3 else COSYVOICE2
        tokenizer = SPEECH_TOKENIZERS[generation]
        verify_files(folder, release, [tokenizer, CAMPPLUS], allow_unpinned)
        return cls(folder / tokenizer, folder / CAMPPLUS, providers, generation)

    def speech_tokens(self, audio16k: np.ndarray) -> torch.Tensor:
        """(N,) float at 16 kHz, at most 30 s -> speech tokens (T,) int64, 25 per second."""
        feats = whisper_log_mel(torch.from_numpy(audio16k))[None].numpy()  # (1, 128, frames)
        names = [i.name for i in self.tokenizer.get_inputs()]
        (tokens, *_) = self.tokenizer.run(
            None, {names[0]: feats, names[1]: np.array([feats.shape[2]], dtype=np.int32)}
        )
        return torch.from_numpy(np.asarray(tokens).reshape(-1).astype(np.int64))

    def speaker_embedding(self, audio16k: np.ndarray) -> torch.Tensor:
        """(N,) float at 16 kHz -> CAM++ speaker embedding (192,) float32."""
        feats = campplus_features(audio16k)[None]  # (1, T, 80)
        (embedding, *_) = self.speaker.run(None, {self.speaker.get_inputs()[0].name: feats})
        return torch.from_numpy(np.asarray(embedding, dtype=np.float32).reshape(-1))

    def clone(
        self,
        clip: Path | str | np.ndarray,
        transcript: str,
        name: str,
        sample_rate: int | None = None,
    ) -> VoiceProfile:
        """A reference clip (a file, or an array with its ``sample_rate``) -> VoiceProfile."""
        if isinstance(clip, np.ndarray):
            if sample_rate is None:
                raise AudioError("an audio array needs its sample rate")
            mono = to_mono_float32(clip)
            audio16k, audio24k = (
                resample(mono, sample_rate, 16000),
                resample(mono, sample_rate, 24000),
            )
        else:
            audio16k = read_audio(Path(clip), 16000, max_seconds=600)
            audio24k = read_audio(Path(clip), 24000, max_seconds=600)
        check_clip(audio16k, self.rules)
        tokens = self.speech_tokens(audio16k)
        mel = prompt_mel(torch.from_numpy(audio24k), fmax=PROMPT_FMAX[self.cosyvoice])
        n = min(mel.shape[0] // 2, tokens.shape[0])  # the flow wants 2 mel frames per token
        return VoiceProfile(
            name=name,
            transcript=transcript,
            speech_tokens=tokens[:n].contiguous(),
            prompt_mel=mel[: 2 * n].contiguous(),
            speaker_embedding=self.speaker_embedding(audio16k),
            cosyvoice=self.cosyvoice,
        )
