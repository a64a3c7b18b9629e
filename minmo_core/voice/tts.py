"""Text -> speech with a CosyVoice release: voice-token LM, then streaming token2wav.

CosyVoice2-0.5B or Fun-CosyVoice3-0.5B-2512, as the folder's yaml says; both speak
through the same calls. Audio comes out chunk by chunk (every 15 speech tokens, 0.6 s)
while the rest is computed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from minmo_core.common.release_config import release_flow_config
from minmo_core.voice.flow import load_flow
from minmo_core.voice.flow_dit import load_dit_flow
from minmo_core.voice.hift import load_vocoder
from minmo_core.voice.hift_causal import load_causal_vocoder
from minmo_core.voice.speech_tokens import SpeechTokenGenerator
from minmo_core.voice.styles import VoiceStyle, instruction_is_empty
from minmo_core.voice.token2wav import ChunkSchedule, FlowPrompt, Token2Wav
from minmo_core.voice.token2wav_causal import CausalToken2Wav
from minmo_core.voice.voice_lm import LLM_FILE, RasSampler, greedy_sampler, load_voice_lm
from minmo_core.voice.voice_prompt import InstructPrompt, VoiceProfile, ZeroShotPrompt, lm_prompt

SAMPLE_RATE = 24000


class SpeechSynthesizer:
    """The voice-token LM and token2wav of one CosyVoice release folder."""

    def __init__(self, tokens: SpeechTokenGenerator, t2w: Token2Wav, seed: int | None) -> None:
        self.tokens = tokens
        self.t2w = t2w
        self.seed = seed

    @property
    def cosyvoice(self) -> int:
        """The release generation: 2 or 3."""
        return self.tokens.lm.cfg.cosyvoice

    @classmethod
    def from_folder(
        cls,
        folder: Path | str,
        device: str | torch.device = "cpu",
        allow_unpinned: bool = False,
        greedy: bool = False,
        seed: int | None = None,
        llm_file: str = LLM_FILE,
    ) -> SpeechSynthesizer:
        """``llm_file``: CosyVoice 3's ``llm.rl.pt`` (the RL-tuned LM) instead of ``llm.pt``."""
        folder = Path(folder)
        lm, tokenizer = load_voice_lm(
            folder, device, allow_unpinned=allow_unpinned, llm_file=llm_file
        )
        if lm.cfg.cosyvoice == 3:
            t2w = CausalToken2Wav(
                load_dit_flow(folder, device, allow_unpinned=allow_unpinned),
                load_causal_vocoder(folder, device, allow_unpinned=allow_unpinned),
            )
        else:
            flow = load_flow(
                folder / "flow.pt",
                release_flow_config(folder, allow_unpinned),
                device,
                allow_unpinned=allow_unpinned,
            )
            vocoder = load_vocoder(folder / "hift.pt", device=device, allow_unpinned=allow_unpinned)
            t2w = Token2Wav(flow, vocoder)
        sampler = greedy_sampler if greedy else RasSampler.from_config(lm.cfg, seed)
        return cls(SpeechTokenGenerator(lm, tokenizer, sampler), t2w, seed)

    def speak(
        self,
        text: str,
        style: VoiceStyle | None = None,
        voice: VoiceProfile | None = None,
        wording: str = "zh",
        schedule: ChunkSchedule | None = None,
    ) -> Iterator[torch.Tensor]:
        """Audio chunks (n,) float32 at 24 kHz, each as soon as it exists; a long text
        sentence group by sentence group (at most 80 text tokens each), in chunks of
        ``schedule`` (default: MinMo's fixed 15).

        A style goes to the LM as an instruction (the voice, if any, to the flow only);
        without one, a voice is cloned zero-shot (its transcript and tokens go to the LM).
        """
        if style is not None and not instruction_is_empty(style):
            prompt = InstructPrompt(style, voice, wording)
        else:
            prompt = ZeroShotPrompt(voice) if voice is not None else None
        lm_prompt_ = self.tokens.prompt(*lm_prompt(prompt, self.cosyvoice))
        generator = torch.Generator()
        if self.seed is not None:
            generator.manual_seed(self.seed)
        flow_prompt = FlowPrompt.from_voice(voice)
        # one stream: at each sentence group's end the flow starts afresh (the voice LM starts
        # afresh there anyway, and the flow's cost per chunk stays bounded by a group) while
        # the vocoder runs on, so the groups join without a click
        stream = self.t2w.stream(flow_prompt, generator, schedule)
        for group in self.tokens.from_text_groups(text, lm_prompt_):
            for chunk in group:
                audio = stream.push(chunk)
                if audio.numel():
                    yield audio
            audio = stream.end_group()
            if audio.numel():
                yield audio
        tail = stream.flush()
        if tail.numel():
            yield tail
