"""The conversation engine on tiny models: typed turns streamed to text and audio events,
barge-in at random points with the history cut to the heard text, memory within a budget,
failures that leave the engine serving, and no thread left behind."""

from __future__ import annotations

import functools
import itertools
import random
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from minmo_core.config import LLMConfig
from minmo_core.engine.engine import ConversationEngine, EngineSettings
from minmo_core.engine.events import (
    AssistantAudio,
    AssistantTextDelta,
    EngineError,
    EngineEvent,
    EngineState,
    StateChanged,
    TurnEnded,
    TurnTimings,
    UserSpeechStarted,
    UserText,
)
from minmo_core.engine.reply import AudioSpan, heard_text
from minmo_core.engine.speakable import speakable
from minmo_core.llm.chat import ChatLLM, TokenEvent
from minmo_core.voice.tts import SpeechSynthesizer

GREEDY = replace(LLMConfig.tiny(), temperature=0.0, repetition_penalty=1.0, max_new_tokens=16)
TIMEOUT = 120.0


class Recorder:
    def __init__(self) -> None:
        self.events: list[EngineEvent] = []
        self.lock = threading.Lock()

    def __call__(self, event: EngineEvent) -> None:
        with self.lock:
            self.events.append(event)

    def of(self, kind: type, turn_id: int | None = None) -> list:
        with self.lock:
            return [
                e
                for e in self.events
                if isinstance(e, kind) and (turn_id is None or e.turn_id == turn_id)
            ]


@pytest.fixture
def engine(qwen_dir: Path, voice: SpeechSynthesizer):
    recorder = Recorder()
    llm = ChatLLM(qwen_dir, GREEDY, device="cpu")
    engine = ConversationEngine(llm, voice, recorder, EngineSettings(seed=0)).start()
    engine.recorder = recorder
    yield engine
    engine.shutdown()


def test_a_reply_names_its_own_turn_when_the_user_starts_the_next(engine) -> None:
    """The user starting to speak mid-reply (as a barge-in does) opens the next turn; the
    reply's states still name the reply's turn (the timeline files barge-ins by them)."""
    began = threading.Event()
    stream = engine.llm.stream

    def after_the_user_began(*args, **kwargs):
        threading.Thread(target=lambda: (engine._heard_start(0.0), began.set())).start()
        assert began.wait(TIMEOUT)  # the next turn is in hand before any audio
        return stream(*args, **kwargs)

    engine.llm.stream = after_the_user_began
    turn = engine.send_text("Hello! How are you today?")
    assert engine.wait_idle(TIMEOUT)
    rec = engine.recorder
    (next_turn,) = [e.turn_id for e in rec.of(UserSpeechStarted)]
    assert next_turn == turn + 1
    states = [e.state for e in rec.of(StateChanged, turn)]
    assert states == [EngineState.THINKING, EngineState.SPEAKING, EngineState.IDLE]
    assert [e.state for e in rec.of(StateChanged, next_turn)] == [EngineState.USER_SPEAKING]


def engine_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "minmo-engine"]


def test_a_typed_turn_streams_text_and_audio_events_in_order(engine: ConversationEngine) -> None:
    turn = engine.send_text("Hello! How are you today?")
    assert engine.wait_idle(TIMEOUT)
    rec = engine.recorder
    events = [e for e in rec.events if e.turn_id == turn]
    kinds = [type(e).__name__ for e in events]
    assert kinds[:2] == ["UserText", "StateChanged"]
    assert kinds[-3:] == ["TurnTimings", "TurnEnded", "StateChanged"]
    states = [e.state for e in rec.of(StateChanged, turn)]
    assert states == [EngineState.THINKING, EngineState.SPEAKING, EngineState.IDLE]
    assert all(a.t <= b.t for a, b in itertools_pairs(events))  # monotonic timestamps

    (ended,) = rec.of(TurnEnded, turn)
    text = "".join(e.text for e in rec.of(AssistantTextDelta, turn))
    assert text == ended.reply_text == ended.heard_text and text.strip()
    assert not ended.interrupted
    audio = rec.of(AssistantAudio, turn)
    assert audio and all(a.audio.dtype == np.float32 for a in audio)
    starts = [a.start_sample for a in audio]
    assert starts == list(np.cumsum([0] + [a.audio.size for a in audio[:-1]]))
    spans = [a.text_span for a in audio]
    assert all(s[0] <= s[1] for s in spans) and spans[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in itertools_pairs(spans))  # they tile the text
    (timings,) = rec.of(TurnTimings, turn)
    assert 0 < timings.first_text_s <= timings.first_audio_s <= timings.total_s
    assert timings.speech_tokens > 0 and timings.d_lm_s > 0 and timings.d_syn_s > 0
    assert engine.messages()[-1] == {"role": "assistant", "content": text}


def itertools_pairs(items: list) -> list[tuple]:
    return list(itertools.pairwise(items))


SCRIPT = "The **capital** of France is [Paris](https://x.org) 🇫🇷. It has 2,100,000 people!"


def scripted(text: str, piece: int = 3):
    """A stand-in for ChatLLM.stream that writes ``text`` a few characters at a time."""

    def stream(messages, stop=None, seed=None, **kwargs):
        for i in range(0, len(text), piece):
            if stop is not None and stop():
                return
            yield TokenEvent(i, text[i : i + piece], None)
        yield TokenEvent(-1, "", None, "stop")

    return stream


def test_the_voice_lm_reads_the_speakable_form_of_the_reply(
    engine: ConversationEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    fed: list[int] = []
    tokens = engine.voice.tokens
    original = tokens.from_token_ids

    def capture(ids, prompt=None):
        def spy():
            for i in ids:
                fed.append(i)
                yield i

        return original(spy(), prompt)

    monkeypatch.setattr(tokens, "from_token_ids", capture)
    monkeypatch.setattr(engine.llm, "stream", scripted(SCRIPT))
    turn = engine.send_text("What is the capital of France?")
    assert engine.wait_idle(TIMEOUT)
    (ended,) = engine.recorder.of(TurnEnded, turn)
    assert ended.reply_text == SCRIPT  # the screen keeps the original
    spoken = speakable(SCRIPT)
    assert spoken == (
        "The capital of France is Paris. It has two million one hundred thousand people!"
    )
    # the ids fed equal those of the whole spoken form (pieces are tokenised as they come)
    assert fed == tokens.tokenizer(spoken, add_special_tokens=False)["input_ids"]


def test_interrupts_at_random_points_stop_within_a_chunk_and_keep_the_heard_text(
    engine: ConversationEngine,
) -> None:
    rng = random.Random(7)
    rec = engine.recorder
    for _ in range(20):
        after_chunks = rng.randint(1, 3)
        fraction = rng.random()
        interrupted_at: dict[str, float] = {}

        def watch(
            turn: int,
            after: int = after_chunks,
            fraction: float = fraction,
            at: dict = interrupted_at,
        ) -> None:
            deadline = time.monotonic() + TIMEOUT
            while time.monotonic() < deadline and not engine.recorder.of(TurnEnded, turn):
                audio = rec.of(AssistantAudio, turn)
                if len(audio) >= after:
                    done = sum(a.audio.size for a in audio[:-1])
                    played = done + int(fraction * audio[-1].audio.size)
                    at["t"] = time.monotonic()
                    at["played"] = played
                    engine.interrupt(played)
                    break
                time.sleep(0.001)

        turn = engine.send_text("Please tell me a long story about the sea.")
        watcher = threading.Thread(target=watch, args=(turn,))
        watcher.start()
        assert engine.wait_idle(TIMEOUT)
        watcher.join(TIMEOUT)
        assert not rec.of(EngineError, turn), rec.of(EngineError, turn)
        ended = rec.of(TurnEnded, turn)[-1]  # a cut after generation ends comes second
        if "t" not in interrupted_at:  # the reply ended before the chosen point
            assert not ended.interrupted
            continue
        late = [a for a in rec.of(AssistantAudio, turn) if a.t > interrupted_at["t"]]
        assert len(late) <= 1  # generation stopped within one chunk
        assert ended.interrupted
        audio = rec.of(AssistantAudio, turn)
        spans = [AudioSpan(a.start_sample, a.audio.size, a.text_span) for a in audio]
        expected = heard_text(ended.reply_text, spans, interrupted_at["played"])
        assert ended.heard_text == expected
        assert ended.reply_text.startswith(ended.heard_text)
        assert engine.turns[-1].heard == expected and engine.turns[-1].interrupted
        states = [e.state for e in rec.of(StateChanged, turn)]
        assert states[-2:] == [EngineState.INTERRUPTED, EngineState.IDLE]
    cut = len({e.turn_id for e in rec.of(TurnEnded) if e.interrupted})  # (history keeps recent)
    assert cut >= 15


def test_heard_text_counts_played_pieces_and_cuts_at_a_word_boundary() -> None:
    text = "The capital of France is Paris, a city."
    spans = [
        AudioSpan(0, 100, (0, 15)),
        AudioSpan(100, 100, (15, 31)),
        AudioSpan(200, 50, (31, 39)),
    ]
    assert heard_text(text, spans, 0) == ""
    assert heard_text(text, spans, 100) == "The capital of"
    assert heard_text(text, spans, 150) == "The capital of France"  # 15 + 8 = 23: inside "is"
    assert heard_text(text, spans, 250) == text
    assert heard_text("你好世界", [AudioSpan(0, 100, (0, 4))], 50) == "你好"


def test_reset_forgets_the_conversation(engine: ConversationEngine) -> None:
    engine.send_text("Hello!")
    assert engine.wait_idle(TIMEOUT)
    assert len(engine.turns) == 1
    engine.reset()
    assert engine.wait_idle(TIMEOUT)
    assert engine.turns == [] and len(engine.messages()) == 1


def test_the_oldest_turns_leave_the_prompt_first_but_never_the_system_prompt(
    engine: ConversationEngine,
) -> None:
    engine.set_settings(replace(engine.settings, speak=False, context_tokens=10_000))
    for i in range(3):
        engine.send_text(f"Message number {i}.")
    assert engine.wait_idle(TIMEOUT)
    full = len(engine.llm.encode(engine.messages("Last one.")))
    engine.set_settings(replace(engine.settings, context_tokens=full - 1))
    turn = engine.send_text("Last one.")
    assert engine.wait_idle(TIMEOUT)
    assert not engine.recorder.of(EngineError, turn)
    users = [t.user for t in engine.turns]
    assert "Message number 0." not in users and users[-1] == "Last one."
    assert engine.messages()[0]["content"] == engine.settings.system_prompt
    engine.set_settings(replace(engine.settings, context_tokens=5))
    turn = engine.send_text("This cannot fit.")
    assert engine.wait_idle(TIMEOUT)
    (error,) = engine.recorder.of(EngineError, turn)
    assert "the message is too long" in error.message


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (RuntimeError("kernel exploded\nmore detail"), "the reply failed: RuntimeError: kernel"),
        (
            torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
            "the GPU ran out of memory during the reply (CUDA out of memory.",
        ),
    ],
)
def test_a_failing_turn_is_an_error_event_and_the_next_turn_works(
    engine: ConversationEngine, monkeypatch: pytest.MonkeyPatch, failure: Exception, message: str
) -> None:
    engine.send_text("First.")
    assert engine.wait_idle(TIMEOUT)
    before = list(engine.turns)
    settings = engine.settings
    original = engine.llm.stream

    def failing(*args, **kwargs):
        for i, event in enumerate(original(*args, **kwargs)):
            if i == 3:
                raise failure
            yield event

    monkeypatch.setattr(engine.llm, "stream", failing)
    turn = engine.send_text("This one breaks.")
    assert engine.wait_idle(TIMEOUT)
    (error,) = engine.recorder.of(EngineError, turn)
    assert error.message.startswith(message) and "\n" not in error.message
    assert engine.turns == before and engine.settings == settings
    assert engine.recorder.of(StateChanged, turn)[-1].state == EngineState.IDLE
    monkeypatch.setattr(engine.llm, "stream", original)
    turn = engine.send_text("And now?")
    assert engine.wait_idle(TIMEOUT)
    assert engine.recorder.of(TurnEnded, turn) and not engine.recorder.of(EngineError, turn)


def test_text_only_replies_when_speech_is_off(engine: ConversationEngine) -> None:
    engine.set_settings(replace(engine.settings, speak=False))
    turn = engine.send_text("Hi!")
    assert engine.wait_idle(TIMEOUT)
    assert engine.recorder.of(TurnEnded, turn) and not engine.recorder.of(AssistantAudio, turn)
    assert engine.recorder.of(UserText, turn)[0].text == "Hi!"


def test_an_empty_message_is_refused_at_once(engine: ConversationEngine) -> None:
    from minmo_core.errors import ConfigError

    with pytest.raises(ConfigError, match="nothing to send"):
        engine.send_text("   ")


def test_shutdown_mid_reply_leaves_no_thread(qwen_dir: Path, voice: SpeechSynthesizer) -> None:
    recorder = Recorder()
    engine = ConversationEngine(ChatLLM(qwen_dir, GREEDY, device="cpu"), voice, recorder).start()
    engine.send_text("Tell me a long story.")
    worker = engine._thread
    deadline = time.monotonic() + TIMEOUT
    while not recorder.of(AssistantTextDelta) and time.monotonic() < deadline:
        time.sleep(0.001)
    engine.shutdown()
    assert not worker.is_alive() and worker not in engine_threads()


def test_an_interrupt_after_the_reply_was_made_cuts_the_history_to_what_was_heard(
    engine: ConversationEngine,
) -> None:
    turn = engine.send_text("Please tell me a long story about the sea.")
    assert engine.wait_idle(TIMEOUT)
    rec = engine.recorder
    (whole,) = rec.of(TurnEnded, turn)
    audio = rec.of(AssistantAudio, turn)
    assert len(audio) >= 2 and not whole.interrupted
    played = audio[0].audio.size + audio[1].audio.size // 2  # playback was still going
    engine.interrupt(played)
    assert engine.wait_idle(TIMEOUT)
    _, cut = rec.of(TurnEnded, turn)
    spans = [AudioSpan(a.start_sample, a.audio.size, a.text_span) for a in audio]
    assert cut.interrupted and cut.heard_text == heard_text(whole.reply_text, spans, played)
    assert engine.turns[-1].heard == cut.heard_text and engine.turns[-1].interrupted
    assert engine.messages()[-1]["content"] == cut.heard_text
    engine.interrupt(played)  # a second cut of the same turn changes nothing
    assert engine.wait_idle(TIMEOUT)
    assert len(rec.of(TurnEnded, turn)) == 2


def test_smart_turn_is_the_default_only_where_turns_are_spoken(
    qwen_dir: Path, voice: SpeechSynthesizer, tiny_sensevoice_dir: Path
) -> None:
    from minmo_core.engine.turns import SilencePolicy, SmartTurnPolicy
    from minmo_core.understanding.sensevoice import SenseVoice

    llm = ChatLLM(qwen_dir, GREEDY, device="cpu")
    typed = ConversationEngine(llm, voice, Recorder())
    assert isinstance(typed.policy, SilencePolicy)  # no recogniser: nothing to judge
    ears = SenseVoice.from_folder(tiny_sensevoice_dir, allow_unpinned=True)
    spoken = ConversationEngine(llm, voice, Recorder(), sensevoice=ears)
    assert isinstance(spoken.policy, SmartTurnPolicy)


def test_a_stop_right_after_sending_stops_that_reply_and_not_the_next(
    engine: ConversationEngine,
) -> None:
    first = engine.send_text("Tell me a long story about the sea.")
    engine.interrupt()  # pressed before the worker started the reply, or just after
    assert engine.wait_idle(TIMEOUT)
    assert engine.recorder.of(TurnEnded, first)[-1].interrupted
    again = engine.send_text("And now?")
    assert engine.wait_idle(TIMEOUT)
    assert not engine.recorder.of(TurnEnded, again)[-1].interrupted


def test_the_engine_picks_the_chunk_schedule(
    qwen_dir: Path, voice: SpeechSynthesizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Growing chunks (15, 25, then 50 tokens) from the settings: the reply's audio comes
    in fewer, growing pieces; a schedule that does not exist is refused by name.

    The streams' clock stands still (rendering costs nothing, playback has every lead), so
    the sizes do not hang on this machine's speed: on a slow one, growing rightly stays at
    15. The lead rule itself is tested with a scripted clock in test_token2wav."""
    from minmo_core.engine.reply import VoiceSettings
    from minmo_core.errors import ConfigError

    monkeypatch.setattr(voice.t2w, "stream", functools.partial(voice.t2w.stream, clock=float))
    with pytest.raises(ConfigError, match="unknown chunk schedule 'huge'; choose one of"):
        VoiceSettings(chunk_schedule="huge")
    sizes = {}
    for schedule in ("fixed", "growing"):
        recorder = Recorder()
        llm = ChatLLM(qwen_dir, replace(GREEDY, max_new_tokens=40), device="cpu")
        settings = EngineSettings(seed=0, voice=VoiceSettings(chunk_schedule=schedule))
        engine = ConversationEngine(llm, voice, recorder, settings).start()
        try:
            engine.send_text("Tell me a story about the sea.")
            assert engine.wait_idle(TIMEOUT)
        finally:
            engine.shutdown()
        sizes[schedule] = [a.audio.size for a in recorder.of(AssistantAudio)]
    fixed, growing = sizes["fixed"], sizes["growing"]
    assert sum(fixed) == sum(growing) and len(growing) < len(fixed)
    assert growing[0] == fixed[0]  # the first packet is as early as ever
    assert max(growing) > max(fixed)  # later chunks are larger


def test_shutdown_drops_the_turns_still_queued(qwen_dir: Path, voice: SpeechSynthesizer) -> None:
    """A turn queued behind the running one (heard just before the window closed) is not
    answered: shutdown returns as soon as the running reply stops."""
    recorder = Recorder()
    llm = ChatLLM(qwen_dir, replace(GREEDY, max_new_tokens=200), device="cpu")
    engine = ConversationEngine(llm, voice, recorder, EngineSettings(seed=0)).start()
    first = engine.send_text("Tell me a long story.")
    queued = [engine.send_text(f"And then {i}?") for i in range(3)]
    deadline = time.monotonic() + TIMEOUT
    while not recorder.of(AssistantTextDelta, first) and time.monotonic() < deadline:
        time.sleep(0.01)
    engine.shutdown(timeout=TIMEOUT)
    assert not any(recorder.of(UserText, t) for t in queued)  # never started
    ended = recorder.of(TurnEnded, first)
    assert not ended or ended[-1].interrupted  # the running reply stopped, not finished
    engine.start()  # and it serves again after a restart
    turn = engine.send_text("Hello again.")
    assert engine.wait_idle(TIMEOUT) and recorder.of(TurnEnded, turn)
    engine.shutdown()


def test_settings_changed_one_after_another_all_land(engine: ConversationEngine) -> None:
    """A prompt change and a voice change queued back to back (the window applies both from
    one dialog): neither undoes the other, as a read-then-set of the whole settings would."""
    from dataclasses import replace

    engine.update_settings(lambda s: replace(s, system_prompt="Answer like a pirate."))
    engine.update_settings(lambda s: replace(s, voice=replace(s.voice, chunk_schedule="growing")))
    assert engine.wait_idle(TIMEOUT)
    assert engine.settings.system_prompt == "Answer like a pirate."
    assert engine.settings.voice.chunk_schedule == "growing"
