"""The chat LLM: Qwen2.5-Instruct (MinMo's choice, needed for aligned mode) or, in composed
mode, any causal chat LM transformers runs (Qwen3, Llama 3, SmolLM2, ...), from a local
folder, streamed token by token.

``ChatLLM`` owns the model, its tokenizer and a KV cache kept between turns. ``stream``
renders the chat template, feeds only the prompt tokens the cache does not already hold,
and runs its own sampling loop, so each token comes out with its text delta and, on
request, the last-layer hidden state that MinMo's duplex predictor and output projector
read. Aligned mode puts projected speech embeddings into the user turn (``prefix_embeds``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from safetensors import SafetensorError, safe_open
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DynamicCache,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from minmo_core.common.devices import resolve_device
from minmo_core.common.paths import default_model_folder
from minmo_core.config import LLMConfig
from minmo_core.errors import CheckpointError, ConfigError, MissingDependencyError

LLM_DIR_ENV = "MINMO_LLM_DIR"  # the model folder, when not the default one
DEFAULT_MODEL = "Qwen2.5-7B-Instruct"  # the folder name under the models folder
SPEECH_PLACEHOLDER = "<|speech|>"  # where prefix_embeds go inside a user message
END_TOKENS = ("<|im_end|>", "<|endoftext|>")  # Qwen's end of turn and end of text
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}

Prompt = str | Sequence[Mapping[str, str]]  # one user text, or the whole chat history


def default_llm_dir() -> Path:
    """``$MINMO_LLM_DIR`` if set, else ``<models folder>/Qwen2.5-7B-Instruct``."""
    return default_model_folder(LLM_DIR_ENV, DEFAULT_MODEL).expanduser()


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The config's dtype name; half precision falls back to float32 on a CPU."""
    if name not in DTYPES:
        raise ConfigError(f"unknown LLM dtype {name!r}: use one of {', '.join(DTYPES)}")
    return torch.float32 if device.type == "cpu" else DTYPES[name]


@dataclass(frozen=True)
class TokenEvent:
    """One generated token, as ``ChatLLM.stream`` yields it."""

    token_id: int
    text: str  # the text this token completes; "" while a character is still incomplete
    hidden: torch.Tensor | None  # (hidden_size,) last-layer state that predicted this token
    finish_reason: str | None = None  # on the last event: "stop" (an end token) or "length"


@dataclass
class StreamStats:
    """What the last ``stream`` call computed and how long it took."""

    prompt_tokens: int = 0  # prompt positions: text tokens plus prefix embedding rows
    prompt_tokens_computed: int = 0  # of those, the ones run through the model (not cached)
    generated_tokens: int = 0
    finish_reason: str = ""  # "stop", "length" or "cancelled"
    prefill_s: float = 0.0  # start to first sampled token
    decode_s: float = 0.0  # first token to the end


@dataclass
class KVState:
    """The KV cache kept between turns and what each of its positions holds."""

    cache: DynamicCache | None = None
    keys: list[int] = field(default_factory=list)  # token id, or a unique negative id per embedding

    def reset(self) -> None:
        self.cache = None
        self.keys = []


def sample_token(
    logits: torch.Tensor, seen: torch.Tensor, config: LLMConfig, generator: torch.Generator
) -> int:
    """Pick the next token: repetition penalty, then greedy (temperature 0) or top-k/top-p sampling.

    logits : torch.Tensor, shape = (vocab,), float32
    seen : torch.Tensor, shape = (vocab,), bool, the ids already in the prompt or the reply
    """
    if config.repetition_penalty != 1.0:
        penalised = torch.where(
            logits < 0, logits * config.repetition_penalty, logits / config.repetition_penalty
        )
        logits = torch.where(seen, penalised, logits)
    if config.temperature <= 0:
        return int(logits.argmax())
    logits = logits / config.temperature
    if 0 < config.top_k < logits.numel():
        kth_best = torch.topk(logits, config.top_k).values[-1]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if config.top_p < 1.0:
        sorted_logits, order = logits.sort(descending=True)
        probs = sorted_logits.softmax(-1)
        mass_before = probs.cumsum(-1) - probs  # the best token always stays
        logits = logits.index_fill(0, order[mass_before >= config.top_p], float("-inf"))
    return int(torch.multinomial(logits.softmax(-1), 1, generator=generator))


PATTERN = 4  # the longest of transformers' clean-up patterns (" n't", " 've", " 're")


class IncrementalDecoder:
    """Turns a growing list of token ids into text deltas that never split a character, in
    constant time per token: the tokenizers library's ``DecodeStream`` decodes only the new
    token against a short window of the ones before.

    The deltas concatenate to ``tokenizer.decode(ids, skip_special_tokens=True)``. Where the
    tokenizer cleans up tokenization spaces (" ," to ","), that is done here too, holding back
    the last few characters after a space until they can no longer start a pattern. A slow
    tokenizer (no Rust backend) falls back to decoding the whole reply each time.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        from tokenizers.decoders import DecodeStream

        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.emitted = ""
        self._backend = getattr(tokenizer, "_tokenizer", None)
        self._stream = DecodeStream(skip_special_tokens=True) if self._backend else None
        self._clean = bool(getattr(tokenizer, "clean_up_tokenization_spaces", False))
        self._held = ""  # raw text not yet cleaned and emitted

    def push(self, token_id: int, final: bool) -> str:
        """The new text after ``token_id``; ``final`` also flushes an incomplete character."""
        self.ids.append(token_id)
        if self._stream is None or final:
            return self._whole(final)
        piece = self._stream.step(self._backend, token_id)
        if not piece:
            return ""  # a special token, or bytes that later tokens finish
        if not self._clean:
            self.emitted += piece
            return piece
        raw = self._held + piece
        # the clean-up's patterns start with a space and are at most PATTERN characters
        # long: cut where none can straddle (no space in the PATTERN - 1 before the cut)
        cut = len(raw)
        while cut > 0 and (space := raw.find(" ", max(0, cut - PATTERN + 1), cut)) >= 0:
            cut = space
        self._held = raw[cut:]
        delta = self.tokenizer.clean_up_tokenization(raw[:cut])
        self.emitted += delta
        return delta

    def _whole(self, final: bool) -> str:
        """Decode everything (the last token, or a slow tokenizer): what was not emitted."""
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd") and not final:
            return ""  # the last bytes start a character that later tokens finish
        delta = text[len(self.emitted) :] if text.startswith(self.emitted) else ""
        self.emitted, self._held = text, ""
        return delta


class ChatLLM:
    """Qwen2.5-Instruct loaded from a local folder, with streaming and a reusable KV cache.

    folder : a Hugging Face model folder (config.json, *.safetensors, tokenizer files)
    config : sampling, system prompt and LoRA defaults; sizes come from the folder
    device : "cpu", "cuda" or "auto"
    dtype : overrides the config's precision and its float32 fallback on a CPU
    """

    def __init__(
        self,
        folder: str | Path,
        config: LLMConfig | None = None,
        device: str = "auto",
        dtype: torch.dtype | None = None,
    ) -> None:
        self.folder = Path(folder).expanduser()
        self.config = config or LLMConfig()
        self.device = resolve_device(device)
        # ``dtype`` forces a precision (bfloat16 on a CPU: tests that prove the GPU's dtypes)
        self.dtype = dtype or resolve_dtype(self.config.dtype, self.device)
        _check_model_folder(self.folder)
        self.tokenizer = _load_tokenizer(self.folder)
        quantisation = _quantisation(self.config.weight_bits, self.device)
        model = _load_model(self.folder, self.dtype, quantisation)
        self.model = (model if quantisation else model.to(self.device)).eval()
        self._setup()

    @classmethod
    def from_parts(
        cls,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: LLMConfig | None = None,
    ) -> ChatLLM:
        """A ChatLLM over a model already in memory (benchmarks with random weights at full
        size); device and dtype are the model's."""
        self = cls.__new__(cls)
        self.folder = None
        self.config = config or LLMConfig()
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self.tokenizer, self.model = tokenizer, model.eval()
        self._setup()
        return self

    def _setup(self) -> None:
        self.adapter: PeftModel | None = None
        self.last_stats = StreamStats()
        self._kv = KVState()
        self._embedding_ids = count(-1, -1)
        vocab = self.tokenizer.get_vocab()
        self._n_tokens = min(len(self.tokenizer), self.model.config.vocab_size)
        eos = self.model.generation_config.eos_token_id
        self.stop_ids = {
            *([eos] if isinstance(eos, int) else eos or []),
            *(vocab[token] for token in END_TOKENS if token in vocab),
        }

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    def messages(self, prompt: Prompt) -> list[dict[str, str]]:
        """The chat history for ``prompt``: a bare text gets the config's system prompt."""
        if isinstance(prompt, str):
            return [
                {"role": "system", "content": self.config.system_prompt},
                {"role": "user", "content": prompt},
            ]
        return [dict(message) for message in prompt]

    def render(self, prompt: Prompt) -> str:
        """The chat template applied to ``prompt``, ending with the assistant's header."""
        return self.tokenizer.apply_chat_template(
            self.messages(prompt), tokenize=False, add_generation_prompt=True
        )

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of the rendered prompt (no prefix embeddings)."""
        return self._tokenize(self.render(prompt))

    def prompt_tokens(self, prompt: Prompt) -> int:
        """How many positions ``prompt`` takes (text only)."""
        return len(self.encode(prompt))

    @property
    def context_limit(self) -> int:
        """The most positions the model can attend to."""
        return getattr(self.model.config, "max_position_embeddings", None) or 1 << 30

    def embed(self, token_ids: Sequence[int]) -> torch.Tensor:
        """The input embeddings of ``token_ids``, shape = (len(token_ids), hidden_size)."""
        ids = torch.tensor(list(token_ids), dtype=torch.long, device=self.device)
        return self.model.get_input_embeddings()(ids)

    @torch.inference_mode()
    def hidden_states(self, embeds: torch.Tensor) -> torch.Tensor:
        """The last-layer hidden states over ``embeds`` (T, hidden_size) on their own: no
        cache is read or written, so it may run beside a streaming reply (the duplex
        predictor's view of the user's speech). Returns (T, hidden_size)."""
        out = self.model.base_model(
            inputs_embeds=embeds.to(self.device, self.dtype)[None], use_cache=False
        )
        return out.last_hidden_state[0]

    def reset_cache(self) -> None:
        """Forget the KV cache; the next turn computes its whole prompt."""
        self._kv.reset()

    @torch.inference_mode()
    def stream(
        self,
        prompt: Prompt,
        *,
        prefix_embeds: torch.Tensor | None = None,
        max_new_tokens: int | None = None,
        return_hidden: bool = False,
        stop: Callable[[], bool] | None = None,
        seed: int | None = None,
    ) -> Iterator[TokenEvent]:
        """Generate the assistant's reply to ``prompt``, one ``TokenEvent`` per token.

        prompt : a user text (the config's system prompt is added) or the whole history as
            ``{"role", "content"}`` dicts
        prefix_embeds : torch.Tensor, shape = (T, hidden_size), rows fed in place of
            SPEECH_PLACEHOLDER in the last user message (prepended to it if it has none)
        return_hidden : attach each token's last-layer hidden state, shape = (hidden_size,):
            the state at the position whose logits chose the token
        stop : checked before each token; returning True ends the reply (barge-in), and the
            cache keeps what was generated so far
        seed : seeds the sampler; None draws a random seed

        Sampling follows ``self.config`` (temperature 0 is greedy). The reply ends at an end
        token, which comes as the last event with ``finish_reason="stop"``, or after
        ``max_new_tokens``. Text deltas concatenate to the decoded reply. The cache keeps the
        prompt and the reply, so the next turn only computes what is new.
        """
        limit = self.config.max_new_tokens if max_new_tokens is None else max_new_tokens
        if limit < 1:
            raise ConfigError(f"max_new_tokens must be at least 1, got {limit}")
        keys, embeds = self._prompt(prompt, prefix_embeds)
        stats = self.last_stats = StreamStats(prompt_tokens=len(keys))
        started = time.perf_counter()
        generator = torch.Generator(device=self.device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        seen = torch.zeros(self._n_tokens, dtype=torch.bool, device=self.device)
        seen[[key for key in keys if 0 <= key < self._n_tokens]] = True
        decoder = IncrementalDecoder(self.tokenizer)
        try:
            hidden = self._prefill(keys, embeds)
            while stop is None or not stop():
                token = sample_token(self._logits(hidden), seen, self.config, generator)
                seen[token] = True
                if stats.generated_tokens == 0:
                    stats.prefill_s = time.perf_counter() - started
                stats.generated_tokens += 1
                finish = None
                if token in self.stop_ids:
                    finish = "stop"
                elif stats.generated_tokens == limit:
                    finish = "length"
                text = decoder.push(token, final=finish is not None)
                yield TokenEvent(token, text, hidden if return_hidden else None, finish)
                if finish is not None:
                    stats.finish_reason = finish
                    return
                hidden = self._feed(self.embed([token]), [token])
        finally:
            stats.finish_reason = stats.finish_reason or "cancelled"
            stats.decode_s = time.perf_counter() - started - stats.prefill_s

    def attach_lora(
        self, rank: int | None = None, alpha: int | None = None, targets: Sequence[str] = ()
    ) -> PeftModel:
        """Add a fresh LoRA adapter (B = 0, so outputs are unchanged until it is trained)."""
        self._check_no_adapter()
        lora = LoraConfig(
            r=rank or self.config.lora_rank,
            lora_alpha=alpha or self.config.lora_alpha,
            target_modules=list(targets or self.config.lora_target_modules),
            lora_dropout=0.0,
            bias="none",
            task_type=TaskType.CAUSAL_LM,
        )
        self.adapter = get_peft_model(self.model, lora)
        self.reset_cache()
        return self.adapter

    def load_lora(self, folder: str | Path) -> PeftModel:
        """Load a trained adapter folder (adapter_config.json + adapter_model.safetensors)."""
        self._check_no_adapter()
        folder = Path(folder).expanduser()
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            if not (folder / name).is_file():
                raise CheckpointError(f"LoRA folder {folder} has no {name}")
        _check_safetensors(folder / "adapter_model.safetensors")
        try:
            self.adapter = PeftModel.from_pretrained(self.model, folder, is_trainable=False)
        except (OSError, ValueError, RuntimeError, KeyError) as err:
            raise CheckpointError(f"cannot load the LoRA adapter in {folder}: {err}") from err
        self.reset_cache()
        return self.adapter

    def save_lora(self, folder: str | Path) -> None:
        """Write the attached adapter as safetensors, for ``load_lora``."""
        if self.adapter is None:
            raise ConfigError("no LoRA adapter is attached")
        self.adapter.save_pretrained(folder, safe_serialization=True)

    def _check_no_adapter(self) -> None:
        if self.adapter is not None:
            raise ConfigError("a LoRA adapter is already attached to this LLM")

    def _tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _prompt(
        self, prompt: Prompt, prefix_embeds: torch.Tensor | None
    ) -> tuple[list[int], torch.Tensor]:
        """Cache keys and input embeddings of every prompt position, shape = (P, hidden_size)."""
        if prefix_embeds is None:
            ids = self.encode(prompt)
            return ids, self.embed(ids)
        if prefix_embeds.dim() != 2 or prefix_embeds.shape[1] != self.hidden_size:
            raise ConfigError(
                f"prefix_embeds must have shape (T, {self.hidden_size}), "
                f"got {tuple(prefix_embeds.shape)}"
            )
        messages = self.messages(prompt)
        if not any(SPEECH_PLACEHOLDER in message["content"] for message in messages):
            users = [message for message in messages if message["role"] == "user"]
            if not users:
                raise ConfigError("prefix_embeds need a user message to go into")
            users[-1]["content"] = SPEECH_PLACEHOLDER + users[-1]["content"]
        pieces = self.render(messages).split(SPEECH_PLACEHOLDER)
        if len(pieces) != 2:
            raise ConfigError(f"the prompt must hold {SPEECH_PLACEHOLDER} once for prefix_embeds")
        before, after = (self._tokenize(piece) for piece in pieces)
        speech = prefix_embeds.to(self.device, self.dtype)
        keys = [*before, *(next(self._embedding_ids) for _ in range(len(speech))), *after]
        return keys, torch.cat([self.embed(before), speech, self.embed(after)])

    def _prefill(self, keys: list[int], embeds: torch.Tensor) -> torch.Tensor:
        """Run the prompt positions the cache lacks; the last position's hidden state (hidden,)."""
        cached = self._kv.keys
        common = 0
        while common < min(len(cached), len(keys) - 1) and cached[common] == keys[common]:
            common += 1  # keep at least one position to compute: its logits start the reply
        if common == 0:
            self._kv.reset()
        elif common < len(cached):
            self._kv.cache.crop(common)
            del cached[common:]
        self.last_stats.prompt_tokens_computed = len(keys) - common
        return self._feed(embeds[common:], keys[common:])

    def _feed(self, embeds: torch.Tensor, keys: list[int]) -> torch.Tensor:
        """Extend the cache by ``embeds`` (T, hidden); return the last hidden state (hidden,)."""
        if self._kv.cache is None:
            self._kv.cache = DynamicCache(config=self.model.config)
        try:
            out = self.model.base_model(
                inputs_embeds=embeds.unsqueeze(0), past_key_values=self._kv.cache, use_cache=True
            )
        except BaseException:
            self._kv.reset()  # some layers may hold the new positions and others not
            raise
        self._kv.keys.extend(keys)
        return out.last_hidden_state[0, -1]

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(hidden,) -> (n_tokens,) float32; padding rows past the tokenizer are dropped."""
        return self.model.get_output_embeddings()(hidden)[: self._n_tokens].float()


def _check_model_folder(folder: Path) -> None:
    """Fail with a clear message before any heavy loading."""
    if not folder.is_dir():
        raise CheckpointError(f"LLM folder not found: {folder}")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{folder} has no config.json: not a Hugging Face model folder")
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (ValueError, AttributeError) as err:
        raise CheckpointError(f"{config_file} is not a valid JSON object: {err}") from err
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise CheckpointError(
            f"{config_file} describes a {model_type!r} model, not a causal chat LM that "
            "transformers can run (Qwen2.5-Instruct, Qwen3, Llama 3, SmolLM2, ...)"
        )
    if not (folder / "tokenizer.json").is_file() and not (
        (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    ):
        raise CheckpointError(
            f"{folder} has no tokenizer: expected tokenizer.json (or vocab.json + merges.txt)"
        )
    for shard in _weight_files(folder):
        _check_safetensors(shard)


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors shards, all present; .bin/.pt weights are never loaded."""
    index_file = folder / "model.safetensors.index.json"
    if index_file.is_file():
        try:
            weight_map = json.loads(index_file.read_text(encoding="utf-8"))["weight_map"]
            names = sorted(set(weight_map.values()))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise CheckpointError(f"{index_file} is not a valid shard index: {err}") from err
        missing = [name for name in names if not (folder / name).is_file()]
        if missing:
            raise CheckpointError(f"{folder} lacks {missing[0]}, listed in {index_file.name}")
        return [folder / name for name in names]
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        raise CheckpointError(
            f"{folder} has no *.safetensors weights (only safetensors files are loaded)"
        )
    return shards


def _check_safetensors(file: Path) -> None:
    """Read the header: a truncated or corrupt file fails here, naming itself."""
    try:
        with safe_open(str(file), framework="pt") as weights:
            weights.keys()
    except (SafetensorError, OSError) as err:
        problem = f"{file.name} in {file.parent} is truncated or corrupt: {err}"
        raise CheckpointError(problem) from err


def _load_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, TypeError) as err:
        raise CheckpointError(f"cannot load the tokenizer in {folder}: {err}") from err
    if not tokenizer.chat_template:
        raise CheckpointError(f"the tokenizer in {folder} has no chat_template")
    return tokenizer


def _quantisation(bits: int, device: torch.device):
    """bitsandbytes' config for 8- or 4-bit weights (NF4, double quantisation, bfloat16
    compute), or None for 16. Experimental: not yet measured on a GPU."""
    if bits == 16:
        return None
    if bits not in (8, 4):
        raise ConfigError(f"LLM weights can be 16, 8 or 4 bits, not {bits}")
    if device.type != "cuda":
        raise ConfigError(f"{bits}-bit LLM weights need a CUDA GPU (bitsandbytes); use 16 here")
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError as err:
        raise MissingDependencyError(
            f"{bits}-bit LLM weights need bitsandbytes: pip install 'minmo-assistant[quantised]'"
        ) from err
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def _load_model(folder: Path, dtype: torch.dtype, quantisation=None) -> PreTrainedModel:
    extra = {"quantization_config": quantisation, "device_map": {"": 0}} if quantisation else {}
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            folder,
            dtype=dtype,
            local_files_only=True,
            use_safetensors=True,
            output_loading_info=True,
            **extra,
        )
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        raise CheckpointError(f"cannot load the weights in {folder}: {err}") from err
    if model.get_output_embeddings() is None or model.base_model is model:
        raise CheckpointError(f"the model in {folder} has no separate body and output head")
    if info["missing_keys"]:
        raise CheckpointError(
            f"the weights in {folder} lack {len(info['missing_keys'])} tensors, "
            f"e.g. {sorted(info['missing_keys'])[0]}"
        )
    return model
