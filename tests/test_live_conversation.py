"""A live conversation through the real audio path: the fake sound device's microphone
carries the user's question, the engine hears it through the echo canceller and VAD, and its
spoken reply goes out through the speaker side of the same stream."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from app.audio.events import (
    AudioSettings,
    BargeIn,
    BargeInConfirmed,
    FalseBargeIn,
    SpeechEnded,
    SpeechStarted,
)
from app.audio.fake_device import FakeSoundDevice
from app.conversation import LiveConversation
from minmo_core.common.audio import read_audio
from minmo_core.engine.engine import ConversationEngine, EngineSettings
from minmo_core.engine.events import (
    AssistantAudio,
    FinalTranscript,
    TurnEnded,
    TurnTimings,
    UserAudio,
    UserSpeechStarted,
)
from minmo_core.engine.reply import AudioSpan, heard_text
from minmo_core.engine.turns import SilencePolicy
from minmo_core.llm.chat import ChatLLM
from minmo_core.understanding.sensevoice import SenseVoice
from tests.test_engine import GREEDY, TIMEOUT, Recorder


def test_a_spoken_question_through_the_audio_path_is_answered_aloud(
    qwen_dir: Path,
    voice,
    tiny_sensevoice_dir: Path,
    fixtures_dir: Path,
) -> None:
    question = read_audio(fixtures_dir / "audio" / "sensevoice_sample.wav", 16000)
    user = np.concatenate([np.zeros(8000, np.float32), question, np.zeros(16000 * 30, np.float32)])
    fake = FakeSoundDevice(input_rate=48000, output_rate=48000, near_end=user,
                           near_end_rate=16000, seed=0)  # fmt: skip
    ears = SenseVoice.from_folder(tiny_sensevoice_dir, allow_unpinned=True)
    recorder = Recorder()

    def engine(on_event):
        llm = ChatLLM(qwen_dir, GREEDY, device="cpu")
        return ConversationEngine(llm, voice, on_event, EngineSettings(seed=0), ears,
                                  SilencePolicy(0.5))  # fmt: skip

    live = LiveConversation(engine, recorder, AudioSettings(), backend=fake)
    live.start(threaded=False)
    try:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            fake.advance(0.01)
            live.stream.pump()
            if recorder.of(TurnEnded) and not live.stream.is_playing:
                break
            if recorder.of(FinalTranscript):
                time.sleep(0.002)  # let the worker speak: the device clock runs ahead
    finally:
        live.stop()
    assert recorder.of(SpeechStarted) and recorder.of(SpeechEnded)
    finals = recorder.of(FinalTranscript)
    assert finals and all(f.text for f in finals)  # (the VAD may split the question)
    ended = recorder.of(TurnEnded)
    assert ended and ended[-1].reply_text and not ended[-1].interrupted
    made = np.concatenate([a.audio for a in recorder.of(AssistantAudio)])
    # the speaker really played the reply: its loudest sound is the reply's, resampled
    speaker = np.concatenate([block for _, block in fake.played_blocks])
    assert made.size and np.abs(speaker).max() > 0.5 * np.abs(made).max()
    assert (
        abs(np.count_nonzero(np.abs(speaker) > 1e-4) / 2 - np.count_nonzero(np.abs(made) > 1e-4))
        < 0.1 * made.size
    )


def live_conversation(qwen_dir, voice, ears_dir, tokens: int, near=None):
    """The engine (tiny models, the silence rule) and the audio path on the fake device,
    16 kHz in and 24 kHz out, ``near`` the user's side: (conversation, recorder, fake)."""
    ears = SenseVoice.from_folder(ears_dir, allow_unpinned=True)
    fake = FakeSoundDevice(input_rate=16000, output_rate=24000, near_end=near,
                           near_end_rate=16000, seed=0)  # fmt: skip
    recorder = Recorder()

    def engine(on_event):
        llm = ChatLLM(qwen_dir, replace(GREEDY, max_new_tokens=tokens), device="cpu")
        return ConversationEngine(llm, voice, on_event, EngineSettings(seed=0), ears,
                                  SilencePolicy(0.5))  # fmt: skip

    live = LiveConversation(engine, recorder, AudioSettings(), backend=fake)
    live.start(threaded=False)
    return live, recorder, fake


def live_reply(qwen_dir, voice, ears_dir):
    """A typed question answered aloud through the fake device. Returns the conversation,
    its recorder, the fake device and the reply's turn id; the whole reply is queued and the
    test's clock decides what is played."""
    live, recorder, fake = live_conversation(qwen_dir, voice, ears_dir, tokens=30)
    turn = live.engine.send_text("Tell me a long story about the sea.")
    assert live.engine.wait_idle(TIMEOUT)
    return live, recorder, fake, turn


def advance(live: LiveConversation, fake: FakeSoundDevice, seconds: float) -> None:
    for _ in range(round(seconds / 0.01)):
        fake.advance(0.01)
        live.stream.pump()


def speaker_sound(fake: FakeSoundDevice, until: float = float("inf")) -> np.ndarray:
    """What the speaker played before ``until``, its silent gaps (underruns, the hold) left
    out."""
    played = np.concatenate([block for t, block in fake.played_blocks if t < until])
    return played[played != 0]


def test_a_false_barge_in_resumes_the_reply_where_it_stopped(
    qwen_dir: Path,
    voice,
    tiny_sensevoice_dir: Path,
) -> None:
    live, recorder, fake, turn = live_reply(qwen_dir, voice, tiny_sensevoice_dir)
    try:
        advance(live, fake, 2.0)
        # the audio path hears something (BargeInDetector: 100 ms of sound), then nothing
        live._audio_event(BargeIn(fake.now, fake.now - 0.1))
        assert live.held and not live.stream.is_playing  # silent at once
        held_from = fake.now
        advance(live, fake, 0.8)
        live._audio_event(FalseBargeIn(fake.now))
        resumed_at = fake.now
        advance(live, fake, 8.0)
        assert live.engine.wait_idle(TIMEOUT)
    finally:
        live.stop()
    silent = [b for t, b in fake.played_blocks if held_from + 0.05 < t < resumed_at]
    assert silent and not any(b.any() for b in silent)  # nothing played while held
    # afterwards the rest was played from where it stopped: the whole reply, nothing twice
    made = np.concatenate([a.audio for a in recorder.of(AssistantAudio, turn)])
    np.testing.assert_array_equal(speaker_sound(fake), made[made != 0])
    (ended,) = recorder.of(TurnEnded, turn)
    assert not ended.interrupted and live.engine.turns[-1].heard == ended.reply_text


def test_a_confirmed_barge_in_ends_the_reply_at_what_was_heard(
    qwen_dir: Path,
    voice,
    tiny_sensevoice_dir: Path,
) -> None:
    live, recorder, fake, turn = live_reply(qwen_dir, voice, tiny_sensevoice_dir)
    try:
        advance(live, fake, 2.0)
        live._audio_event(BargeIn(fake.now, fake.now - 0.1))
        n = live._held_at  # the reply's samples handed to the speaker by then
        advance(live, fake, 0.8)
        live._audio_event(BargeInConfirmed(fake.now))  # the user went on speaking
        assert live.engine.wait_idle(TIMEOUT)
        advance(live, fake, 3.0)
    finally:
        live.stop()
    made = recorder.of(AssistantAudio, turn)
    everything = np.concatenate([a.audio for a in made])
    assert 0 < n < everything.size
    heard = everything[:n]
    np.testing.assert_array_equal(speaker_sound(fake), heard[heard != 0])  # the rest: never
    ended = recorder.of(TurnEnded, turn)[-1]
    spans = [AudioSpan(a.start_sample, a.audio.size, a.text_span) for a in made]
    assert ended.interrupted
    assert ended.heard_text == heard_text(ended.reply_text, spans, n)
    assert live.engine.turns[-1].heard == ended.heard_text


def test_push_to_talk_answers_on_release_and_ignores_speech_without_the_key(
    qwen_dir: Path,
    voice,
    tiny_sensevoice_dir: Path,
    fixtures_dir: Path,
) -> None:
    question = read_audio(fixtures_dir / "audio" / "sensevoice_sample.wav", 16000)[: 16000 * 3]
    gap = np.zeros(8000, np.float32)
    # the user says it twice: first without the key (talking to someone else), then holding it
    user = np.concatenate([gap, question, gap, gap, question, np.zeros(16000 * 30, np.float32)])
    second = (3 * gap.size + question.size) / 16000  # where the second time begins
    live, recorder, fake = live_conversation(qwen_dir, voice, tiny_sensevoice_dir, 8, user)
    live.set_push_to_talk(True)
    try:
        advance(live, fake, second - 0.1)
        assert recorder.of(SpeechStarted)  # the VAD heard it (its spans still show) ...
        assert not recorder.of(UserSpeechStarted)  # ... but no turn began without the key
        live.talk_pressed()
        advance(live, fake, 0.1 + question.size / 16000)
        live.talk_released()
        released = fake.now
        advance(live, fake, 0.05)  # the turn is taken on the first frame after the release
        assert live.engine.wait_idle(TIMEOUT)
        advance(live, fake, 1.0)
    finally:
        live.stop()
    (started,) = recorder.of(UserSpeechStarted)
    assert abs(started.at - second) < 0.15
    (final,) = recorder.of(FinalTranscript)
    (timings,) = recorder.of(TurnTimings)
    assert final.text and timings.policy == "push-to-talk" and timings.policy_wait_s < 0.05
    (audio,) = recorder.of(UserAudio)  # what was heard: the second time, key down to key up
    assert abs(audio.audio.size / 16000 - (released - started.at)) < 0.25
    assert recorder.of(TurnEnded)


def test_in_push_to_talk_the_key_interrupts_and_the_voice_alone_does_not(
    qwen_dir: Path,
    voice,
    tiny_sensevoice_dir: Path,
) -> None:
    live, recorder, fake, turn = live_reply(qwen_dir, voice, tiny_sensevoice_dir)
    live.set_push_to_talk(True)
    try:
        advance(live, fake, 1.0)
        live._audio_event(BargeIn(fake.now, fake.now - 0.1))  # the voice alone: ignored
        assert not live.held and live.stream.is_playing
        advance(live, fake, 0.5)
        live.talk_pressed()  # the key: silent at once, the reply ends at what was heard
        assert not live.stream.is_playing
        assert live.engine.wait_idle(TIMEOUT)
        live.talk_released()
        advance(live, fake, 0.5)
        live.set_push_to_talk(False)  # back to hands-free: the VAD's policy again
        assert live.engine.policy.name == "silence"
    finally:
        live.stop()
    assert recorder.of(TurnEnded, turn)[-1].interrupted
    assert live.engine.turns[0].heard != live.engine.turns[0].reply
