"""ChatLLM on a tiny random Qwen2: streaming, hidden states, KV reuse, speech prefix, LoRA,
checkpoint errors and the ``minmo chat`` command."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from app.bench.chat_model import write_tiny_qwen
from app.cli import main
from minmo_core.config import LLMConfig
from minmo_core.errors import CheckpointError, ConfigError
from minmo_core.llm.chat import (
    SPEECH_PLACEHOLDER,
    ChatLLM,
    IncrementalDecoder,
    TokenEvent,
    sample_token,
)

GREEDY = replace(LLMConfig.tiny(), temperature=0.0, repetition_penalty=1.0, max_new_tokens=12)
HELLO = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello! How are you today?"},
]


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_qwen(tmp_path_factory.mktemp("qwen"))


@pytest.fixture
def llm(qwen_dir: Path) -> ChatLLM:
    return ChatLLM(qwen_dir, GREEDY, device="cpu")


def _ids(events: list[TokenEvent]) -> list[int]:
    return [event.token_id for event in events]


def _hidden(events: list[TokenEvent]) -> torch.Tensor:
    return torch.stack([event.hidden for event in events])  # (N, hidden)


def _cached_prefix(cached: list[int], prompt: list[int]) -> int:
    """How many leading prompt positions a cache holding ``cached`` can skip."""
    n = 0
    while n < min(len(cached), len(prompt) - 1) and cached[n] == prompt[n]:
        n += 1
    return n


def test_text_deltas_concatenate_to_the_decoded_reply(llm: ChatLLM) -> None:
    events = list(llm.stream("你好！今天天气怎么样？", max_new_tokens=40))
    ids = _ids(events)
    assert llm.tokenizer.decode(ids, skip_special_tokens=True) == "".join(e.text for e in events)
    assert all(not e.text.endswith("\ufffd") for e in events[:-1])
    assert [e.finish_reason for e in events[:-1]] == [None] * (len(events) - 1)
    assert events[-1].finish_reason in ("stop", "length")
    assert llm.last_stats.generated_tokens == len(events)


def test_incremental_decoder_holds_back_a_split_character(llm: ChatLLM) -> None:
    text = "你好！"
    ids = llm.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text)  # some character spans two tokens
    decoder = IncrementalDecoder(llm.tokenizer)
    deltas = [decoder.push(token, final=False) for token in ids]
    assert "".join(deltas) == text
    assert "" in deltas and all("\ufffd" not in delta for delta in deltas)


def test_hidden_states_and_greedy_ids_match_a_full_forward(llm: ChatLLM) -> None:
    events = list(llm.stream(HELLO, return_hidden=True))
    prompt, ids = llm.encode(HELLO), _ids(events)
    with torch.inference_mode():
        full = llm.model(torch.tensor([prompt + ids[:-1]]), output_hidden_states=True)
    assert events[0].hidden.shape == (llm.hidden_size,)
    torch.testing.assert_close(_hidden(events), full.hidden_states[-1][0, len(prompt) - 1 :])
    logits = full.logits[0, len(prompt) - 1 :, : len(llm.tokenizer)]  # no padding rows
    assert logits.argmax(-1).tolist() == ids


def test_next_turn_reuses_the_cache_and_matches_a_fresh_model(llm: ChatLLM, qwen_dir: Path) -> None:
    first = list(llm.stream(HELLO))
    reply = "".join(e.text for e in first)
    turn2 = [*HELLO, {"role": "assistant", "content": reply}, {"role": "user", "content": "Why?"}]
    prompt1, prompt2 = llm.encode(HELLO), llm.encode(turn2)
    reused = list(llm.stream(turn2, return_hidden=True))
    stats = llm.last_stats
    fresh = ChatLLM(qwen_dir, GREEDY, device="cpu")
    expected = list(fresh.stream(turn2, return_hidden=True))

    skipped = _cached_prefix(prompt1 + _ids(first)[:-1], prompt2)
    assert skipped >= len(prompt1)
    assert stats.prompt_tokens == len(prompt2) == fresh.last_stats.prompt_tokens_computed
    assert stats.prompt_tokens_computed == len(prompt2) - skipped
    assert _ids(reused) == _ids(expected)
    torch.testing.assert_close(_hidden(reused), _hidden(expected))


def test_a_changed_history_crops_the_cache_and_matches_a_fresh_model(
    llm: ChatLLM, qwen_dir: Path
) -> None:
    other = [HELLO[0], {"role": "user", "content": "What time is it now?"}]
    list(llm.stream(HELLO))
    cropped = list(llm.stream(other, return_hidden=True))
    computed = llm.last_stats.prompt_tokens_computed
    again = list(llm.stream(other, return_hidden=True))
    expected = list(ChatLLM(qwen_dir, GREEDY, device="cpu").stream(other, return_hidden=True))

    prompt = llm.encode(other)
    assert 0 < computed == len(prompt) - _cached_prefix(llm.encode(HELLO), prompt) < len(prompt)
    assert llm.last_stats.prompt_tokens_computed == 1  # the same prompt again: all cached
    for events in (cropped, again):
        assert _ids(events) == _ids(expected)
        torch.testing.assert_close(_hidden(events), _hidden(expected))


def test_stop_cancels_mid_stream_and_leaves_a_usable_cache(llm: ChatLLM, qwen_dir: Path) -> None:
    uncut = list(llm.stream(HELLO))
    assert len(uncut) > 3 and uncut[2].finish_reason is None
    llm.reset_cache()
    events: list[TokenEvent] = []
    for event in llm.stream(HELLO, stop=lambda: len(events) == 3):
        events.append(event)
    assert _ids(events) == _ids(uncut)[:3]
    assert llm.last_stats.finish_reason == "cancelled"

    question = [*HELLO, {"role": "assistant", "content": "Fi"}, {"role": "user", "content": "?"}]
    after = list(llm.stream(question, return_hidden=True))
    expected = list(ChatLLM(qwen_dir, GREEDY, device="cpu").stream(question, return_hidden=True))
    assert _ids(after) == _ids(expected)
    torch.testing.assert_close(_hidden(after), _hidden(expected))


@pytest.mark.parametrize("content", [f"{SPEECH_PLACEHOLDER} what time is it?", " what time is it?"])
def test_prefix_embeds_stand_in_for_tokens_at_the_placeholder(llm: ChatLLM, content: str) -> None:
    """Embedding rows of "Hello" fed as speech give what the text "Hello" gives."""
    word = llm.tokenizer("Hello", add_special_tokens=False)["input_ids"]
    spoken = [HELLO[0], {"role": "user", "content": content}]
    typed = [HELLO[0], {"role": "user", "content": "Hello what time is it?"}]
    with_speech = list(llm.stream(spoken, prefix_embeds=llm.embed(word), return_hidden=True))
    assert llm.last_stats.prompt_tokens == len(llm.encode(typed))
    llm.reset_cache()
    expected = list(llm.stream(typed, return_hidden=True))
    assert _ids(with_speech) == _ids(expected)
    torch.testing.assert_close(_hidden(with_speech), _hidden(expected))


def test_prefix_embeds_change_the_reply(llm: ChatLLM) -> None:
    plain = list(llm.stream(HELLO, return_hidden=True))
    speech = torch.randn(5, llm.hidden_size, generator=torch.Generator().manual_seed(0))
    heard = list(llm.stream(HELLO, prefix_embeds=speech, return_hidden=True))
    assert llm.last_stats.prompt_tokens == len(llm.encode(HELLO)) + 5
    assert not torch.allclose(plain[0].hidden, heard[0].hidden, atol=1e-3)
    with pytest.raises(ConfigError, match="prefix_embeds must have shape"):
        next(llm.stream(HELLO, prefix_embeds=torch.zeros(5, llm.hidden_size + 1)))


def test_sampling_is_seeded_and_top_k_1_is_greedy(llm: ChatLLM) -> None:
    greedy = _ids(list(llm.stream(HELLO)))
    llm.config = replace(GREEDY, temperature=1.0, top_k=1)
    assert _ids(list(llm.stream(HELLO, seed=1))) == greedy
    llm.config = replace(GREEDY, temperature=1.0, top_k=0, top_p=1.0)
    runs = [_ids(list(llm.stream(HELLO, seed=seed))) for seed in (1, 1, 2)]
    assert runs[0] == runs[1] != runs[2]


def test_sample_token_applies_top_p_and_repetition_penalty() -> None:
    logits = torch.tensor([0.6, 0.3, 0.1]).log()
    unseen = torch.zeros(3, dtype=torch.bool)
    gen = torch.Generator().manual_seed(0)
    nucleus = replace(LLMConfig(), temperature=1.0, top_k=0, top_p=0.5, repetition_penalty=1.0)
    assert {sample_token(logits, unseen, nucleus, gen) for _ in range(50)} == {0}
    wider = replace(nucleus, top_p=0.8)
    assert {sample_token(logits, unseen, wider, gen) for _ in range(200)} == {0, 1}
    penalised = replace(nucleus, temperature=0.0, repetition_penalty=1.1)
    close = torch.tensor([2.0, 1.9, -5.0])
    assert sample_token(close, torch.tensor([True, False, False]), penalised, gen) == 1


def test_zero_initialised_lora_leaves_outputs_unchanged(llm: ChatLLM) -> None:
    before = list(llm.stream(HELLO, return_hidden=True))
    llm.attach_lora()
    lora_b = [name for name, _ in llm.model.named_parameters() if "lora_B" in name]
    assert len(lora_b) == 2 * len(GREEDY.lora_target_modules)  # 2 layers
    after = list(llm.stream(HELLO, return_hidden=True))
    assert _ids(after) == _ids(before)
    assert torch.equal(_hidden(after), _hidden(before))


def test_trained_lora_changes_outputs_and_reloads(
    llm: ChatLLM, qwen_dir: Path, tmp_path: Path
) -> None:
    base = list(llm.stream(HELLO, return_hidden=True))
    llm.attach_lora(rank=4)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in llm.model.named_parameters():
            if "lora_B" in name:
                param.copy_(0.5 * torch.randn(param.shape, generator=gen))
    tuned = list(llm.stream(HELLO, return_hidden=True))
    assert not torch.allclose(_hidden(tuned), _hidden(base), atol=1e-3)

    llm.save_lora(tmp_path / "adapter")
    reloaded = ChatLLM(qwen_dir, GREEDY, device="cpu")
    with pytest.raises(CheckpointError, match=r"has no adapter_config\.json"):
        reloaded.load_lora(tmp_path / "nothing")
    reloaded.load_lora(tmp_path / "adapter")
    again = list(reloaded.stream(HELLO, return_hidden=True))
    assert _ids(again) == _ids(tuned)
    torch.testing.assert_close(_hidden(again), _hidden(tuned))


def _edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(changes)
    path.write_text(json.dumps(data), encoding="utf-8")


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _drop_tokenizer(folder: Path) -> None:
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):
        (folder / name).unlink()


def _index_a_missing_shard(folder: Path) -> None:
    index = {"weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")


BREAKAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing folder": (shutil.rmtree, "LLM folder not found: {folder}"),
    "no config": (lambda f: (f / "config.json").unlink(), "{folder} has no config.json"),
    "not a causal LM": (
        lambda f: _edit_json(f / "config.json", model_type="t5"),
        "describes a 't5' model, not a causal chat LM",
    ),
    "no weights": (
        lambda f: (f / "model.safetensors").unlink(),
        "{folder} has no *.safetensors weights",
    ),
    "truncated weights": (
        lambda f: _truncate(f / "model.safetensors"),
        "model.safetensors in {folder} is truncated or corrupt",
    ),
    "missing shard": (_index_a_missing_shard, "{folder} lacks model-00002-of-00002.safetensors"),
    "no tokenizer": (_drop_tokenizer, "{folder} has no tokenizer"),
    "no chat template": (
        lambda f: _edit_json(f / "tokenizer_config.json", chat_template=None),
        "the tokenizer in {folder} has no chat_template",
    ),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_broken_folders_fail_with_a_message_naming_the_problem(
    breakage: str, qwen_dir: Path, tmp_path: Path
) -> None:
    folder = shutil.copytree(qwen_dir, tmp_path / "model")
    break_folder, message = BREAKAGES[breakage]
    break_folder(folder)
    with pytest.raises(CheckpointError) as err:
        ChatLLM(folder, GREEDY, device="cpu")
    assert message.format(folder=folder) in str(err.value)


def test_cli_chat_streams_the_reply(qwen_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["chat", "--llm", str(qwen_dir), "--device", "cpu", "--temperature", "0"]
    assert main([*argv, "--max-new-tokens", "10", "Hello", "there"]) == 0
    config = replace(LLMConfig(), temperature=0.0, max_new_tokens=10)
    events = list(ChatLLM(qwen_dir, config, device="cpu").stream("Hello there"))
    assert capsys.readouterr().out == "".join(e.text for e in events) + "\n"


def test_cli_chat_errors_exit_2_with_a_message(
    qwen_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = tmp_path / "absent"
    assert main(["chat", "--llm", str(missing), "hi"]) == 2
    assert f"minmo: error: LLM folder not found: {missing}" in capsys.readouterr().err

    monkeypatch.delenv("MINMO_LLM_DIR", raising=False)
    monkeypatch.setenv("MINMO_MODELS_DIR", str(tmp_path))
    assert main(["chat", "hi"]) == 2
    err = capsys.readouterr().err
    assert f"no Qwen2.5-7B-Instruct folder at {tmp_path / 'Qwen2.5-7B-Instruct'}" in err
    assert "--llm DIR" in err and "MINMO_LLM_DIR" in err

    monkeypatch.setenv("MINMO_LLM_DIR", str(qwen_dir))
    assert main(["chat", "   "]) == 2
    assert "nothing to send" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("bits", "message"),
    [(8, "need a CUDA GPU"), (4, "need a CUDA GPU"), (6, "16, 8 or 4 bits")],
)
def test_quantised_weights_are_refused_where_they_cannot_run(
    qwen_dir: Path, bits: int, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        ChatLLM(qwen_dir, replace(GREEDY, weight_bits=bits), device="cpu")


DECODE_TEXTS = [
    "Hello there, how are you today? I'm fine!",
    "你好！今天天气怎么样？我想问我在滨海新区有房。",
    "Emoji 🙂👍🏽 and accents: café, naïve, Ærø — 3.5 km/h, 1,234 items.",
    "Spaces before marks , and . and ! and ? and don 't and it 's and we 're and I 've",
    "  leading and trailing spaces  \n\nnew lines\tand tabs ",
]


@pytest.mark.parametrize("text", DECODE_TEXTS)
def test_streamed_deltas_concatenate_to_the_decoded_text(llm: ChatLLM, text: str) -> None:
    """Token by token (each pushed alone, none final) then a last one: the deltas are the
    whole decode, never with a broken character, and the stream decodes each token once
    (the whole reply is decoded only at the end)."""
    tokenizer = llm.tokenizer
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [min(llm.stop_ids)]
    decoder = IncrementalDecoder(tokenizer)
    calls = []
    real = tokenizer.decode
    tokenizer.decode = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        deltas = [decoder.push(t, final=i == len(ids) - 1) for i, t in enumerate(ids)]
    finally:
        del tokenizer.decode
    assert "".join(deltas) == tokenizer.decode(ids, skip_special_tokens=True)
    assert all("\ufffd" not in d for d in deltas)
    assert len(calls) == 1  # the final flush only: O(1) per token before it


def test_bytes_that_make_no_character_decode_as_the_whole_reply_does(llm: ChatLLM) -> None:
    """Random weights write byte tokens that form no UTF-8 character: the deltas still
    concatenate to what decoding the whole reply gives."""
    tokenizer = llm.tokenizer
    vocab = tokenizer.get_vocab()
    lone = [vocab[t] for t in ("Ã", "¤", "Ġ", "Ċ") if t in vocab]  # single bytes 0xC3 0xA4 ...
    assert len(lone) >= 2
    text_ids = tokenizer("ok then", add_special_tokens=False)["input_ids"]
    ids = [*text_ids, lone[1], lone[1], *text_ids, lone[0], min(llm.stop_ids)]
    decoder = IncrementalDecoder(tokenizer)
    deltas = [decoder.push(t, final=i == len(ids) - 1) for i, t in enumerate(ids)]
    assert "".join(deltas) == tokenizer.decode(ids, skip_special_tokens=True)
