"""The duplex timeline: what the events draw (spans, decisions, barge-ins, latency gaps),
the engine's timings refining the gaps, a click on a turn showing its stage timings, and
painting at any size."""

from __future__ import annotations

import numpy as np
import pytest

from app.audio.events import BargeIn, BargeInConfirmed, FalseBargeIn, SpeechEnded, SpeechStarted
from app.gui.timeline import TimelineModel
from app.gui.widgets.timeline import DuplexTimeline
from minmo_core.engine.events import (
    AssistantAudio,
    EngineState,
    FinalTranscript,
    StateChanged,
    TurnEnded,
    TurnTimings,
    UserSpeechStarted,
    UserText,
)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def audio(turn: int, seconds: float, t: float) -> AssistantAudio:
    return AssistantAudio(turn_id=turn, t=t, audio=np.full(round(24000 * seconds), 0.1, np.float32),
                          start_sample=0, text_span=(0, 1))  # fmt: skip


def timings(turn: int, t: float, total: float, first_audio: float, **kw) -> TurnTimings:
    values = dict(first_text_s=0.2, first_speech_token_s=0.3, first_audio_s=first_audio,
                  total_s=total, llm_tokens=10, speech_tokens=40, d_llm_s=0.02, d_lm_s=0.01,
                  d_syn_s=0.005, engine_overhead_s=0.01)  # fmt: skip
    values.update(kw)
    return TurnTimings(turn_id=turn, t=t, **values)


def spoken_turn(model: TimelineModel, clock: Clock) -> None:
    """The user speaks 1.5 s, the turn is taken, the reply plays 2 s and is cut after 1 s."""
    model.feed(SpeechStarted(time=0.0), clock.t)
    model.feed(UserSpeechStarted(turn_id=1, t=clock.t, at=0.0), clock.t)
    clock.t += 1.5
    model.feed(SpeechEnded(time=1.5, duration=1.5), clock.t)
    clock.t += 0.3
    model.feed(StateChanged(turn_id=1, t=clock.t, state=EngineState.THINKING), clock.t)
    model.feed(FinalTranscript(turn_id=1, t=clock.t, text="hi", language="en", emotion=None,
                               event=None), clock.t)  # fmt: skip
    clock.t += 0.4
    model.feed(audio(1, 1.0, clock.t), clock.t)  # first audio 0.7 s after the end of speech
    model.feed(audio(1, 1.0, clock.t + 0.05), clock.t + 0.05)  # queued behind the first


def test_a_spoken_turn_draws_speech_a_decision_and_the_latency_gap() -> None:
    clock, model = Clock(), TimelineModel()
    spoken_turn(model, clock)
    (user,) = model.user
    assert user.end - user.start == pytest.approx(1.5) and user.turn_id == 1
    (reply,) = model.assistant  # one span: the second chunk queued behind the first
    assert reply.end - reply.start == pytest.approx(2.0)
    assert model.gaps[1].seconds == pytest.approx(0.7)
    assert [m.kind for m in model.markers] == ["decision"]


def test_a_barge_in_cuts_the_reply_where_it_was_and_a_false_one_is_marked() -> None:
    clock, model = Clock(), TimelineModel()
    spoken_turn(model, clock)
    started = model.assistant[0].start
    clock.t += 0.5
    model.feed(BargeIn(time=0.0, speech_onset=0.0), clock.t)
    assert model.assistant[0].end == pytest.approx(clock.t)  # cut at once, not at 2 s
    clock.t += 0.8
    model.feed(FalseBargeIn(time=0.0), clock.t)
    model.feed(audio(1, 0.5, clock.t), clock.t)  # the rest plays again
    clock.t += 0.2
    model.feed(BargeIn(time=0.0, speech_onset=0.0), clock.t)
    model.feed(BargeInConfirmed(time=0.0), clock.t)
    model.feed(TurnEnded(turn_id=1, t=clock.t, reply_text="a b", heard_text="a",
                         interrupted=True), clock.t)  # fmt: skip
    kinds = [m.kind for m in model.markers]
    assert kinds == ["decision", "barge-in", "false barge-in", "barge-in", "cut"]
    assert model.assistant[0].start == started and model.assistant[-1].end == clock.t


def test_a_barge_in_that_overtakes_the_replys_audio_events_still_ends_that_reply() -> None:
    """The engine's events cross threads: the window can take the barge-in before the first
    AssistantAudio of the reply it cuts. The cut still ends that reply, so its later chunks
    draw nothing past the cut."""
    clock, model = Clock(), TimelineModel()
    model.feed(StateChanged(turn_id=1, t=clock.t, state=EngineState.SPEAKING), clock.t)
    model.feed(BargeIn(time=0.0, speech_onset=0.0), clock.t)
    model.feed(audio(1, 1.0, clock.t), clock.t)  # queued before the barge-in, shown after it
    clock.t += 0.8
    model.feed(BargeInConfirmed(time=0.0), clock.t)
    cut_at = clock.t
    clock.t += 0.1
    model.feed(audio(1, 0.5, clock.t), clock.t)  # a chunk made just before the engine stopped
    assert all(span.end <= cut_at for span in model.assistant if span.turn_id == 1)
    assert [m.turn_id for m in model.markers if m.kind == "cut"] == [1]


def test_a_barge_in_that_overtakes_even_the_speaking_state_is_given_to_its_turn() -> None:
    """The window can take a barge-in and its confirmation before any of the reply's events
    (the speaking state, its audio): the cut names no turn yet, and the reply's audio then
    arrives as if it played after it. When the reply's end (interrupted) arrives, the
    markers become that turn's and nothing of it is drawn past the barge-in."""
    clock, model = Clock(), TimelineModel()
    model.feed(BargeIn(time=0.0, speech_onset=0.0), clock.t)
    barged = clock.t
    clock.t += 0.8
    model.feed(BargeInConfirmed(time=0.0), clock.t)
    clock.t += 0.05
    model.feed(StateChanged(turn_id=1, t=clock.t, state=EngineState.SPEAKING), clock.t)
    model.feed(audio(1, 1.0, clock.t), clock.t)  # queued before the barge-in, shown after it
    clock.t += 0.1
    model.feed(TurnEnded(turn_id=1, t=clock.t, reply_text="a b", heard_text="a",
                         interrupted=True), clock.t)  # fmt: skip
    assert all(span.end <= barged for span in model.assistant if span.turn_id == 1)
    assert [(m.kind, m.turn_id) for m in model.markers] == [("barge-in", 1), ("cut", 1)]
    model.feed(audio(1, 0.5, clock.t), clock.t)  # a last chunk: the turn has ended
    assert all(span.end <= barged for span in model.assistant if span.turn_id == 1)


def test_the_engine_timings_place_the_decision_and_the_gap_at_their_true_times() -> None:
    clock, model = Clock(), TimelineModel()
    spoken_turn(model, clock)
    end_of_speech = model.user[0].end
    clock.t += 3.0
    done = timings(1, clock.t, clock.t - end_of_speech, 0.65, policy="smart-turn",
                   policy_wait_s=0.25, speculative=True, transcribe_s=0.05)  # fmt: skip
    model.feed(done, clock.t)
    assert model.gaps[1].start == pytest.approx(end_of_speech)
    assert model.gaps[1].seconds == pytest.approx(0.65)
    (decision,) = [m for m in model.markers if m.kind == "decision"]
    assert decision.t == pytest.approx(end_of_speech + 0.25) and "smart-turn" in decision.label
    lines = model.stages[1].lines()
    assert any("first audio: 650 ms" in line for line in lines)
    assert any("speculation: hit" in line for line in lines)


def test_a_typed_turn_has_its_gap_from_the_message(qtbot) -> None:
    clock, model = Clock(), TimelineModel()
    model.feed(UserText(turn_id=3, t=clock.t, text="hello"), clock.t)
    clock.t += 0.9
    model.feed(audio(3, 1.0, clock.t), clock.t)
    assert model.gaps[3].seconds == pytest.approx(0.9)
    assert model.turn_at(clock.t - 0.4) == 3 and model.turn_at(clock.t - 5) is None


def test_clicking_a_turn_shows_its_stage_timings(qtbot) -> None:
    clock = Clock()
    timeline = DuplexTimeline(clock)
    qtbot.addWidget(timeline)
    timeline.resize(900, 220)
    timeline.show()
    spoken_turn(timeline.model, clock)
    end_of_speech = timeline.model.user[0].end
    clock.t += 1.0
    timeline.feed(timings(1, clock.t, clock.t - end_of_speech, 0.7, policy="silence",
                          policy_wait_s=0.3, transcribe_s=0.04))  # fmt: skip
    canvas = timeline.canvas
    gap = timeline.model.gaps[1]
    x = canvas.x_of((gap.start + gap.end) / 2, clock.t)
    from PySide6.QtCore import QPoint, Qt

    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=QPoint(int(x), canvas.height() // 2))
    text = timeline.details.text()
    assert "Turn 1" in text and "first audio: 700 ms" in text and "d_llm 20.0 ms" in text
    assert "turn taken (silence): 300 ms" in text
    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=QPoint(90, 10))  # empty: no change
    assert "Turn 1" in timeline.details.text()
    from app.gui.widgets.timeline import USER

    image = timeline.grab().toImage()  # it paints: the selected turn's speech, darker
    user_lane, _ = canvas.lanes()
    x_user = int(canvas.x_of(timeline.model.user[0].start + 0.5, clock.t))
    pixel = image.pixelColor(x_user, int(user_lane.center().y()))
    assert pixel.name() == USER.darker(130).name()
    canvas.setFocus()
    qtbot.keyClick(canvas, Qt.Key.Key_Minus)  # zoom out from the keyboard
    assert canvas.window_s == pytest.approx(25.0)


def test_a_long_conversation_keeps_the_model_bounded() -> None:
    clock, model = Clock(), TimelineModel(horizon_s=60.0)
    for turn in range(1, 400):
        model.feed(SpeechStarted(time=0.0), clock.t)
        clock.t += 1.0
        model.feed(SpeechEnded(time=0.0, duration=1.0), clock.t)
        model.feed(UserText(turn_id=turn, t=clock.t, text="x"), clock.t)
        clock.t += 0.5
        model.feed(audio(turn, 1.0, clock.t), clock.t)
        clock.t += 1.5
    assert len(model.user) < 100 and len(model.assistant) < 100 and len(model.gaps) < 100
    assert len(model.markers) < 300
    assert len(model._user_turn_end) < 100 and len(model._ended) < 100


def test_a_turn_says_how_its_speculation_went() -> None:
    hit = TimelineModel()
    hit.feed(timings(1, 10.0, 2.0, 0.6, policy="smart-turn", speculative=True,
                     speculation_misses=2), 10.0)  # fmt: skip
    (line,) = [x for x in hit.stages[1].lines() if x.startswith("speculation")]
    assert line == (
        "speculation: hit (the reply began at the pause), after 2 misses (the user went on)"
    )
    missed = TimelineModel()
    missed.feed(timings(2, 10.0, 2.0, 0.9, policy="silence", speculation_misses=1), 10.0)
    assert "speculation: 1 miss (the user went on)" in missed.stages[2].lines()
