"""SenseVoice speech understanding: a model folder in the official layout -> rich transcripts.

The folder is SenseVoiceSmall's release unchanged: ``model.pt`` (a state dict),
``config.yaml``, ``am.mvn`` and ``chn_jpn_yue_eng_ko_spectok.bpe.model``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch
import yaml

from minmo_core.common.audio import frame_levels_dbfs, split_stream, stream_audio
from minmo_core.common.checkpoints import load_into, load_state_dict
from minmo_core.common.releases import SENSEVOICE_SMALL, verify_release
from minmo_core.config import FrontendConfig, VoiceEncoderConfig
from minmo_core.errors import AudioError, CheckpointError, ConfigError
from minmo_core.understanding.frontend import CMVN, Frontend
from minmo_core.understanding.transcript import RichTranscript, merge_transcripts, parse_rich_text
from minmo_core.understanding.voice_encoder import LANGUAGE_QUERY, VoiceEncoder, ctc_greedy

BPE_MODEL = "chn_jpn_yue_eng_ko_spectok.bpe.model"
MIN_SECONDS = 0.1  # shorter clips give no fbank frames worth encoding
SEGMENT_SECONDS = 30.0  # long inputs are encoded in pieces of at most this length


def read_folder_config(folder: Path) -> tuple[VoiceEncoderConfig, FrontendConfig]:
    """Encoder and front-end settings from the release's ``config.yaml``."""
    path = folder / "config.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise CheckpointError(f"cannot read {path}: {err}") from err
    if not isinstance(raw, dict) or not isinstance(raw.get("encoder_conf"), dict):
        raise CheckpointError(f"{path} has no encoder_conf section")
    enc, fe = raw["encoder_conf"], raw.get("frontend_conf") or {}
    try:
        encoder = VoiceEncoderConfig(
            input_size=int(raw.get("input_size", 560)),
            d_model=int(enc["output_size"]),
            n_heads=int(enc["attention_heads"]),
            d_ffn=int(enc["linear_units"]),
            n_blocks=int(enc["num_blocks"]),
            tp_blocks=int(enc.get("tp_blocks", 0)),
            kernel_size=int(enc.get("kernel_size", 11)),
            sanm_shift=int(enc.get("sanm_shfit", 0)),
            vocab_size=int(raw["vocab_size"]),
        )
        frontend = FrontendConfig(
            sample_rate=int(fe.get("fs", 16000)),
            n_mels=int(fe.get("n_mels", 80)),
            frame_length_ms=float(fe.get("frame_length", 25)),
            frame_shift_ms=float(fe.get("frame_shift", 10)),
            window=str(fe.get("window", "hamming")),
            lfr_m=int(fe.get("lfr_m", 7)),
            lfr_n=int(fe.get("lfr_n", 6)),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path} is missing or has a bad value for {err}") from err
    if frontend.lfr_dim != encoder.input_size:
        raise CheckpointError(
            f"{path}: LFR gives {frontend.lfr_dim} features but the encoder takes "
            f"{encoder.input_size}"
        )
    return encoder, frontend


class SenseVoice:
    """Front end + VoiceEncoder + vocabulary: audio in, RichTranscript out."""

    def __init__(
        self,
        encoder: VoiceEncoder,
        frontend: Frontend,
        vocabulary: spm.SentencePieceProcessor,
        device: str | torch.device = "cpu",
    ) -> None:
        self.encoder = encoder.eval()
        self.frontend = frontend
        self.vocabulary = vocabulary
        self.device = torch.device(device)
        self.dtype = next(encoder.parameters()).dtype

    @property
    def sample_rate(self) -> int:
        return self.frontend.cfg.sample_rate

    @classmethod
    def from_folder(
        cls,
        folder: Path | str,
        device: str = "cpu",
        dtype: torch.dtype | None = None,
        allow_unpinned: bool = False,
    ) -> SenseVoice:
        """Load the official SenseVoiceSmall folder (sizes are read from its config.yaml).

        Files are checked against the release pins unless ``allow_unpinned``.
        """
        folder = Path(folder)
        verify_release(folder, SENSEVOICE_SMALL, allow_unpinned)
        enc_cfg, fe_cfg = read_folder_config(folder)
        vocabulary = spm.SentencePieceProcessor()
        try:
            vocabulary.Load(str(folder / BPE_MODEL))
        except (OSError, RuntimeError) as err:
            raise CheckpointError(f"{folder / BPE_MODEL} is not a SentencePiece model") from err
        if vocabulary.GetPieceSize() != enc_cfg.vocab_size:
            raise CheckpointError(
                f"{folder / BPE_MODEL} has {vocabulary.GetPieceSize()} pieces but the CTC "
                f"head has {enc_cfg.vocab_size} outputs"
            )
        frontend = Frontend(fe_cfg, CMVN.from_file(folder / "am.mvn", fe_cfg.lfr_dim))
        state = load_state_dict(folder / "model.pt")
        with torch.device("meta"):
            encoder = VoiceEncoder(enc_cfg)
        encoder = encoder.to_empty(device="cpu")
        load_into(encoder, state, folder / "model.pt")
        del state
        dtype = dtype or (torch.float16 if torch.device(device).type == "cuda" else torch.float32)
        return cls(encoder.to(device=device, dtype=dtype), frontend, vocabulary, device)

    def transcribe(
        self,
        audio: np.ndarray,
        language: str = "auto",
        use_itn: bool = False,
        start: float = 0.0,
    ) -> RichTranscript:
        """audio : (N,) float32 at 16 kHz, at most a segment's length (see transcribe_stream)."""
        return self.hear(audio, language, use_itn, start)[0]

    @torch.inference_mode()
    def hear(
        self,
        audio: np.ndarray,
        language: str = "auto",
        use_itn: bool = False,
        start: float = 0.0,
    ) -> tuple[RichTranscript, torch.Tensor]:
        """The transcript and the encoder states it was read from, in one pass.

        audio : (N,) float32 at 16 kHz, at most a segment's length
        returns : (RichTranscript, torch.Tensor, shape = (4 + T, d_model)): the states of the
            four query positions and of every LFR frame, what MinMo's input projector reads
        """
        if language not in LANGUAGE_QUERY:
            raise ConfigError(
                f"unknown language {language!r}; choose one of {', '.join(LANGUAGE_QUERY)}"
            )
        seconds = audio.size / self.sample_rate
        if seconds < MIN_SECONDS:
            raise AudioError(f"audio is too short ({seconds * 1000:.0f} ms); need at least 0.1 s")
        feats = torch.from_numpy(self.frontend(audio)).to(self.device, self.dtype)[None]
        lengths = torch.tensor([feats.shape[1]], device=self.device)
        states, log_probs, out_lengths = self.encoder(feats, lengths, language, use_itn)
        length = int(out_lengths[0])
        ids = ctc_greedy(log_probs[0].float(), length, self.encoder.cfg.blank_id)
        transcript = parse_rich_text(self.vocabulary.DecodeIds(ids), start, start + seconds)
        return transcript, states[0, :length]

    def transcribe_stream(
        self,
        blocks: Iterable[np.ndarray],
        language: str = "auto",
        use_itn: bool = False,
        on_segment: Callable[[RichTranscript], None] | None = None,
    ) -> list[RichTranscript]:
        """Transcribe audio of any length, one segment of at most 30 s at a time.

        blocks: consecutive (n,) float32 blocks at 16 kHz. Silent segments are skipped;
        all-silent input raises AudioError.
        """
        results: list[RichTranscript] = []
        loudest = -np.inf
        short_sound = 0.0  # the longest sounding segment skipped for being too short, s
        for segment in split_stream(blocks, self.sample_rate, SEGMENT_SECONDS):
            loudest = max(loudest, float(frame_levels_dbfs(segment.audio, self.sample_rate).max()))
            if segment.silent:
                continue
            if segment.audio.size < MIN_SECONDS * self.sample_rate:
                short_sound = max(short_sound, segment.audio.size / self.sample_rate)
                continue
            result = self.transcribe(segment.audio, language, use_itn, segment.start)
            results.append(result)
            if on_segment is not None:
                on_segment(result)
        if not results and short_sound > 0:
            raise AudioError(
                f"the audio is too short ({short_sound * 1000:.0f} ms of sound; at least "
                f"{MIN_SECONDS * 1000:.0f} ms is needed)"
            )
        if not results:
            level = "no sound at all" if loudest <= -199 else f"loudest {loudest:.0f} dBFS"
            raise AudioError(f"the audio contains only silence ({level})")
        return results

    def transcribe_file(
        self,
        path: Path | str,
        language: str = "auto",
        use_itn: bool = False,
        on_segment: Callable[[RichTranscript], None] | None = None,
    ) -> RichTranscript:
        """Any audio file (any format soundfile reads, any rate, any length) -> transcript."""
        blocks = stream_audio(Path(path), self.sample_rate)
        try:
            parts = self.transcribe_stream(blocks, language, use_itn, on_segment)
        except AudioError as err:
            if str(path) in str(err):  # the reader named the file already
                raise
            raise AudioError(f"{path}: {err}") from err
        return merge_transcripts(parts)
