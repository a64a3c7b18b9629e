"""A real chat LLM (SmolLM2-135M-Instruct) answering, through the LLM wrapper, the command
line and the conversation engine, whose reply reaches the voice path as speech."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from app.cli import main
from minmo_core.config import LLMConfig
from minmo_core.engine.engine import ConversationEngine, EngineSettings
from minmo_core.engine.events import AssistantAudio, TurnEnded
from minmo_core.engine.speakable import speakable
from minmo_core.llm.chat import ChatLLM
from tests.test_engine import TIMEOUT, Recorder

pytestmark = pytest.mark.real_model

GREEDY = replace(LLMConfig(), temperature=0.0, repetition_penalty=1.0, max_new_tokens=24)
QUESTION = "What is the capital of France?"


def test_smollm2_answers_through_the_llm_wrapper(smollm2_dir: Path) -> None:
    llm = ChatLLM(smollm2_dir, GREEDY, device="cpu")
    reply = "".join(e.text for e in llm.stream([{"role": "user", "content": QUESTION}]))
    assert "Paris" in reply
    assert llm.last_stats.finish_reason == "stop"  # it ended its turn by itself


def test_smollm2_answers_on_the_command_line(
    smollm2_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["chat", "--llm", str(smollm2_dir), "--device", "cpu", "--temperature", "0"]
    assert main([*argv, "--system", "Answer in one sentence.", QUESTION]) == 0
    assert "Paris" in capsys.readouterr().out


def test_a_typed_turn_with_a_real_llm_is_answered_and_spoken(
    smollm2_dir: Path,
    voice,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fed: list[int] = []
    original = voice.tokens.from_token_ids

    def capture(ids, prompt=None):
        def spy():
            for i in ids:
                fed.append(i)
                yield i

        return original(spy(), prompt)

    monkeypatch.setattr(voice.tokens, "from_token_ids", capture)
    recorder = Recorder()
    llm = ChatLLM(smollm2_dir, GREEDY, device="cpu")
    engine = ConversationEngine(llm, voice, recorder, EngineSettings(seed=0)).start()
    try:
        turn = engine.send_text(QUESTION)
        assert engine.wait_idle(TIMEOUT)
    finally:
        engine.shutdown()
    (ended,) = recorder.of(TurnEnded, turn)
    assert "Paris" in ended.reply_text and not ended.interrupted
    # SmolLM2's tokenizer is not the voice LM's: the reply was re-tokenised for the voice,
    # piece by piece, into exactly the ids of its spoken form
    tokenizer = voice.tokens.tokenizer
    assert fed == tokenizer(speakable(ended.reply_text), add_special_tokens=False)["input_ids"]
    assert recorder.of(AssistantAudio, turn)


@pytest.mark.parametrize(
    "text",
    [
        "Hello , world ! It 's 3.5 km — don 't , won 't ; I 'm sure they 're ok . Right ?",
        "Spaces ' quoted ' and a trailing space , ",
        "你好 🙂 ok . 'm 's n't 've 're",
    ],
)
def test_a_tokenizer_that_cleans_up_spaces_streams_the_same_text(
    smollm2_dir: Path, text: str
) -> None:
    """SmolLM2's tokenizer removes spaces before punctuation when decoding: the streamed
    deltas (DecodeStream plus the clean-up, done incrementally) still concatenate to it."""
    from transformers import AutoTokenizer

    from minmo_core.llm.chat import IncrementalDecoder

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    assert tokenizer.clean_up_tokenization_spaces
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    decoder = IncrementalDecoder(tokenizer)
    deltas = [decoder.push(t, final=i == len(ids) - 1) for i, t in enumerate(ids)]
    assert "".join(deltas) == tokenizer.decode(ids, skip_special_tokens=True)
    assert len([d for d in deltas[:-1] if d]) >= 3  # it streamed, not all at the end
