"""VoiceTokenLM against the official Qwen2LM (golden fixture), and its three feeding paths."""

from __future__ import annotations

import contextlib
import itertools
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import Qwen2Config

from minmo_core.config import OutputProjectorConfig, VoiceTokenLMConfig
from minmo_core.errors import CheckpointError, ConfigError
from minmo_core.llm.projectors import OutputProjector
from minmo_core.voice.speech_tokens import (
    LMPrompt,
    SemanticStep,
    SpeechTokenGenerator,
    Trace,
    chunked,
    interleaved_tokens,
    split_sentences,
    whole_text_tokens,
)
from minmo_core.voice.voice_lm import RasSampler, VoiceTokenLM, greedy_sampler, load_voice_lm

S = 96  # the fixture's speech codebook: eos 96, fill 98
KIND = {0: "sos", 1: "text", 2: "task_id", 3: "speech"}


@pytest.fixture(scope="module")
def golden(fixtures_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(fixtures_dir / "cosyvoice2_llm" / "io.safetensors"))


@pytest.fixture(scope="module")
def lm(fixtures_dir: Path) -> VoiceTokenLM:
    cfg = json.loads((fixtures_dir / "cosyvoice2_llm" / "config.json").read_text())
    model = VoiceTokenLM(VoiceTokenLMConfig.tiny(), Qwen2Config(**cfg["qwen2_config"])).eval()
    model.load_state_dict(load_file(str(fixtures_dir / "cosyvoice2_llm" / "weights.safetensors")))
    return model


@contextlib.contextmanager
def recorded_decoders(lm: VoiceTokenLM):
    """Every decoding session (KV cache) the LM opens inside the block, in order."""
    decoders = []
    original = lm.decoder

    def spy():
        decoders.append(original())
        return decoders[-1]

    lm.decoder = spy
    try:
        yield decoders
    finally:
        del lm.decoder


class Recorder:
    """A sampler wrapper that keeps every logits vector it was shown, and where it was."""

    def __init__(self, inner, trace: Trace | None = None) -> None:
        self.inner, self.trace = inner, trace
        self.logits: list[torch.Tensor] = []
        self.positions: list[int] = []  # index of the input position the logits follow

    def __call__(self, logits: torch.Tensor, decoded: list[int]) -> int:
        self.logits.append(logits.clone())
        if self.trace is not None:
            self.positions.append(len(self.trace) - 1)
        return self.inner(logits, decoded)


class Script:
    """A 'sampler' that replays given tokens (teacher forcing through the decoding path)."""

    def __init__(self, tokens: list[int], then: int) -> None:
        self.tokens, self.then = iter(tokens), then

    def __call__(self, logits: torch.Tensor, decoded: list[int]) -> int:
        return next(self.tokens, self.then)


@pytest.mark.parity
@pytest.mark.parametrize("case", ["tf_uni", "tf_bi"])
def test_teacher_forced_logits_match_official(lm: VoiceTokenLM, golden: dict, case: str) -> None:
    with torch.no_grad():
        logits = lm(golden[f"{case}.lm_input"])
    torch.testing.assert_close(logits, golden[f"{case}.logits"], atol=1e-4, rtol=0)


@pytest.mark.parity
def test_whole_text_decoding_matches_official_inference(lm: VoiceTokenLM, golden: dict) -> None:
    prompt = LMPrompt(
        golden["infer.prompt_text"][0].tolist(), golden["infer.prompt_speech_token"][0].tolist()
    )
    recorder = Recorder(greedy_sampler)
    with torch.no_grad():
        tokens = list(
            itertools.islice(
                whole_text_tokens(lm, golden["infer.text"][0].tolist(), prompt, recorder), 20
            )
        )
    assert tokens == golden["infer.out_tokens"].tolist()
    seen = torch.stack(recorder.logits)  # (20, 99), eos masked for the first 2 x 10 steps
    assert torch.isinf(seen[:, S]).all()
    keep = [i for i in range(S + 3) if i != S]
    torch.testing.assert_close(
        seen[:, keep], golden["infer.step_logits"][:, keep], atol=1e-4, rtol=0
    )


@pytest.mark.parity
def test_streaming_layout_and_logits_match_official_bistream_training(
    lm: VoiceTokenLM, golden: dict
) -> None:
    text = golden["tf_bi.text_token"][0].tolist()
    speech = golden["tf_bi.speech_token"][0].tolist()
    trace: Trace = []
    recorder = Recorder(Script(speech, then=S), trace)  # eos after the 40 reference tokens
    with torch.no_grad():
        pieces = (lm.embed_text([t]) for t in text)  # one text token at a time
        out = list(interleaved_tokens(lm, pieces, LMPrompt(), recorder, trace=trace))
    assert out == speech
    expected = [
        (KIND[int(k)], int(i))
        for k, i in zip(golden["tf_bi.layout_kind"], golden["tf_bi.layout_index"], strict=True)
    ]
    assert trace == expected
    # every sampled decision saw the official logits of the position just fed (masked ids aside)
    assert len(recorder.positions) == 40 + 1  # 40 speech tokens and eos; the fill was forced
    shown = torch.stack(recorder.logits)
    reference = golden["tf_bi.logits"][0, recorder.positions]
    finite = torch.isfinite(shown)
    torch.testing.assert_close(shown[finite], reference[finite], atol=1e-4, rtol=0)


def release_layout(n_text: int, n_speech: int) -> tuple[Trace, list[int]]:
    """The release's bistream training layout and its fill-target positions, from its rules:
    sos; per block of 5 text: the 5 text then 15 speech (target after them: fill); the last
    partial block's text (0..4 tokens), task_id, the remaining speech (target: eos)."""
    layout: Trace = [("sos", 0)]
    fills, outputs = [], 0
    blocks = n_text // 5
    for j in range(blocks):
        layout += [("text", 5 * j + i) for i in range(5)]
        layout += [("speech", 15 * j + i) for i in range(15)]
        outputs += 15
        fills.append(outputs)
        outputs += 1
    layout += [("text", i) for i in range(5 * blocks, n_text)] + [("task_id", 0)]
    layout += [("speech", i) for i in range(15 * blocks, n_speech)]
    return layout, fills


def test_a_23_token_text_streams_in_the_release_layout_block_for_block(lm: VoiceTokenLM) -> None:
    speech = [(7 * i) % S for i in range(75)]
    trace: Trace = []
    decided: list[list[int]] = []
    script = Script(speech, then=S)

    def sampler(logits: torch.Tensor, decoded: list[int]) -> int:
        decided.append(list(decoded))
        return script(logits, decoded)

    with torch.no_grad():
        pieces = (lm.embed_text([t % 90]) for t in range(23))
        out = list(interleaved_tokens(lm, pieces, LMPrompt(), sampler, trace=trace))
    layout, fills = release_layout(23, 75)
    assert trace == layout
    final = decided[-1] + [S]  # every output, fills included, and the closing eos
    assert [i for i, t in enumerate(final) if t == lm.cfg.fill_token] == fills == [15, 31, 47, 63]
    assert out == speech


def test_streamed_text_equals_text_given_at_once_and_a_single_batch_pass(
    lm: VoiceTokenLM,
) -> None:
    ids = [(5 * i + 3) % 90 for i in range(23)]
    runs = {}
    for name, pieces in {
        "one by one": [lm.embed_text([i]) for i in ids],
        "uneven": [lm.embed_text(ids[:7]), lm.embed_text(ids[7:8]), lm.embed_text(ids[8:])],
        "at once": [lm.embed_text(ids)],
    }.items():
        trace: Trace = []
        with torch.no_grad():
            tokens = list(
                itertools.islice(
                    interleaved_tokens(lm, iter(pieces), LMPrompt(), greedy_sampler, trace=trace),
                    90,
                )
            )
        runs[name] = (tokens, trace)
    assert runs["one by one"] == runs["uneven"] == runs["at once"]
    tokens, trace = runs["at once"]
    # the same sequence in one teacher-forced pass predicts every generated token
    vectors = {
        "sos": lambda i: lm.sos[0],
        "task_id": lambda i: lm.task_id[0],
        "text": lambda i: lm.embed_text([ids[i]])[0],
        "speech": lambda i: lm.embed_speech([tokens[i]])[0],
    }
    with torch.no_grad():
        logits = lm(torch.stack([vectors[k](i) for k, i in trace])[None])[0]
    speech_at = [p for p, (k, _) in enumerate(trace) if k == "speech"]
    before = [p - 1 for p in speech_at]
    allowed = logits[before].clone()
    allowed[:, S:] = float("-inf")
    assert allowed.argmax(-1).tolist() == tokens[: len(before)]


def test_chunks_of_15_concatenate_to_the_token_stream() -> None:
    stream = list(range(47))
    chunks = list(chunked(iter(stream), 15))
    assert [len(c) for c in chunks] == [15, 15, 15, 2]
    assert list(itertools.chain.from_iterable(chunks)) == stream


def test_semantic_vectors_drive_the_lm_and_it_stops_on_end_of_speech(lm: VoiceTokenLM) -> None:
    torch.manual_seed(0)
    d_llm = 24
    projector = OutputProjector(OutputProjectorConfig(d_in=2 * d_llm, d_out=896)).eval()
    steps = [SemanticStep(torch.randn(d_llm), torch.randn(d_llm)) for _ in range(12)]
    eager_eos = VoiceTokenLM(lm.cfg, lm.llm["model"].config).eval()
    eager_eos.load_state_dict(lm.state_dict())
    with torch.no_grad():
        eager_eos.llm_decoder.bias[S] += 1e4  # end of speech as soon as it is allowed
    generator = SpeechTokenGenerator(eager_eos, tokenizer=None, sampler=greedy_sampler)
    with torch.no_grad():
        chunks = list(
            generator.from_semantic(iter(steps), projector, torch.randn(d_llm), torch.randn(d_llm))
        )
    tokens = list(itertools.chain.from_iterable(chunks))
    assert len(tokens) == 2 * 15  # two full blocks of 5 vectors; eos right after task_id
    assert all(0 <= t < S for t in tokens)
    trace: Trace = []
    query = projector(torch.randn(2 * d_llm))
    with torch.no_grad():
        list(
            interleaved_tokens(
                eager_eos,
                (projector(torch.cat([s.text_embedding, s.hidden]))[None] for s in steps),
                LMPrompt(query=query),
                greedy_sampler,
                eager_eos.sos[:0],
                trace,
            )
        )
    assert trace[:3] == [("sos", 0), ("query", 0), ("text", 0)]
    assert ("task_id", 0) in trace


def test_zero_shot_prompt_speech_is_interleaved_with_prompt_then_target_text(
    lm: VoiceTokenLM,
) -> None:
    prompt = LMPrompt(text_ids=[3, 4, 5, 6, 7, 8], speech_tokens=list(range(20)))
    trace: Trace = []
    with torch.no_grad():
        pieces = (lm.embed_text([t]) for t in range(10, 22))
        list(
            itertools.islice(
                interleaved_tokens(lm, pieces, prompt, greedy_sampler, trace=trace), 30
            )
        )
    assert trace[: 1 + 5 + 15 + 5 + 5] == (
        [("sos", 0)]
        + [("text", i) for i in range(5)]
        + [("speech", i) for i in range(15)]
        + [("text", i) for i in range(5, 10)]
        + [("speech", i) for i in range(15, 20)]
    )


def test_ras_sampler_follows_top_k_and_breaks_repetition() -> None:
    logits = torch.tensor([5.0, 4.9, 4.8, -10.0, -10.0])
    sampler = RasSampler(
        top_p=1.0, top_k=2, win_size=10, tau_r=1.1, generator=torch.Generator().manual_seed(0)
    )
    assert {sampler(logits, []) for _ in range(200)} == {0, 1}
    strict = RasSampler(
        top_p=0.8, top_k=1, win_size=10, tau_r=0.1, generator=torch.Generator().manual_seed(0)
    )
    picks = [strict(logits, [0]) for _ in range(300)]  # 0 already in the window: redrawn
    assert set(picks) >= {0, 1, 2}
    assert RasSampler.from_config(VoiceTokenLMConfig(), seed=3)(logits, []) in (0, 1, 2)


def test_long_text_is_cut_at_sentence_boundaries_and_synthesised_group_by_group(
    lm: VoiceTokenLM, tiny_cosyvoice_dir: Path
) -> None:
    _, tokenizer = load_voice_lm(tiny_cosyvoice_dir, allow_unpinned=True)
    sentence = "this is a sentence of some length, with a clause. "
    text = (sentence * 100)[:5000]  # 5,000 characters, 98 sentences
    groups = split_sentences(text, tokenizer)
    assert all(len(g) <= 80 for g in groups)
    ids = tokenizer(text.rstrip(), add_special_tokens=False)["input_ids"]
    assert list(itertools.chain.from_iterable(groups)) == ids  # nothing lost but the trailing space
    period = tokenizer(".", add_special_tokens=False)["input_ids"][0]
    assert all(g[-1] == period or g[-2] == period for g in groups[:-1])
    with recorded_decoders(lm) as decoders:
        stop_early = lambda logits, decoded: lm.cfg.eos_token if torch.isfinite(logits[S]) else 1  # noqa: E731
        generator = SpeechTokenGenerator(lm, tokenizer, stop_early)
        tokens = list(itertools.chain.from_iterable(generator.from_text(text)))
    assert len(decoders) == len(groups)  # one fresh cache per group: memory stays bounded
    assert max(d.length for d in decoders) <= 1 + 80 + 1 + 2 * 80
    assert len(tokens) == 2 * len(ids)  # min_token_text_ratio 2, then eos


def test_empty_text_is_refused(lm: VoiceTokenLM) -> None:
    generator = SpeechTokenGenerator(lm, tokenizer=None, sampler=greedy_sampler)
    with pytest.raises(ConfigError, match="nothing to say: the text is empty"):
        next(generator.from_text("   \n"))


def test_folder_loads_in_the_release_layout(tiny_cosyvoice_dir: Path, lm: VoiceTokenLM) -> None:
    model, tokenizer = load_voice_lm(tiny_cosyvoice_dir, allow_unpinned=True)
    for name, tensor in lm.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor, msg=name)
    assert "<|endofprompt|>" in tokenizer.additional_special_tokens
    # buffers that no checkpoint holds (rotary frequencies) are computed, not left uninitialised
    for name, buffer in lm.named_buffers():
        torch.testing.assert_close(dict(model.named_buffers())[name], buffer, msg=name)
    with torch.no_grad():
        x = torch.randn(1, 12, 896)
        torch.testing.assert_close(model(x), lm(x))


def test_unpinned_llm_checkpoint_is_refused(tiny_cosyvoice_dir: Path) -> None:
    with pytest.raises(
        CheckpointError, match=r"the pinned CosyVoice2-0\.5B release has 2023316821"
    ):
        load_voice_lm(tiny_cosyvoice_dir)


def test_real_size_matches_the_release(fixtures_dir: Path) -> None:
    cfg = json.loads((fixtures_dir / "cosyvoice2_llm" / "config.json").read_text())
    with torch.device("meta"):
        model = VoiceTokenLM(
            VoiceTokenLMConfig(), Qwen2Config(**cfg["real_full_size"]["qwen2_config"])
        )
    state = model.state_dict()
    assert len(state) == 295
    unique = {id(p): p.numel() for p in model.parameters()}
    assert sum(unique.values()) == 505_803_812
    assert state["llm_decoder.weight"].shape == (6564, 896)


def test_llm_events_stream_into_speech_without_the_llms_end_token(lm: VoiceTokenLM) -> None:
    from minmo_core.llm.chat import TokenEvent

    ids = [(3 * i + 1) % 90 for i in range(12)]
    end = 95
    events = [TokenEvent(i, "x", None, None) for i in ids] + [TokenEvent(end, "", None, "stop")]
    generator = SpeechTokenGenerator(lm, tokenizer=None, sampler=greedy_sampler)
    embedded: list[int] = []
    original = lm.embed_text
    lm.embed_text = lambda token_ids: (embedded.extend(token_ids), original(token_ids))[1]
    try:
        with torch.no_grad():
            from_events = list(generator.from_llm(iter(events), {end}))
    finally:
        del lm.embed_text
    assert embedded == ids  # every text token reached the voice LM, the end token did not
    with torch.no_grad():
        assert from_events == list(generator.from_token_ids(iter(ids)))


def test_sentence_groups_end_at_sentences_read_lazily() -> None:
    from minmo_core.voice.speech_tokens import sentence_groups

    pieces = ["It", " costs", " 3", ".", "5", " euros", ".", " Good", "!", " And", " so", " on"]
    pulled: list[int] = []

    def source():
        for i in range(len(pieces)):
            pulled.append(i)
            yield i

    groups = []
    for group in sentence_groups(source(), pieces.__getitem__, min_tokens=2, max_tokens=100):
        groups.append([])
        for i in group:
            groups[-1].append(pieces[i])
            # nothing is read ahead of what was handed on, but for the token after a "."
            assert pulled[-1] <= i + (1 if pieces[i] == "." else 0)
    assert ["".join(g) for g in groups] == ["It costs 3.5 euros.", " Good!", " And so on"]
    cut = sentence_groups(iter(range(10)), lambda i: "x", min_tokens=2, max_tokens=4)
    assert [list(g) for g in cut] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_bi_streaming_restarts_at_sentence_ends_with_a_bounded_cache(
    lm: VoiceTokenLM, tiny_cosyvoice_dir: Path
) -> None:
    """A long streamed text: each sentence group is a fresh 5:15 session carrying the
    prompt (token for token what that group streamed alone gives), and the voice LM's cache
    never holds more than the prompt and one group."""
    from minmo_core.voice.speech_tokens import MAX_STREAM_TOKENS, sentence_groups

    _, tokenizer = load_voice_lm(tiny_cosyvoice_dir, allow_unpinned=True)
    text = "This is a sentence of some length, with a clause. " * 12 + "And the end"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    prompt = LMPrompt(tokenizer("a prompt", add_special_tokens=False)["input_ids"], [5] * 20)
    generator = SpeechTokenGenerator(lm, tokenizer, greedy_sampler)
    with recorded_decoders(lm) as decoders, torch.no_grad():
        streamed = list(itertools.chain.from_iterable(generator.from_token_ids(iter(ids), prompt)))
    groups = [list(g) for g in sentence_groups(iter(ids), generator.piece)]
    assert len(groups) > 3 and len(decoders) == len(groups)  # one fresh cache per group
    expected = []
    for group in groups:
        vectors = (lm.embed_text([i]) for i in group)
        with torch.no_grad():
            expected += list(interleaved_tokens(lm, vectors, prompt, greedy_sampler))
    assert streamed == expected
    bound = 2 + len(prompt.text_ids) + MAX_STREAM_TOKENS * (1 + lm.cfg.max_token_text_ratio) + 20
    assert max(d.length for d in decoders) <= bound
    assert max(d.length for d in decoders) < 3 * min(d.length for d in decoders[:-1])


def test_an_empty_text_streams_as_it_did_before_the_restarts(lm: VoiceTokenLM) -> None:
    generator = SpeechTokenGenerator(lm, tokenizer=None, sampler=greedy_sampler)
    with torch.no_grad():
        streamed = list(itertools.chain.from_iterable(generator.from_token_ids(iter([]))))
        alone = list(interleaved_tokens(lm, iter(()), LMPrompt(), greedy_sampler))
    assert streamed == alone and streamed  # one empty session, not silence


def test_the_semantic_path_restarts_at_sentence_ends_after_the_same_query(
    lm: VoiceTokenLM,
) -> None:
    """MinMo's path keeps a bounded cache too: each sentence group is a fresh session
    [sos][query] + its vectors, and an empty chunk marks where each group's speech ends."""
    torch.manual_seed(0)
    d_llm = 24
    projector = OutputProjector(OutputProjectorConfig(d_in=2 * d_llm, d_out=896)).eval()
    words = [" word"] * 21 + [" end."] + [" more"] * 21 + [" done."]
    steps = [SemanticStep(torch.randn(d_llm), torch.randn(d_llm), w) for w in words]
    generator = SpeechTokenGenerator(lm, tokenizer=None, sampler=greedy_sampler)
    sessions: list[int] = []
    real = lm.decoder

    def counting_decoder(*args, **kwargs):
        sessions.append(1)
        return real(*args, **kwargs)

    lm.decoder = counting_decoder
    try:
        with torch.no_grad():
            user, first = torch.randn(d_llm), torch.randn(d_llm)
            chunks = list(generator.from_semantic(iter(steps), projector, user, first))
            each = [
                list(generator.from_semantic(iter(part), projector, user, first))
                for part in (steps[:22], steps[22:])
            ]
    finally:
        del lm.decoder
    assert len(sessions) == 4  # two groups, then each group on its own
    ends = [i for i, chunk in enumerate(chunks) if not chunk]
    assert len(ends) == 2 and ends[-1] == len(chunks) - 1
    # each group speaks exactly what it would as a whole reply of its own
    assert chunks == each[0] + each[1]
