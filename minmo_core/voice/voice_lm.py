"""VoiceTokenLM: the speech-token language model of CosyVoice 2 and CosyVoice 3.

A Qwen2 body (CosyVoice-BlankEN, 0.5B) reads a sequence of 896-wide input vectors and a
linear head predicts the next speech token (25 per second, 6561 codes) or a control output.
CosyVoice 2 has three: end of speech (6561), an unused id (6562) and "fill" (6563: the 15
speech tokens of a block are done, feed 5 more text). Parameter names follow the released
``llm.pt`` exactly:

    llm_embedding.weight        (2, 896)       rows: sos, task_id ("text is over")
    llm.model.model.*           Qwen2 body; its embed_tokens embeds text ids
    llm.model.lm_head.weight    tied to embed_tokens, unused here
    llm_decoder.{weight,bias}   (6564, 896)    speech-token head
    speech_embedding.weight     (6564, 896)    speech-token input embedding

CosyVoice 3 (``CosyVoice3LM``) has no ``llm_embedding``: sos (6561), eos (6562), task_id
(6563) and fill (6564) are among 200 control rows of ``speech_embedding`` (6761, 896), and
``llm_decoder`` (6761 outputs) has no bias. ``VoiceTokenLMConfig.cosyvoice`` says which.

How sequences are laid out (whole text, 5:15 interleave, MinMo semantic vectors) lives in
``minmo_core.voice.speech_tokens``; this module holds the network, sampling and loading.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoTokenizer,
    DynamicCache,
    PreTrainedTokenizerBase,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers.modeling_utils import no_init_weights

from minmo_core.common.checkpoints import load_into, load_state_dict
from minmo_core.common.releases import BLANK_EN, COSYVOICE2, verify_files
from minmo_core.config import VoiceTokenLMConfig
from minmo_core.errors import CheckpointError, first_line

# Tokens CosyVoice 2 adds to the Qwen2 tokenizer, in the release's order: ids follow from the
# order (<|endofprompt|> becomes 151646 after Qwen's own <|im_start|>/<|im_end|>).
ADDED_SPECIAL_TOKENS = (
    "<|im_start|>", "<|im_end|>", "<|endofprompt|>", "[breath]", "<strong>", "</strong>",
    "[noise]", "[laughter]", "[cough]", "[clucking]", "[accent]", "[quick_breath]",
    "<laughter>", "</laughter>", "[hissing]", "[sigh]", "[vocalized-noise]", "[lipsmack]", "[mn]",
)  # fmt: skip

# CosyVoice 3's tokenizer adds, after CosyVoice 2's tokens, <|endofsystem|>, the CMU
# (ARPAbet) phonemes and the Mandarin pinyin units, for pronunciation fixes such as
# "[j][ǐ]" in the text; the ids follow from the order, as in the release's tokenizer.
ARPABET_VOWELS = ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY",
                  "UH", "UW")  # fmt: skip
ARPABET_CONSONANTS = ("B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N", "NG", "P",
                      "R", "S", "SH", "T", "TH", "V", "W", "Y", "Z", "ZH")  # fmt: skip
PINYIN_UNITS = """
a ai an ang ao b c ch d e ei en eng f g h i ian in ing iu ià iàn iàng iào iá ián iáng iáo iè ié
iòng ióng iù iú iā iān iāng iāo iē iě iōng iū iǎ iǎn iǎng iǎo iǒng iǔ j k l m n o ong ou p q r s
sh t u uang ue un uo uà uài uàn uàng uá uái uán uáng uè ué uì uí uò uó uā uāi uān uāng uē uě uī
uō uǎ uǎi uǎn uǎng uǐ uǒ vè w x y z zh à ài àn àng ào á ái án áng áo è èi èn èng èr é éi én éng ér
ì ìn ìng í ín íng ò òng òu ó óng óu ù ùn ú ún ā āi ān āng āo ē ēi ēn ēng ě ěi ěn ěng ěr ī īn īng ō
ōng ōu ū ūn ǎ ǎi ǎn ǎng ǎo ǐ ǐn ǐng ǒ ǒng ǒu ǔ ǔn ǘ ǚ ǜ
"""


def special_tokens(cosyvoice: int) -> tuple[str, ...]:
    """The tokens a release adds to the Qwen2 tokenizer, in its order."""
    if cosyvoice == 2:
        return ADDED_SPECIAL_TOKENS
    arpabet = []
    for phone in sorted(ARPABET_VOWELS + ARPABET_CONSONANTS):
        arpabet.append(f"[{phone}]")
        if phone in ARPABET_VOWELS:  # with each stress mark
            arpabet += [f"[{phone}{stress}]" for stress in "012"]
    pinyin = sorted(f"[{unit}]" for unit in PINYIN_UNITS.split())
    return (*ADDED_SPECIAL_TOKENS, "<|endofsystem|>", *arpabet, *pinyin)


LLM_FILE = "llm.pt"
RL_LLM_FILE = "llm.rl.pt"  # CosyVoice 3 also ships an RL-tuned LM (lower error rates)
LLM_FILES = (LLM_FILE, RL_LLM_FILE)
# The release's tokenizer is Qwen2's byte-level BPE as vocab.json + merges.txt; a single
# tokenizer.json (a converted or test tokenizer) is accepted with other weights.
RELEASE_TOKENIZER = (f"{BLANK_EN}/tokenizer_config.json", f"{BLANK_EN}/vocab.json",
                     f"{BLANK_EN}/merges.txt")  # fmt: skip

# CosyVoice-BlankEN's Qwen2 geometry (= Qwen2.5-0.5B), and the fixture's reduced one: the real
# 896 width and attention heads with 1 layer, a tiny FFN and 96 text ids.
QWEN2_05B = dict(
    vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
    num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
    rms_norm_eps=1e-6, rope_theta=1_000_000.0, tie_word_embeddings=True,
)  # fmt: skip
QWEN2_TINY = {**QWEN2_05B, "vocab_size": 96, "intermediate_size": 32, "num_hidden_layers": 1}

# A sampler picks the next token from the head's logits (V,) given the tokens so far.
Sampler = Callable[[torch.Tensor, list[int]], int]


def greedy_sampler(logits: torch.Tensor, decoded: list[int]) -> int:
    """Arg-max; ties go to the lowest id (as the release's stable sort does)."""
    return int(torch.argmax(logits))


@dataclass
class RasSampler:
    """Repetition-aware sampling (VALL-E 2), as CosyVoice 2 configures it.

    Nucleus sampling over at most top_k tokens whose probability mass before them is under
    top_p; when the pick already occurs win_size * tau_r times or more among the last
    win_size tokens, it is redrawn from the full distribution.
    """

    top_p: float = 0.8
    top_k: int = 25
    win_size: int = 10
    tau_r: float = 0.1
    generator: torch.Generator = field(default_factory=torch.Generator)

    @classmethod
    def from_config(cls, cfg: VoiceTokenLMConfig, seed: int | None = None) -> RasSampler:
        generator = torch.Generator()
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        return cls(cfg.top_p, cfg.top_k, cfg.win_size, cfg.tau_r, generator)

    def __call__(self, logits: torch.Tensor, decoded: list[int]) -> int:
        probs = logits.float().cpu().softmax(-1)  # (V,)
        sorted_probs, order = probs.sort(descending=True, stable=True)
        mass_before = sorted_probs.cumsum(-1) - sorted_probs
        keep = (mass_before < self.top_p) & (torch.arange(probs.numel()) < self.top_k)
        choice = torch.multinomial(sorted_probs[keep], 1, generator=self.generator)
        token = int(order[keep][choice])
        if decoded[-self.win_size :].count(token) >= self.win_size * self.tau_r:
            token = int(torch.multinomial(probs, 1, generator=self.generator))
        return token


class VoiceTokenLM(nn.Module):
    """The network: embeddings in, speech-token logits out, with a KV cache for decoding."""

    def __init__(self, cfg: VoiceTokenLMConfig, qwen: Qwen2Config) -> None:
        super().__init__()
        self.cfg = cfg
        n_out = cfg.n_outputs  # speech codes + control outputs
        if cfg.cosyvoice == 2:
            self.llm_embedding = nn.Embedding(2, cfg.llm_input_size)
        qwen._attn_implementation = "sdpa"
        self.llm = nn.ModuleDict({"model": Qwen2ForCausalLM(qwen)})
        self.llm_decoder = nn.Linear(cfg.llm_output_size, n_out, bias=cfg.cosyvoice == 2)
        self.speech_embedding = nn.Embedding(n_out, cfg.llm_input_size)

    @property
    def body(self) -> nn.Module:
        """The Qwen2 transformer (without its text head)."""
        return self.llm["model"].model

    @property
    def sos(self) -> torch.Tensor:
        if self.cfg.cosyvoice == 3:
            return self.speech_embedding.weight[self.cfg.speech_token_size][None]  # (1, D)
        return self.llm_embedding.weight[self.cfg.sos_id][None]  # (1, D)

    @property
    def task_id(self) -> torch.Tensor:
        if self.cfg.cosyvoice == 3:
            return self.speech_embedding.weight[self.cfg.speech_token_size + 2][None]
        return self.llm_embedding.weight[self.cfg.task_id][None]  # (1, D)

    def embed_text(self, ids: torch.Tensor | list[int]) -> torch.Tensor:
        """Text token ids (n,) -> (n, D) through the body's own embedding table."""
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.sos.device)
        return self.body.embed_tokens(ids)

    def embed_speech(self, ids: torch.Tensor | list[int]) -> torch.Tensor:
        """Speech token ids (n,) -> (n, D)."""
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.sos.device)
        return self.speech_embedding(ids)

    def forward(self, embeds: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing. embeds : (B, T, D); lengths : (B,) -> logits (B, T, V)."""
        mask = None
        if lengths is not None:
            mask = (torch.arange(embeds.shape[1], device=embeds.device) < lengths[:, None]).long()
        hidden = self.body(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        return self.llm_decoder(hidden)

    def decoder(self) -> DecodeState:
        return DecodeState(self)


class DecodeState:
    """One utterance's KV cache: feed input vectors, get the logits after the last one."""

    def __init__(self, lm: VoiceTokenLM) -> None:
        self.lm = lm
        self.cache = DynamicCache()
        self.length = 0  # positions in the cache

    def feed(self, embeds: torch.Tensor) -> torch.Tensor:
        """embeds : (n, D), n >= 1 -> logits (V,) predicted after the last of them."""
        out = self.lm.body(
            inputs_embeds=embeds[None], past_key_values=self.cache, use_cache=True
        ).last_hidden_state  # (1, n, D)
        self.length += embeds.shape[0]
        return self.lm.llm_decoder(out[0, -1]).float()


def _qwen_config(folder: Path) -> Qwen2Config:
    path = folder / BLANK_EN / "config.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {path}: {err}") from err
    if raw.get("model_type", "qwen2") != "qwen2":
        raise CheckpointError(f"{path} describes a {raw.get('model_type')!r} model, not qwen2")
    return Qwen2Config(**{k: v for k, v in raw.items() if k not in ("architectures",)})


def load_tokenizer(folder: Path, cfg: VoiceTokenLMConfig) -> PreTrainedTokenizerBase:
    """CosyVoice-BlankEN's Qwen2 tokenizer with the release's added special tokens (CosyVoice
    2's or 3's, as ``cfg.cosyvoice`` says)."""
    path = Path(folder) / BLANK_EN
    has_bpe = (path / "vocab.json").is_file() and (path / "merges.txt").is_file()
    if not has_bpe and not (path / "tokenizer.json").is_file():
        raise CheckpointError(
            f"{path} has no tokenizer: the release's vocab.json and merges.txt are missing "
            "(and there is no tokenizer.json)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as err:  # transformers raises many kinds for a broken tokenizer folder
        raise CheckpointError(f"no usable tokenizer in {path}: {first_line(err, 160)}") from err
    tokenizer.add_special_tokens({"additional_special_tokens": list(special_tokens(cfg.cosyvoice))})
    eop = tokenizer.convert_tokens_to_ids("<|endofprompt|>")
    if len(tokenizer) > 150000 and eop != cfg.endofprompt_text_id:
        raise CheckpointError(
            f"the tokenizer in {path} gives <|endofprompt|> id {eop}, the release uses "
            f"{cfg.endofprompt_text_id}: wrong tokenizer files"
        )
    return tokenizer


def load_voice_lm(
    folder: Path | str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    allow_unpinned: bool = False,
    llm_file: str = LLM_FILE,
) -> tuple[VoiceTokenLM, PreTrainedTokenizerBase]:
    """An official release folder (``llm.pt`` + ``CosyVoice-BlankEN/``) -> model.

    CosyVoice2-0.5B or Fun-CosyVoice3-0.5B-2512, as the folder's yaml says
    (``release_generation``); ``llm_file`` picks CosyVoice 3's RL-tuned ``llm.rl.pt``."""
    from minmo_core.common.release_config import release_generation
    from minmo_core.common.releases import COSYVOICE3

    folder = Path(folder)
    generation = release_generation(folder)
    release = COSYVOICE3 if generation == 3 else COSYVOICE2
    if llm_file not in LLM_FILES or llm_file not in release.files:
        raise CheckpointError(f"{release.name} has no voice LM {llm_file!r}")
    if llm_file == RL_LLM_FILE and not (folder / llm_file).is_file():
        raise CheckpointError(
            f"{folder} has no {llm_file} ({release.name}'s RL-tuned voice LM, not fetched by "
            f"default): `minmo models download minmo-7b-cv3 --also {llm_file}` (or the pack "
            "you use) fetches it, or choose the standard voice LM in Settings → Models"
        )
    blank = folder / BLANK_EN
    tokenizer_files = RELEASE_TOKENIZER
    if allow_unpinned and not (blank / "vocab.json").is_file():
        tokenizer_files = ()  # load_tokenizer names what is missing
    verify_files(
        folder, release, (llm_file, f"{BLANK_EN}/config.json", *tokenizer_files), allow_unpinned
    )
    qwen = _qwen_config(folder)
    path = folder / llm_file
    state = load_state_dict(path)
    decoder = state.get("llm_decoder.weight")
    if decoder is None or decoder.dim() != 2:
        raise CheckpointError(f"{path} has no llm_decoder.weight: not a voice LM")
    has_v2_heads = "llm_embedding.weight" in state or "llm_decoder.bias" in state
    if has_v2_heads != (generation == 2):
        found = "CosyVoice 2" if has_v2_heads else "CosyVoice 3"
        raise CheckpointError(
            f"{path} is a {found} voice LM, but {folder} is a CosyVoice {generation} release "
            f"({'cosyvoice3.yaml' if generation == 3 else 'no cosyvoice3.yaml'}): mixed files"
        )
    cfg = VoiceTokenLMConfig(
        llm_input_size=qwen.hidden_size,
        llm_output_size=qwen.hidden_size,
        speech_token_size=decoder.shape[0] - (200 if generation == 3 else 3),
        cosyvoice=generation,
    )
    tokenizer = load_tokenizer(folder, cfg)
    # the instruction's end as this tokenizer spells it (151646 in the release's)
    cfg = replace(cfg, endofprompt_text_id=tokenizer.convert_tokens_to_ids("<|endofprompt|>"))
    with no_init_weights():  # no random init; computed buffers (rotary inv_freq) stay real
        model = VoiceTokenLM(cfg, qwen)
    load_into(model, state, path)
    if qwen.tie_word_embeddings:
        model.llm["model"].tie_weights()
    del state
    device = torch.device(device)
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    return model.to(device=device, dtype=dtype).eval(), tokenizer


def masked(logits: torch.Tensor, banned: tuple[int, ...]) -> torch.Tensor:
    """logits (V,) with the ``banned`` ids set to -inf."""
    if not banned:
        return logits
    logits = logits.clone()
    logits[list(banned)] = float("-inf")
    return logits


__all__ = [
    "ADDED_SPECIAL_TOKENS",
    "LLM_FILE",
    "LLM_FILES",
    "DecodeState",
    "RasSampler",
    "Sampler",
    "VoiceTokenLM",
    "greedy_sampler",
    "load_tokenizer",
    "load_voice_lm",
    "masked",
    "special_tokens",
]
