"""Qwen2.5-Instruct stand-ins built from nothing, for tests and benchmarks.

``write_tiny_qwen(folder)`` trains a byte-level BPE tokenizer on a few English and Chinese
sentences, adds Qwen's special tokens and a ChatML chat template, and saves a 2-layer
``Qwen2ForCausalLM`` with seeded random weights as safetensors, in the official layout, in
about a second. Everything loads offline with ``AutoTokenizer.from_pretrained`` /
``Qwen2ForCausalLM.from_pretrained``. ``random_chat_llm`` builds the same in memory at a
real Qwen2.5 size (7B: 3584 wide, 28 layers), where only speed matters.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

SEED = 1234
MERGES = 200  # merges on top of the 256 byte tokens: common words, some whole Chinese characters
VOCAB_MULTIPLE = 64  # the embedding is padded to a multiple, as Qwen pads 151665 tokens to 152064
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # ids follow the BPE vocabulary

# Qwen2's pre-tokenizer split (tokenizer.json of Qwen2.5-Instruct)
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen2.5's template without the tool-calling branches
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

CORPUS = """\
Hello! How are you today? I am fine, thank you. What is the weather like?
The weather is sunny and warm, a good day for a walk in the park.
Can you tell me a short story about a cat who learned to sing?
Please speak slowly and clearly. I would like to hear the answer again.
What time is it now? It is half past three in the afternoon.
你好！今天天气怎么样？今天天气很好，我们去公园散步吧。
请给我讲一个关于小猫学唱歌的故事。谢谢你，我很喜欢这个故事。
现在几点了？现在是下午三点半。请说慢一点，我想再听一遍。
"""


def _train_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=len(alphabet) + MERGES,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    return tokenizer


def _tokenizer_config(tokenizer: Tokenizer) -> dict[str, object]:
    added = {
        str(tokenizer.token_to_id(token)): {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for token in SPECIAL_TOKENS
    }
    return {
        "added_tokens_decoder": added,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 512,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


# Qwen2.5-*-Instruct shapes (the releases' config.json), for speed at real size
QWEN25_SIZES = {
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14, num_key_value_heads=2, vocab_size=151936),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                 num_attention_heads=12, num_key_value_heads=2, vocab_size=151936),
    "3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
               num_attention_heads=16, num_key_value_heads=2, vocab_size=151936),
    "7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
               num_attention_heads=28, num_key_value_heads=4, vocab_size=152064),
}  # fmt: skip
TINY_SIZE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2)  # fmt: skip


def write_chat_tokenizer(folder: Path) -> Tokenizer:
    """The tokenizer files (tokenizer.json, vocab.json, merges.txt, tokenizer_config.json)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer()
    tokenizer.save(str(folder / "tokenizer.json"))
    tokenizer.model.save(str(folder))  # vocab.json + merges.txt
    (folder / "tokenizer_config.json").write_text(
        json.dumps(_tokenizer_config(tokenizer), indent=2, ensure_ascii=False), encoding="utf-8"
    )
    return tokenizer


def _qwen_config(tokenizer: Tokenizer, size: dict) -> Qwen2Config:
    endoftext, im_end = tokenizer.token_to_id("<|endoftext|>"), tokenizer.token_to_id("<|im_end|>")
    n_tokens = tokenizer.get_vocab_size()
    return Qwen2Config(
        **{"vocab_size": -(-n_tokens // VOCAB_MULTIPLE) * VOCAB_MULTIPLE, **size},
        max_position_embeddings=512 if size is TINY_SIZE else 32768,
        rope_theta=1_000_000.0,
        tie_word_embeddings=False,
        bos_token_id=endoftext,
        eos_token_id=im_end,
        dtype="float32",
    )


def _generation_config(tokenizer: Tokenizer) -> GenerationConfig:
    endoftext, im_end = tokenizer.token_to_id("<|endoftext|>"), tokenizer.token_to_id("<|im_end|>")
    return GenerationConfig(
        bos_token_id=endoftext,
        eos_token_id=[im_end, endoftext],
        pad_token_id=endoftext,
        do_sample=True,
        temperature=0.7,
        top_p=0.8,
        top_k=20,
        repetition_penalty=1.05,
    )


def random_chat_llm(size: str, device: torch.device, dtype: torch.dtype, folder: Path, config):
    """A ChatLLM with seeded random weights at ``size`` ("tiny" or a QWEN25_SIZES key), built
    in memory on ``device``; ``folder`` receives the tokenizer files."""
    from transformers import AutoTokenizer
    from transformers.modeling_utils import no_init_weights

    from minmo_core.llm.chat import ChatLLM

    tokenizer = write_chat_tokenizer(folder)
    qwen = _qwen_config(tokenizer, TINY_SIZE if size == "tiny" else QWEN25_SIZES[size])
    with torch.device(device), no_init_weights():
        model = Qwen2ForCausalLM(qwen).to(dtype)
    generator = torch.Generator(device=device).manual_seed(SEED)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02, generator=generator)
    model.generation_config = _generation_config(tokenizer)
    return ChatLLM.from_parts(model, AutoTokenizer.from_pretrained(folder), config)


def write_tiny_qwen(folder: Path) -> Path:
    """Write a tiny Qwen2.5-Instruct-style model folder into ``folder`` and return it.

    Files: config.json, generation_config.json, model.safetensors, tokenizer.json,
    tokenizer_config.json, vocab.json, merges.txt. Hidden 64, 2 layers, 4 heads (2 KV heads).
    The same call always writes the same bytes.
    """
    folder = Path(folder)
    tokenizer = write_chat_tokenizer(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = Qwen2ForCausalLM(_qwen_config(tokenizer, TINY_SIZE))
    model.generation_config = _generation_config(tokenizer)
    model.save_pretrained(folder, safe_serialization=True)
    return folder
