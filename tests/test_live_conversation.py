"""A live conversation through the real audio path: the fake sound device's microphone
carries the user's question, the engine hears it through the echo canceller and VAD, and its
spoken reply goes out through the speaker side of the same stream."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from app.audio.events import AudioSettings, SpeechEnded, SpeechStarted
from app.audio.fake_device import FakeSoundDevice
from app.conversation import LiveConversation
from minmo_core.common.audio import read_audio
from minmo_core.engine.engine import ConversationEngine, EngineSettings
from minmo_core.engine.events import AssistantAudio, FinalTranscript, TurnEnded
from minmo_core.engine.turns import SilencePolicy
from minmo_core.llm.chat import ChatLLM
from minmo_core.understanding.sensevoice import SenseVoice
from tests.test_engine import GREEDY, TIMEOUT, Recorder, qwen_dir, voice  # noqa: F401


def test_a_spoken_question_through_the_audio_path_is_answered_aloud(
    qwen_dir: Path,  # noqa: F811
    voice,  # noqa: F811
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
