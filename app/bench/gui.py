"""The window's responsiveness during a spoken conversation: the real window (offscreen when
there is no display), the real audio path on the fake sound device played in real time by a
thread of its own (as a sound card's callbacks would be), the tiny random-weight model stack,
and the user talking over some replies (barge-in).

A 5 ms heartbeat timer on the GUI thread measures the event loop: each beat's lateness past
its due time is a stall (painting, event handling, collection: whatever held the thread).
The floor the issue sets: the longest stall at most 50 ms.
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from app.bench.record import Table, machine_name

BEAT_MS = 5
FLOOR_MS = 50.0


def user_script(turns: int, seed: int = 0) -> np.ndarray:
    """The user's side at 16 kHz: a 2 s utterance, then quiet while the reply plays; every
    other turn they talk over the reply 1.5 s into it (a barge-in)."""
    from app.bench.models import speech_like_audio

    parts = [np.zeros(8000, np.float32)]
    for turn in range(turns):
        parts.append(speech_like_audio(2.0, seed=seed + turn))
        if turn % 2:
            parts.append(np.zeros(int(16000 * 2.5), np.float32))
            parts.append(speech_like_audio(1.0, seed=seed + 100 + turn))  # over the reply
        parts.append(np.zeros(16000 * 5, np.float32))
    parts.append(np.zeros(16000 * 5, np.float32))
    return np.concatenate(parts)


class RealTimeSoundCard(threading.Thread):
    """Moves the fake device's clock with the wall clock, 10 ms at a time, and runs the
    stream's work, as the real callbacks and stream thread would."""

    def __init__(self, fake, live) -> None:
        super().__init__(daemon=True)
        self.fake, self.live = fake, live
        self.stop = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        ticks = 0
        while not self.stop.is_set():
            ticks += 1
            self.fake.advance(0.01)
            self.live.stream.pump()
            delay = start + ticks * 0.01 - time.monotonic()
            if delay > 0:
                time.sleep(delay)


def fake_card_session(fake, max_new_tokens: int):
    """The tiny random-weight model stack talking through the real audio path on ``fake``
    (a FakeSoundDevice), greedy, with a 0.4 s silence policy: (the window's session
    factory, a dict that holds the LiveConversation under "live" once the window built it).
    The bench and ``--self-test`` share it."""
    import torch

    from app.audio.events import AudioSettings
    from app.bench.stack import random_stack
    from app.conversation import LiveConversation
    from app.gui.session import Session
    from minmo_core.engine.engine import ConversationEngine, EngineSettings
    from minmo_core.engine.turns import SilencePolicy

    with tempfile.TemporaryDirectory() as tmp:
        llm, voice, ears = random_stack("tiny", torch.device("cpu"), Path(tmp),
                                        max_new_tokens=max_new_tokens)  # fmt: skip
    made: dict = {}

    def build(bridge):
        def engine(on_event):
            return ConversationEngine(llm, voice, on_event, EngineSettings(seed=0), ears,
                                      SilencePolicy(0.4))  # fmt: skip

        live = LiveConversation(engine, bridge, AudioSettings(), backend=fake)
        made["live"] = live.start(threaded=False)
        return Session(live.engine, live)

    return build, made


def bench_gui(turns: int = 4, seed: int = 0) -> Table:
    from app.gui.app import has_display

    if not has_display():
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6.QtCore import QEventLoop, Qt, QTimer
    from PySide6.QtWidgets import QApplication

    from app.audio.fake_device import FakeSoundDevice
    from app.gui.app import collect_on_gui_thread
    from app.gui.settings import Settings
    from app.gui.window import MainWindow
    from minmo_core.engine.speakable import warm_up

    app = QApplication.instance() or QApplication(["minmo-bench-gui"])
    near = user_script(turns, seed)
    fake = FakeSoundDevice(input_rate=48000, output_rate=48000, near_end=near,
                           near_end_rate=16000, seed=seed)  # fmt: skip
    build, made = fake_card_session(fake, max_new_tokens=40)
    warm_up()  # as the app's loader does

    import gc

    collecting = gc.isenabled()
    kept = os.environ.get("MINMO_DATA_DIR")
    with tempfile.TemporaryDirectory() as data:
        os.environ["MINMO_DATA_DIR"] = data  # the bench's history stays out of the user's
        timers = collect_on_gui_thread()
        window = MainWindow(build, Settings())
        window.show()
        deadline = time.monotonic() + 120
        while window.engine is None and time.monotonic() < deadline:
            app.processEvents()
            time.sleep(0.005)
        if window.engine is None:
            raise RuntimeError("the bench's tiny models did not load")
        events: list = []
        window.bridge.event.connect(events.append)
        card = RealTimeSoundCard(fake, made["live"])
        lateness: list[float] = []
        due = [time.monotonic() + BEAT_MS / 1000]

        def beat() -> None:
            now = time.monotonic()
            lateness.append(max(0.0, now - due[0]) * 1000)
            due[0] = now + BEAT_MS / 1000

        heart = QTimer()
        heart.setTimerType(Qt.TimerType.PreciseTimer)
        heart.timeout.connect(beat)
        length = near.size / 16000
        card.start()
        heart.start(BEAT_MS)
        loop = QEventLoop()  # the conversation runs in the event loop, as in the app
        QTimer.singleShot(round(length * 1000), loop.quit)
        loop.exec()
        heart.stop()
        card.stop.set()
        card.join(5)
        window.close()
        for timer in timers:
            timer.stop()
        app.processEvents()
    gc.unfreeze()  # (the window froze the models' objects after loading)
    if collecting:
        gc.enable()
    if kept is None:
        os.environ.pop("MINMO_DATA_DIR", None)
    else:
        os.environ["MINMO_DATA_DIR"] = kept
    barge = sum(type(e).__name__ == "BargeIn" for e in events)
    replies = len({e.turn_id for e in events if type(e).__name__ == "TurnEnded"})
    longest = max(lateness)
    p99 = float(np.percentile(lateness, 99))
    row = (
        dt.date.today().isoformat(),
        machine_name("cpu", None),
        app.platformName(),
        "tiny",
        f"{length:.0f}",
        str(replies),
        str(barge),
        str(len(events)),
        f"{statistics.median(lateness):.1f}",
        f"{p99:.1f}",
        f"{longest:.1f}",
        f"≤ {FLOOR_MS:.0f} ({'met' if longest <= FLOOR_MS else 'missed'})",
    )
    columns = ("date", "machine", "display", "preset", "conversation s", "replies", "barge-ins",
               "events", "median stall ms", "p99 stall ms", "longest stall ms",
               "floor (longest)")  # fmt: skip
    key = ("date", "machine", "display")
    return Table("## Window responsiveness (GUI event loop)", columns, [row], key)
