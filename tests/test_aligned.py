"""Aligned mode (MinMo proper) on tiny models: the adapters folder, the duplex predictor, and
spoken turns where the LLM hears encoder states through the input projector and the voice LM
reads the output projector's semantic vectors."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from minmo_core.config import DuplexPredictorConfig
from minmo_core.engine.engine import ConversationEngine, EngineSettings
from minmo_core.engine.events import (
    AssistantAudio,
    EngineError,
    FinalTranscript,
    StopSpeaking,
    TurnEnded,
    TurnTimings,
)
from minmo_core.engine.turns import DuplexPolicy, SilencePolicy
from minmo_core.errors import CheckpointError, ConfigError
from minmo_core.llm.adapters import load_adapters
from minmo_core.llm.chat import ChatLLM
from minmo_core.llm.duplex import DuplexAction, FullDuplexPredictor
from tests.test_engine import GREEDY, TIMEOUT, Recorder
from tests.test_engine_speech import Mic


def aligned_engine(qwen_dir, voice, sensevoice, adapters_dir, policy=None, **settings):
    recorder = Recorder()
    dtype = settings.pop("dtype", None)
    llm = ChatLLM(qwen_dir, replace(GREEDY, **settings.pop("llm", {})), "cpu", dtype)
    engine = ConversationEngine(
        llm,
        voice,
        recorder,
        EngineSettings(seed=0, **settings),
        sensevoice,
        policy,
        load_adapters(adapters_dir),
    ).start()
    engine.recorder = recorder
    return engine


def test_adapters_load_back_and_refuse_what_does_not_fit(
    adapters_dir: Path,
    tmp_path: Path,
    qwen_dir,
    voice,
    sensevoice,
) -> None:
    loaded = load_adapters(adapters_dir)
    again = load_adapters(adapters_dir)
    for a, b in zip(
        loaded.output_projector.parameters(), again.output_projector.parameters(), strict=True
    ):
        assert torch.equal(a, b)
    assert loaded.duplex is not None and loaded.lora is None
    # adapters for a wider LLM are refused, naming both widths
    wide = load_adapters(adapters_dir)
    with pytest.raises(CheckpointError, match=r"for a 64-wide LLM, this one is 128"):
        wide.check_fits(128, wide.encoder_width, wide.output_projector.cfg.d_out)
    # a truncated tensor file, a foreign manifest, no manifest: each named
    broken = tmp_path / "broken"
    broken.mkdir()
    for file in adapters_dir.iterdir():
        (broken / file.name).write_bytes(file.read_bytes())
    data = (broken / "output_projector.safetensors").read_bytes()
    (broken / "output_projector.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"output_projector\.safetensors is truncated"):
        load_adapters(broken)
    manifest = json.loads((adapters_dir / "adapters.json").read_text())
    (broken / "adapters.json").write_text(json.dumps({**manifest, "format": "other"}))
    with pytest.raises(CheckpointError, match="does not describe MinMo adapters"):
        load_adapters(broken)
    with pytest.raises(CheckpointError, match=r"has no adapters\.json"):
        load_adapters(tmp_path)


def test_the_duplex_predictor_judging_a_growing_stream_equals_judging_it_whole() -> None:
    torch.manual_seed(0)
    predictor = FullDuplexPredictor(DuplexPredictorConfig.tiny()).eval()
    hidden = torch.randn(2, 9, predictor.cfg.d_in)
    with torch.no_grad():
        whole = predictor(hidden, torch.tensor([9, 6]))  # (2, 9, 3), the second padded
    for t in range(1, 10):  # as the stream grows, one decision per new position
        action, probs = predictor.decide(hidden[0, :t])
        torch.testing.assert_close(probs, whole[0, t - 1])
        assert action == DuplexAction(int(whole[0, t - 1].argmax()))
    with torch.no_grad():
        alone = predictor(hidden[1:, :6])
    torch.testing.assert_close(alone[0], whole[1, :6])  # padding changes nothing
    torch.testing.assert_close(whole.sum(-1), torch.ones(2, 9))
    with torch.device("meta"):
        full = FullDuplexPredictor(DuplexPredictorConfig())
    assert 15e6 < full.num_parameters() < 19e6  # MinMo: 18M at the 7B width


def test_an_aligned_spoken_turn_hears_the_speech_and_speaks_semantic_vectors(
    qwen_dir,
    voice,
    sensevoice,
    adapters_dir,
    clip,
) -> None:
    engine = aligned_engine(qwen_dir, voice, sensevoice, adapters_dir, SilencePolicy(0.5))
    calls: dict[str, list] = {"stream": [], "semantic": []}
    stream, semantic = engine.llm.stream, voice.tokens.from_semantic

    def spy_stream(messages, **kwargs):
        calls["stream"].append((messages, kwargs))
        return stream(messages, **kwargs)

    def spy_semantic(*args, **kwargs):
        calls["semantic"].append(args)
        return semantic(*args, **kwargs)

    engine.llm.stream = spy_stream
    voice.tokens.from_semantic = spy_semantic
    try:
        mic = Mic(engine)
        mic.audio(clip)
        mic.silence(0.6)
        assert engine.wait_idle(TIMEOUT)
        turn = engine.send_text("And tomorrow?")  # a typed turn in aligned mode
        assert engine.wait_idle(TIMEOUT)
    finally:
        voice.tokens.from_semantic = semantic
        engine.shutdown()
    rec = engine.recorder
    assert not rec.of(EngineError), rec.of(EngineError)
    (final,) = rec.of(FinalTranscript)
    (messages, kwargs), (typed_messages, typed_kwargs) = calls["stream"]
    speech = kwargs["prefix_embeds"]
    # the LLM heard the user: the input projector's ceil(states / 2) positions, no words
    heard = clip[: clip.size // 160 * 160]  # the frames the microphone delivered
    states = sensevoice.hear(heard)[1]
    assert speech.shape == ((len(states) + 1) // 2, engine.llm.hidden_size)
    assert messages[-1]["content"] == "<|speech|>" and kwargs["return_hidden"]
    assert typed_kwargs.get("prefix_embeds") is None and typed_messages[-1]["content"] == (
        "And tomorrow?"
    )
    # the history keeps the transcript, so later turns read what was said
    assert typed_messages[-3]["content"] == engine.turns[0].user == final.text
    assert len(calls["semantic"]) == 2  # both replies spoke from semantic vectors
    for turn_id in (final.turn_id, turn):
        assert rec.of(AssistantAudio, turn_id)
        (timings,) = rec.of(TurnTimings, turn_id)
        assert timings.mode == "aligned"
    assert rec.of(TurnTimings, final.turn_id)[0].policy == "silence"
    assert rec.of(TurnTimings, turn)[0].policy == ""


def test_aligned_replies_are_repeatable_and_run_in_bfloat16(
    qwen_dir,
    voice,
    sensevoice,
    adapters_dir,
) -> None:
    texts = []
    for dtype in ("float32", "float32", "bfloat16"):
        engine = aligned_engine(
            qwen_dir, voice, sensevoice, adapters_dir, SilencePolicy(), dtype=getattr(torch, dtype)
        )
        try:
            turn = engine.send_text("Hello there!")
            assert engine.wait_idle(TIMEOUT)
        finally:
            engine.shutdown()
        assert not engine.recorder.of(EngineError), engine.recorder.of(EngineError)
        assert engine.llm.model.dtype == getattr(torch, dtype)
        assert engine.adapters.output_projector.proj.weight.dtype == getattr(torch, dtype)
        audio = np.concatenate([a.audio for a in engine.recorder.of(AssistantAudio, turn)])
        assert audio.size and np.isfinite(audio).all()
        texts.append(engine.recorder.of(TurnEnded, turn)[0].reply_text)
    assert texts[0] == texts[1]  # greedy: the same reply again


def biased(adapters_dir: Path, tmp_path: Path, action: DuplexAction) -> Path:
    """A copy of the adapters whose predictor always chooses ``action``."""
    adapters = load_adapters(adapters_dir)
    with torch.no_grad():
        adapters.duplex.head.bias.zero_()
        adapters.duplex.head.weight.zero_()
        adapters.duplex.head.bias[int(action)] = 10.0
    from minmo_core.llm.adapters import save_adapters

    return save_adapters(adapters, tmp_path / action.name)


@pytest.mark.parametrize("action", [DuplexAction.TAKE_TURN, DuplexAction.KEEP_LISTENING])
def test_the_duplex_predictor_decides_when_to_take_the_turn(
    qwen_dir,
    voice,
    sensevoice,
    adapters_dir,
    clip,
    tmp_path,
    action,
) -> None:
    folder = biased(adapters_dir, tmp_path, action)
    engine = aligned_engine(qwen_dir, voice, sensevoice, folder)
    try:
        assert isinstance(engine.policy, DuplexPolicy)  # the default with a predictor
        mic = Mic(engine)
        mic.audio(clip[:24000])
        taken_at = None
        for _ in range(250):  # up to 2.5 s of silence, with time for each judgement
            mic.silence(0.01)
            time.sleep(0.004)
            if engine.recorder.of(FinalTranscript) and taken_at is None:
                taken_at = mic.t
        assert engine.wait_idle(TIMEOUT)
    finally:
        engine.shutdown()
    (timings,) = engine.recorder.of(TurnTimings)
    assert timings.policy == "duplex"
    if action is DuplexAction.TAKE_TURN:
        assert timings.policy_wait_s < 1.0  # judged at the pause, well before the fallback
    else:
        assert timings.policy_wait_s >= engine.policy.max_wait_s - 0.01  # the fallback


def test_the_duplex_predictor_stops_the_assistant_when_the_user_takes_the_floor(
    qwen_dir,
    voice,
    sensevoice,
    adapters_dir,
    clip,
    tmp_path,
) -> None:
    folder = biased(adapters_dir, tmp_path, DuplexAction.STOP_SPEAKING)
    engine = aligned_engine(qwen_dir, voice, sensevoice, folder, llm={"max_new_tokens": 40})
    try:
        turn = engine.send_text("Tell me a long story about the sea.")
        deadline = time.monotonic() + TIMEOUT
        while not engine.recorder.of(AssistantAudio, turn) and time.monotonic() < deadline:
            time.sleep(0.002)
        mic = Mic(engine)
        mic.audio(clip[:8000])  # the user talks over the reply: partials ask the predictor
        assert engine.wait_idle(TIMEOUT)
        deadline = time.monotonic() + 10
        while not engine.recorder.of(StopSpeaking) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        engine.shutdown()
    (stop,) = engine.recorder.of(StopSpeaking)
    assert stop.turn_id == turn and "duplex" in stop.reason
    assert engine.recorder.of(TurnEnded, turn)[-1].interrupted


def test_aligned_mode_needs_the_local_llm_and_the_voice(
    qwen_dir,
    sensevoice,
    adapters_dir,
) -> None:
    llm = ChatLLM(qwen_dir, GREEDY, device="cpu")
    with pytest.raises(ConfigError, match="needs the voice encoder and the voice decoder"):
        ConversationEngine(llm, None, Recorder(), None, sensevoice, None,
                           load_adapters(adapters_dir))  # fmt: skip
