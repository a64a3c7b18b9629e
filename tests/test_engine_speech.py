"""Spoken turns: frames and VAD edges in, from the audio thread; transcripts, the policy's
decision and the reply out."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from minmo_core.engine.engine import ConversationEngine, EngineSettings, user_message
from minmo_core.engine.events import (
    AssistantAudio,
    EngineState,
    FinalTranscript,
    PartialTranscript,
    StateChanged,
    TurnEnded,
    TurnTimings,
    UserSpeechStarted,
)
from minmo_core.engine.turns import SilencePolicy
from minmo_core.llm.chat import ChatLLM
from minmo_core.understanding.sensevoice import SenseVoice
from minmo_core.understanding.transcript import RichTranscript
from tests.test_engine import GREEDY, TIMEOUT, Recorder

FRAME = 160  # 10 ms at 16 kHz


@pytest.fixture
def engine(qwen_dir: Path, voice, sensevoice: SenseVoice):
    recorder = Recorder()
    llm = ChatLLM(qwen_dir, GREEDY, device="cpu")
    engine = ConversationEngine(
        llm, voice, recorder, EngineSettings(seed=0), sensevoice, SilencePolicy(0.5)
    ).start()
    engine.recorder = recorder
    heard: list[np.ndarray] = []
    original = sensevoice.transcribe

    def spy(audio, *args, **kwargs):
        heard.append(audio)
        return original(audio, *args, **kwargs)

    engine.sensevoice = type("Spy", (), {"transcribe": staticmethod(spy)})()
    engine.heard = heard
    yield engine
    engine.shutdown()


class Mic:
    """Frames on a 10 ms clock, with the VAD's edges where the script says."""

    def __init__(self, engine: ConversationEngine) -> None:
        self.engine, self.t = engine, 0.0

    def silence(self, seconds: float) -> None:
        self.audio(np.zeros(int(seconds * 16000), np.float32), speech=False)

    def audio(self, samples: np.ndarray, speech: bool = True) -> None:
        if speech:
            self.engine.speech_started(self.t)
        for i in range(0, samples.size - FRAME + 1, FRAME):
            self.engine.push_frame(samples[i : i + FRAME], self.t)
            self.t += 0.01
        if speech:
            self.engine.speech_ended(self.t)


def test_a_spoken_turn_is_transcribed_and_answered(
    engine: ConversationEngine, clip: np.ndarray
) -> None:
    mic = Mic(engine)
    mic.silence(0.3)
    mic.audio(clip)
    mic.silence(0.49)
    assert not engine.recorder.of(FinalTranscript)  # not yet: the policy waits 0.5 s
    mic.silence(0.05)
    assert engine.wait_idle(TIMEOUT)
    rec = engine.recorder
    (started,) = rec.of(UserSpeechStarted)
    turn = started.turn_id
    (final,) = rec.of(FinalTranscript, turn)
    utterance = engine.heard[-1]
    # 0.2 s of padding before the speech, and the speech up to the VAD's end
    assert abs(utterance.size - (0.2 + clip.size / 16000) * 16000) <= 2 * FRAME
    assert final.text  # (the tiny recogniser's random weights give words but no tags)
    (ended,) = rec.of(TurnEnded, turn)
    assert ended.reply_text and not ended.interrupted
    tags = RichTranscript(final.text, final.language, final.emotion, final.event)
    assert engine.turns[-1].user == user_message(tags)
    states = [e.state for e in rec.of(StateChanged, turn)]
    assert states[0] == EngineState.USER_SPEAKING and states[-1] == EngineState.IDLE


def test_speech_resumed_before_the_policy_decides_is_one_turn(
    engine: ConversationEngine, clip: np.ndarray
) -> None:
    mic = Mic(engine)
    mic.audio(clip[:16000])
    mic.silence(0.3)  # a pause shorter than the policy's 0.5 s
    mic.audio(clip[16000:32000])
    mic.silence(0.6)
    assert engine.wait_idle(TIMEOUT)
    assert len(engine.recorder.of(UserSpeechStarted)) == 1
    assert len(engine.recorder.of(FinalTranscript)) == 1
    assert abs(engine.heard[-1].size - (1.0 + 0.3 + 1.0) * 16000) <= 2 * FRAME


def test_partial_transcripts_come_while_the_user_speaks(
    engine: ConversationEngine, clip: np.ndarray
) -> None:
    mic = Mic(engine)
    engine.speech_started(0.0)
    for i in range(0, clip.size - FRAME + 1, FRAME):
        engine.push_frame(clip[i : i + FRAME], mic.t)
        mic.t += 0.01
        time.sleep(0.0005)  # the worker keeps up with partial requests
    assert engine.wait_idle(TIMEOUT)
    partials = engine.recorder.of(PartialTranscript)
    assert partials and all(p.text for p in partials)
    assert not engine.recorder.of(FinalTranscript)  # the user has not stopped
    assert all(a.size <= 10 * 16000 for a in engine.heard)  # bounded cost per update


def test_the_users_emotion_and_background_sounds_reach_the_llm_as_context() -> None:
    plain = RichTranscript("hello there", "en", "neutral", "speech")
    assert user_message(plain) == "hello there"
    tagged = RichTranscript("I got the job", "en", "happy", "laughter")
    assert user_message(tagged) == (
        "I got the job (the user sounds happy; laughter in the background)"
    )


def test_a_user_who_resumes_after_a_tentative_pause_hears_nothing_and_leaves_no_history(
    engine: ConversationEngine, clip: np.ndarray
) -> None:
    dropped: list[int] = []
    resume = engine._heard_resume

    def spy() -> None:  # how much the speculative reply had made when it was dropped
        if engine._spec is not None:
            dropped.append(len(engine._spec.buffer))
        resume()

    engine.listener.on_resume = spy
    mic = Mic(engine)
    mic.audio(clip[:16000])
    deadline = time.monotonic() + TIMEOUT  # let the speculative reply run a while
    while time.monotonic() < deadline and (engine._spec is None or len(engine._spec.buffer) < 5):
        time.sleep(0.005)
    mic.silence(0.3)  # shorter than the policy's 0.5 s: the user goes on
    resumed_at = time.monotonic()
    mic.audio(clip[16000:32000])
    mic.silence(0.6)
    assert engine.wait_idle(TIMEOUT)
    rec = engine.recorder
    assert dropped and dropped[0] >= 5  # a reply was being made, and it was thrown away
    assert len(rec.of(FinalTranscript)) == 1 and len(rec.of(TurnEnded)) == 1
    assert all(e.t > resumed_at for e in rec.of(AssistantAudio))  # nothing from before
    assert len(engine.turns) == 1
    (timings,) = rec.of(TurnTimings)
    assert timings.speculative and timings.policy_wait_s >= 0.45
    assert timings.speculation_misses == len(dropped) == 1  # the dropped one is counted


def replies(engine: ConversationEngine, clip: np.ndarray) -> tuple[str, np.ndarray]:
    mic = Mic(engine)
    mic.audio(clip[:24000])
    time.sleep(0.3)  # real time passes during the pause: speculation gets its head start
    mic.silence(0.6)
    assert engine.wait_idle(TIMEOUT)
    (ended,) = engine.recorder.of(TurnEnded)
    audio = np.concatenate([a.audio for a in engine.recorder.of(AssistantAudio)])
    return ended.reply_text, audio


def test_a_confirmed_turn_says_the_same_with_and_without_speculation(
    engine: ConversationEngine,
    clip: np.ndarray,
    qwen_dir: Path,
    voice,
    sensevoice: SenseVoice,
) -> None:
    text_on, audio_on = replies(engine, clip)
    recorder = Recorder()
    plain = ConversationEngine(
        ChatLLM(qwen_dir, GREEDY, device="cpu"), voice, recorder,
        EngineSettings(seed=0, speculate=False), sensevoice, SilencePolicy(0.5),
    ).start()  # fmt: skip
    plain.recorder = recorder
    try:
        text_off, audio_off = replies(plain, clip)
    finally:
        plain.shutdown()
    assert text_on == text_off and np.array_equal(audio_on, audio_off)
    on, off = engine.recorder.of(TurnTimings)[0], recorder.of(TurnTimings)[0]
    assert on.speculative and not off.speculative


def test_the_turn_taking_policy_is_a_setting_reported_with_each_turn(
    engine: ConversationEngine, clip: np.ndarray
) -> None:
    mic = Mic(engine)
    mic.audio(clip[:16000])
    mic.silence(0.55)  # the engine's SilencePolicy(0.5) takes it
    assert engine.wait_idle(TIMEOUT)
    engine.set_policy(SilencePolicy(0.2, name="quick"))
    mic.audio(clip[16000:32000])
    mic.silence(0.25)  # long enough for the new policy only
    assert engine.wait_idle(TIMEOUT)
    first, second = engine.recorder.of(TurnTimings)
    assert (first.policy, second.policy) == ("silence", "quick")
    assert 0.5 <= first.policy_wait_s < 0.55 and 0.2 <= second.policy_wait_s < 0.25
