"""The remote LLM backend against a local OpenAI-compatible streaming server (127.0.0.1):
the same reply as the local model, spoken turns through it, and a dropped connection that
the engine survives."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from minmo_core.common.audio import read_audio
from minmo_core.config import LLMConfig
from minmo_core.engine.engine import ConversationEngine, EngineSettings
from minmo_core.engine.events import AssistantAudio, EngineError, FinalTranscript, TurnEnded
from minmo_core.engine.turns import SilencePolicy
from minmo_core.errors import ConfigError
from minmo_core.llm.chat import ChatLLM
from minmo_core.llm.remote import RemoteChatLLM, RemoteLLMError, RemoteLLMSettings
from minmo_core.understanding.sensevoice import SenseVoice
from tests.openai_server import OpenAIServer
from tests.test_engine import TIMEOUT, Recorder

GREEDY = replace(LLMConfig.tiny(), temperature=0.0, repetition_penalty=1.0, max_new_tokens=12)
HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}]


@pytest.fixture
def server(qwen_dir: Path):
    with OpenAIServer(ChatLLM(qwen_dir, GREEDY, device="cpu")) as server:
        yield server


def remote(server: OpenAIServer) -> RemoteChatLLM:
    return RemoteChatLLM(RemoteLLMSettings(server.url, "tiny-qwen", "key-123"), GREEDY)


def test_the_remote_reply_is_the_served_models_reply(server: OpenAIServer, qwen_dir: Path) -> None:
    local = "".join(e.text for e in ChatLLM(qwen_dir, GREEDY, device="cpu").stream(HELLO))
    events = list(remote(server).stream(HELLO))
    assert "".join(e.text for e in events) == local
    assert events[-1].finish_reason in ("stop", "length")
    request = server.requests[-1]
    assert request["model"] == "tiny-qwen" and request["stream"] is True
    assert request["messages"] == HELLO and request["max_tokens"] == 12


def test_a_spoken_turn_runs_through_the_remote_llm(
    server: OpenAIServer,
    voice,
    tiny_sensevoice_dir: Path,
    fixtures_dir: Path,
) -> None:
    recorder = Recorder()
    ears = SenseVoice.from_folder(tiny_sensevoice_dir, allow_unpinned=True)
    engine = ConversationEngine(
        remote(server), voice, recorder, EngineSettings(seed=0), ears, SilencePolicy()
    ).start()
    try:
        question = read_audio(fixtures_dir / "audio" / "sensevoice_sample.wav", 16000)
        turn = engine.send_audio(question)
        assert engine.wait_idle(TIMEOUT)
    finally:
        engine.shutdown()
    (final,) = recorder.of(FinalTranscript, turn)
    (ended,) = recorder.of(TurnEnded, turn)
    assert ended.reply_text and recorder.of(AssistantAudio, turn)
    assert server.requests[-1]["messages"][-1]["content"] == final.text


def test_a_dropped_connection_mid_reply_is_an_error_and_the_next_turn_works(
    server: OpenAIServer,
) -> None:
    recorder = Recorder()
    engine = ConversationEngine(
        remote(server), None, recorder, EngineSettings(speak=False), policy=SilencePolicy()
    ).start()
    try:
        server.drop_after = 3
        broken = engine.send_text("Hello!")
        assert engine.wait_idle(TIMEOUT)
        server.drop_after = None
        fine = engine.send_text("Hello again!")
        assert engine.wait_idle(TIMEOUT)
    finally:
        engine.shutdown()
    (error,) = recorder.of(EngineError, broken)
    assert error.message == (
        f"the LLM server at {server.url} closed the connection in the middle of a reply"
    )
    assert not recorder.of(TurnEnded, broken)
    assert recorder.of(TurnEnded, fine) and [t.user for t in engine.turns] == ["Hello again!"]


def test_a_refused_connection_and_an_http_error_name_the_server(server: OpenAIServer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nobody = RemoteChatLLM(RemoteLLMSettings(f"http://127.0.0.1:{port}/v1", "m"), GREEDY)
    with pytest.raises(RemoteLLMError, match=rf"cannot reach the LLM server at .*:{port}/v1"):
        list(nobody.stream(HELLO))
    server.fail_with = 503
    with pytest.raises(RemoteLLMError, match=r"answered HTTP 503"):
        list(remote(server).stream(HELLO))


def test_bad_remote_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="not an http"):
        RemoteChatLLM(RemoteLLMSettings("ftp://box/v1", "m"))
    with pytest.raises(ConfigError, match="served model's name"):
        RemoteChatLLM(RemoteLLMSettings("http://box/v1", ""))


def test_the_prompt_estimate_grows_with_the_history() -> None:
    llm = RemoteChatLLM(RemoteLLMSettings("http://box/v1", "m"))
    short = llm.prompt_tokens(HELLO)
    assert 0 < short < llm.prompt_tokens([*HELLO, {"role": "user", "content": "x" * 300}])
    assert np.isfinite(llm.context_limit)


def test_a_typed_conversation_through_a_server_from_the_command_line(
    server: OpenAIServer, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import sys

    from app.cli import main

    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello!\n"))
    argv = ["converse", "--text", "--no-voice", "--llm-url", server.url, "--llm-model", "tiny",
            "--temperature", "0", "--max-new-tokens", "12", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert capsys.readouterr().out.strip()
    assert server.requests[-1]["model"] == "tiny"
    assert main(["converse", "--text", "--llm-url", server.url]) == 2
    assert "served model's name" in capsys.readouterr().err
