"""What the voice-token LM and token2wav are conditioned on: a cloned voice and a style.

CosyVoice 2 has two ways to shape a reply's voice, and they feed its two halves differently
(the release's ``frontend_zero_shot`` and ``frontend_instruct2``):

- zero-shot cloning (:class:`ZeroShotPrompt`): the LM continues the voice's transcript and
  speech tokens; the flow gets the voice's mel and speaker embedding;
- instruction (:class:`InstructPrompt`): the LM sees only the rendered instruction, never the
  voice's speech tokens; a voice, if given, reaches the flow only.

:func:`lm_prompt` gives the LM's share of either, so the LM code only tokenises text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from minmo_core.config import FlowConfig, HiFTConfig, VoiceTokenLMConfig
from minmo_core.errors import ConfigError
from minmo_core.voice.styles import (
    END_OF_PROMPT,
    Language,
    VoiceStyle,
    check_language,
    instruction_is_empty,
    render_instruction,
)

SPEECH_TOKEN_SIZE = VoiceTokenLMConfig().speech_token_size  # 6561 codes
TOKEN_MEL_RATIO = FlowConfig().token_mel_ratio  # 2: 25 Hz tokens, 50 Hz mel frames
N_MELS = FlowConfig().output_size  # 80
SPEAKER_EMBEDDING_DIM = FlowConfig().spk_embed_dim  # 192, CAM++
SAMPLE_RATE = HiFTConfig().sample_rate  # 24000: the rate the prompt mel is computed at

PROFILE_FORMAT = "minmo-voice-profile"  # metadata "format" of a saved VoiceProfile
PROFILE_FORMAT_VERSION = "2"  # 2 added "cosyvoice"; version 1 files are CosyVoice 2's
_READABLE_VERSIONS = ("1", PROFILE_FORMAT_VERSION)
_METADATA_KEYS = ("format", "format_version", "name", "transcript", "sample_rate")
GENERATIONS = (2, 3)  # the CosyVoice releases a voice can be cloned for
_TENSOR_KEYS = ("speech_tokens", "prompt_mel", "speaker_embedding")


def _check_tensor(name: str, value: object, dtype: torch.dtype, shape: Sequence[int]) -> None:
    if not isinstance(value, torch.Tensor):
        raise ConfigError(f"{name} must be a torch.Tensor, not {type(value).__name__}")
    if value.dtype != dtype:
        raise ConfigError(f"{name} must be {dtype}, not {value.dtype}")
    if tuple(value.shape) != shape:
        raise ConfigError(f"{name} must have shape {tuple(shape)}, not {tuple(value.shape)}")


@dataclass(frozen=True, eq=False)
class VoiceProfile:
    """A cloned voice: a short recording's transcript, speech tokens, mel and speaker embedding.

    speech_tokens : torch.Tensor, int64, shape = (T,), values in [0, 6561)
    prompt_mel : torch.Tensor | None, float32, shape = (2T, 80), at ``sample_rate``
    speaker_embedding : torch.Tensor | None, float32, shape = (192,)

    The LM needs only the transcript and the tokens; the flow (token2wav) needs the mel and
    the embedding to copy the timbre. ``cosyvoice`` says whose speech tokenizer and mel made
    it: CosyVoice 2's (v2 tokenizer, mel to 8 kHz) or 3's (v3 tokenizer, mel to 12 kHz); a
    voice speaks only through the release it was cloned for.
    """

    name: str  # what menus show, e.g. "Grandma"
    transcript: str  # the words spoken in the recording
    speech_tokens: torch.Tensor
    prompt_mel: torch.Tensor | None = None
    speaker_embedding: torch.Tensor | None = None
    sample_rate: int = SAMPLE_RATE
    cosyvoice: int = 2  # the CosyVoice generation it was cloned for

    def __post_init__(self) -> None:
        if self.cosyvoice not in GENERATIONS:
            raise ConfigError(f"a voice is cloned for CosyVoice 2 or 3, not {self.cosyvoice!r}")
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError("a voice profile needs a non-empty name")
        if not isinstance(self.transcript, str) or not self.transcript.strip():
            raise ConfigError(f"voice {self.name!r} needs the transcript of its recording")
        tokens = self.speech_tokens
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 1 or tokens.numel() == 0:
            raise ConfigError(f"voice {self.name!r}: speech_tokens must be a non-empty (T,) tensor")
        _check_tensor(f"voice {self.name!r}: speech_tokens", tokens, torch.int64, tokens.shape)
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= SPEECH_TOKEN_SIZE:
            raise ConfigError(
                f"voice {self.name!r}: speech tokens must lie in [0, {SPEECH_TOKEN_SIZE}), "
                f"found [{low}, {high}]"
            )
        n_frames = TOKEN_MEL_RATIO * tokens.numel()
        for name, value, shape in (
            ("prompt_mel", self.prompt_mel, (n_frames, N_MELS)),
            ("speaker_embedding", self.speaker_embedding, (SPEAKER_EMBEDDING_DIM,)),
        ):
            if value is None:
                continue
            _check_tensor(f"voice {self.name!r}: {name}", value, torch.float32, shape)
            if not bool(torch.isfinite(value).all()):
                raise ConfigError(f"voice {self.name!r}: {name} holds NaN or infinite values")
        if self.sample_rate != SAMPLE_RATE:
            raise ConfigError(
                f"voice {self.name!r}: sample_rate must be {SAMPLE_RATE} (CosyVoice 2's mel), "
                f"not {self.sample_rate}"
            )

    def save(self, path: str | Path) -> None:
        """Write the profile as one safetensors file: tensors plus text metadata, no pickle."""
        tensors = {
            key: value.detach().cpu().contiguous()
            for key in _TENSOR_KEYS
            if (value := getattr(self, key)) is not None
        }
        metadata = {
            "format": PROFILE_FORMAT,
            "format_version": PROFILE_FORMAT_VERSION,
            "name": self.name,
            "transcript": self.transcript,
            "sample_rate": str(self.sample_rate),
            "cosyvoice": str(self.cosyvoice),
        }
        save_file(tensors, str(path), metadata=metadata)

    @classmethod
    def load(cls, path: str | Path) -> VoiceProfile:
        """Read a file written by :meth:`save`; raise ConfigError naming the file otherwise."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"voice profile {path} does not exist")
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
        except (SafetensorError, OSError, ValueError) as err:
            raise ConfigError(f"{path} is not a voice profile (unreadable safetensors)") from err
        if metadata.get("format") != PROFILE_FORMAT:
            raise ConfigError(f"{path} is not a MinMo voice profile")
        version = metadata.get("format_version")
        if version not in _READABLE_VERSIONS:
            raise ConfigError(
                f"{path} is voice profile format version {version}; this program reads "
                f"versions {', '.join(_READABLE_VERSIONS)} (a newer MinMo Assistant wrote it?)"
            )
        generation = metadata.get("cosyvoice", "2" if version == "1" else None)
        if generation not in [str(g) for g in GENERATIONS]:
            raise ConfigError(f"voice profile {path} does not say which CosyVoice it is for")
        missing = [key for key in _METADATA_KEYS if key not in metadata]
        if "speech_tokens" not in tensors:
            missing.append("speech_tokens")
        if missing:
            raise ConfigError(f"voice profile {path} lacks {', '.join(missing)}")
        unknown = sorted(set(tensors) - set(_TENSOR_KEYS))
        if unknown:
            raise ConfigError(f"voice profile {path} holds unknown tensors: {', '.join(unknown)}")
        if not metadata["sample_rate"].isdigit():
            raise ConfigError(f"voice profile {path} has a malformed sample_rate")
        try:
            return cls(
                name=metadata["name"],
                transcript=metadata["transcript"],
                speech_tokens=tensors["speech_tokens"],
                prompt_mel=tensors.get("prompt_mel"),
                speaker_embedding=tensors.get("speaker_embedding"),
                sample_rate=int(metadata["sample_rate"]),
                cosyvoice=int(generation),
            )
        except ConfigError as err:
            raise ConfigError(f"voice profile {path}: {err}") from err


@dataclass(frozen=True, eq=False)
class ZeroShotPrompt:
    """Clone ``voice``: the LM continues its transcript and speech tokens, the flow copies
    its mel and speaker embedding."""

    voice: VoiceProfile

    def __post_init__(self) -> None:
        if not isinstance(self.voice, VoiceProfile):
            raise ConfigError("a zero-shot prompt needs a VoiceProfile")


@dataclass(frozen=True, eq=False)
class InstructPrompt:
    """Speak as ``style`` says: the LM sees only the rendered instruction (never the voice's
    speech tokens); ``voice``, if given, sets the timbre through the flow only.

    An empty style is rejected: without an instruction, clone the voice with
    :class:`ZeroShotPrompt` instead (see :func:`minmo_core.voice.styles.instruction_is_empty`).
    """

    style: VoiceStyle
    voice: VoiceProfile | None = None
    language: Language = "zh"  # the instruction's wording, not the reply's language

    def __post_init__(self) -> None:
        if not isinstance(self.style, VoiceStyle):
            raise ConfigError("an instruct prompt needs a VoiceStyle")
        if self.voice is not None and not isinstance(self.voice, VoiceProfile):
            raise ConfigError("an instruct prompt's voice must be a VoiceProfile or None")
        check_language(self.language)  # the backend's own rules apply in lm_prompt
        if instruction_is_empty(self.style):
            raise ConfigError(
                "the style asks for nothing: choose an emotion, dialect, rate or persona, "
                "or clone the voice with a zero-shot prompt"
            )

    def instruction(self, cosyvoice: int = 2) -> str:
        """The instruction in CosyVoice ``cosyvoice``'s wording, ending with
        ``<|endofprompt|>``; ConfigError when that backend cannot word it."""
        return render_instruction(self.style, self.language, cosyvoice)


# CosyVoice 3 reads every prompt after a system sentence ending in <|endofprompt|> (the
# release's examples: "You are a helpful assistant.<|endofprompt|>" + a voice's transcript,
# "You are a helpful assistant. 请用广东话表达。<|endofprompt|>" for an instruction)
COSYVOICE3_SYSTEM = "You are a helpful assistant."


def lm_prompt(
    prompt: ZeroShotPrompt | InstructPrompt | None, cosyvoice: int = 2
) -> tuple[str, list[int]]:
    """(prompt text, prompt speech tokens) for the voice-token LM of CosyVoice 2 (("", [])
    for no prompt) or 3 (always a system sentence and <|endofprompt|> first).

    A voice speaks only through the release it was cloned for (its tokens and mel are that
    release's): ConfigError otherwise."""
    voice = getattr(prompt, "voice", None)
    if voice is not None and voice.cosyvoice != cosyvoice:
        raise ConfigError(
            f"voice {voice.name!r} was cloned for CosyVoice {voice.cosyvoice} (its speech "
            f"tokens and mel are that release's), not for the CosyVoice {cosyvoice} now "
            "speaking: clone it again from its recording for this release"
        )
    match prompt:
        case None:
            text, tokens = "", []
        case ZeroShotPrompt(voice=voice):
            text, tokens = voice.transcript, voice.speech_tokens.tolist()
        case InstructPrompt():
            text, tokens = prompt.instruction(cosyvoice), []
        case _:
            raise TypeError(f"not a voice prompt: {type(prompt).__name__}")
    if cosyvoice == 3:
        if isinstance(prompt, InstructPrompt):
            return f"{COSYVOICE3_SYSTEM} {text}", tokens  # the instruction ends the prompt
        return f"{COSYVOICE3_SYSTEM}{END_OF_PROMPT}{text}", tokens
    return text, tokens
