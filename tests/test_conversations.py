"""Scripted spoken conversations, fake microphone frames in and audio chunks out, in both
modes: the user barges in at 20 random points, and every time generation stops within one
chunk, nothing made after the interrupt is played, the history keeps exactly the heard text,
and no thread is left behind."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from minmo_core.engine.engine import ConversationEngine, EngineSettings
from minmo_core.engine.events import (
    AssistantAudio,
    EngineError,
    EngineState,
    StateChanged,
    TurnEnded,
    UserSpeechStarted,
)
from minmo_core.engine.reply import AudioSpan, heard_text
from minmo_core.engine.turns import SilencePolicy
from minmo_core.llm.adapters import load_adapters
from minmo_core.llm.chat import ChatLLM
from tests.test_engine import GREEDY, TIMEOUT, Recorder
from tests.test_engine_speech import Mic

BARGE_INS = 20


def wait_for(condition, timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.001)
    return False


@pytest.mark.parametrize("mode", ["composed", "aligned"])
def test_a_spoken_conversation_with_barge_ins_at_random_points(
    mode: str,
    qwen_dir: Path,
    voice,
    sensevoice,
    adapters_dir: Path,
    clip: np.ndarray,
) -> None:
    threads_before = set(threading.enumerate())
    rec = Recorder()
    llm = ChatLLM(qwen_dir, replace(GREEDY, max_new_tokens=24), device="cpu")
    adapters = load_adapters(adapters_dir) if mode == "aligned" else None
    engine = ConversationEngine(
        llm, voice, rec, EngineSettings(seed=0), sensevoice, SilencePolicy(0.3), adapters
    ).start()
    rng = random.Random(11 if mode == "composed" else 12)
    mic = Mic(engine)
    cut = 0
    try:
        for _ in range(BARGE_INS):
            start = rng.randrange(0, clip.size - 16000)
            mic.audio(clip[start : start + rng.randrange(8000, 16000)])
            mic.silence(0.35)  # the policy takes the turn
            turn = rec.of(UserSpeechStarted)[-1].turn_id
            after, fraction = rng.randint(1, 3), rng.random()
            assert wait_for(
                lambda turn=turn, after=after: (
                    len(rec.of(AssistantAudio, turn)) >= after
                    or rec.of(TurnEnded, turn)
                    or rec.of(EngineError, turn)
                )
            )
            assert not rec.of(EngineError), rec.of(EngineError)
            audio = rec.of(AssistantAudio, turn)
            if rec.of(TurnEnded, turn) and len(audio) < after:
                continue  # the reply ended before the chosen point
            # the audio side played part of the last chunk it had, then heard the user
            played = sum(a.audio.size for a in audio[:-1]) + int(fraction * audio[-1].audio.size)
            interrupted_at = time.monotonic()
            engine.interrupt(played)
            assert engine.wait_idle(TIMEOUT)
            late = [a for a in rec.of(AssistantAudio, turn) if a.t > interrupted_at]
            assert len(late) <= 1  # generation stopped within one chunk
            ended = rec.of(TurnEnded, turn)[-1]  # a cut after generation ends comes second
            made = rec.of(AssistantAudio, turn)
            spans = [AudioSpan(a.start_sample, a.audio.size, a.text_span) for a in made]
            expected = heard_text(ended.reply_text, spans, played)
            if played >= sum(a.audio.size for a in made):
                assert ended.heard_text == ended.reply_text  # everything had been heard
                continue
            cut += 1
            assert ended.interrupted and ended.heard_text == expected
            assert engine.turns[-1].heard == expected and engine.turns[-1].interrupted
            states = [e.state for e in rec.of(StateChanged, turn)]
            assert states[-2:] == [EngineState.INTERRUPTED, EngineState.IDLE]
            # the next prompt carries exactly what was heard
            assert engine.messages()[-1] == {"role": "assistant", "content": expected}
    finally:
        engine.shutdown()
    print(f"{mode}: {cut} of {BARGE_INS} barge-ins cut the reply short")
    assert cut >= 15
    assert wait_for(lambda: set(threading.enumerate()) <= threads_before, 10)
