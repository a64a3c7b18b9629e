"""``minmo-assistant --self-test``: proof that an install (a bundle, above all) works, with
no display, microphone, GPU or downloaded model.

1. every module of ``app`` and ``minmo_core`` imports (a module that needs an optional extra
   says so with MissingDependencyError and is listed, not failed);
2. the window opens (offscreen when there is no display);
3. one spoken turn runs through it: the real audio path (echo canceller, VAD) on the fake
   sound device, the tiny random-weight model stack (``app.bench.stack``) heard the user,
   answered and played the answer.

Settings and history go to a temporary folder, so the user's own are never touched. Each
step prints one line; the exit status is 0 when all pass, 1 otherwise.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from minmo_core.errors import MissingDependencyError

PACKAGES = ("minmo_core", "app")
TURN_TIMEOUT_S = 180.0
CARD_RATE = 48000  # the fake sound card's rate, both ways


def import_everything() -> tuple[int, list[str]]:
    """Import every module of PACKAGES: (how many imported, the optional ones skipped with
    their reason). Any other import error propagates."""
    imported, optional = 0, []
    for package in PACKAGES:
        root = importlib.import_module(package)
        names = [package] + [
            m.name
            for m in pkgutil.walk_packages(root.__path__, f"{package}.")
            if not m.name.endswith("__main__")  # running them starts a program
        ]
        for name in names:
            try:
                importlib.import_module(name)
            except MissingDependencyError as err:
                optional.append(f"{name} ({str(err).split(':', 1)[0]})")
                continue
            imported += 1
    return imported, optional


def spoken_turn(timeout_s: float = TURN_TIMEOUT_S) -> str:
    """The window, the audio path on the fake sound device and the tiny model stack: the
    user says something, the assistant answers aloud. Returns what happened in one line."""
    import numpy as np
    from PySide6.QtWidgets import QApplication

    from app.audio.aec import describe
    from app.audio.fake_device import FakeSoundDevice
    from app.bench.gui import fake_card_session
    from app.bench.models import speech_like_audio
    from app.gui.app import collect_on_gui_thread
    from app.gui.settings import Settings
    from app.gui.window import MainWindow

    app = QApplication.instance() or QApplication(["minmo-self-test"])
    near = np.concatenate([np.zeros(8000, np.float32), speech_like_audio(1.5, seed=0),
                           np.zeros(16000 * 60, np.float32)])  # fmt: skip
    fake = FakeSoundDevice(input_rate=CARD_RATE, output_rate=CARD_RATE, near_end=near,
                           near_end_rate=16000, seed=0)  # fmt: skip
    build, made = fake_card_session(fake, max_new_tokens=8)

    timers = collect_on_gui_thread()
    window = MainWindow(build, Settings())
    window.show()
    events: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while window.engine is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the tiny models did not load within {timeout_s:.0f} s")
            app.processEvents()
            time.sleep(0.005)
        window.bridge.event.connect(events.append)
        live = made["live"]
        kinds = lambda: {type(e).__name__ for e in events}  # noqa: E731
        while not {"FinalTranscript", "TurnEnded"} <= kinds() or live.stream.is_playing:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"no spoken turn within {timeout_s:.0f} s (events: {sorted(kinds())})"
                )
            fake.advance(0.01)
            live.stream.pump()
            app.processEvents()
        played = fake.played
        heard = " ".join(e.text for e in events if type(e).__name__ == "FinalTranscript")
        reply = "".join(e.text for e in events if type(e).__name__ == "AssistantTextDelta")
        sounding = np.count_nonzero(np.abs(played) > 1e-4) / CARD_RATE
        if sounding == 0:
            raise RuntimeError("the reply was never played on the (fake) speakers")
        return (
            f"heard {len(heard.split())} words, replied {len(reply)} characters, played "
            f"{sounding:.1f} s of it (window on {app.platformName()}, echo canceller "
            f"{describe(live.processor.canceller)})"
        )
    finally:
        window.close()
        for timer in timers:
            timer.stop()
        app.processEvents()
        made.clear()
        import gc

        gc.unfreeze()  # (the window froze the models' objects after loading)
        gc.enable()  # (collect_on_gui_thread switched automatic collection off)
        gc.collect()


def run_checks(say: Callable[[str], None] = print, debug: bool = False) -> int:
    """Run the steps in order, one line each; 0 when all pass. A failure is one line; with
    ``debug`` (``--debug`` or MINMO_DEBUG=1, as for the command line) its traceback too."""
    from app.gui.app import has_display

    if not has_display():
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as home:
        for name in ("MINMO_CONFIG_DIR", "MINMO_DATA_DIR"):
            os.environ[name] = str(Path(home) / name.lower())  # the user's files stay untouched
        steps: list[tuple[str, Callable[[], str]]] = [
            ("imports", _imports_line),
            ("window and spoken turn", spoken_turn),
        ]
        for name, step in steps:
            tick = time.perf_counter()
            try:
                line = step()
            except Exception as err:  # every failure is reported, then exit 1
                say(f"FAIL {name}: {type(err).__name__}: {err}")
                if debug:
                    traceback.print_exc(file=sys.stderr)
                else:
                    say("(run again with --debug for the traceback)")
                return 1
            say(f"ok   {name}: {line} ({time.perf_counter() - tick:.1f} s)")
    say(f"self-test passed in {time.perf_counter() - started:.1f} s")
    return 0


def _imports_line() -> str:
    imported, optional = import_everything()
    line = f"{imported} modules"
    if optional:
        line += f"; skipped, optional: {', '.join(optional)}"
    return line


__all__ = ["import_everything", "run_checks", "spoken_turn"]
