"""Start the window: a display check, the settings (a bad file is survived), the window,
and the models loading behind it. ``make run`` and ``minmo-assistant`` come here."""

from __future__ import annotations

import os
import sys

NO_DISPLAY = (
    "minmo-assistant: no display to open the window on (no DISPLAY or WAYLAND_DISPLAY); "
    "talk to it in the terminal with `minmo converse`, or set QT_QPA_PLATFORM=offscreen"
)


def has_display() -> bool:
    if os.environ.get("QT_QPA_PLATFORM"):
        return True
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True  # Windows and macOS always have one


def run(factory=None, quit_after_ms: int | None = None) -> int:
    if not has_display():
        print(NO_DISPLAY, file=sys.stderr)
        return 0  # not a failure: the terminal way is there
    import asyncio

    import PySide6  # noqa: F401  (before qasync, so it picks this binding)
    import qasync
    from PySide6.QtWidgets import QApplication

    from app.gui.session import apply_models_dir, default_factory, needs_setup
    from app.gui.settings import load_settings
    from app.gui.window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("MinMo Assistant")
    timers = collect_on_gui_thread()  # before any worker thread starts
    settings, notice = load_settings()
    apply_models_dir(settings)
    setup = needs_setup(settings)
    if factory is None and not setup:
        factory = default_factory(settings)
    window = MainWindow(factory, settings, notice, setup=setup, make_factory=default_factory)
    window.show()
    if quit_after_ms is not None:  # for `make run` checks: open, say so, then close
        from PySide6.QtCore import QTimer

        def opened() -> None:
            state = "visible" if window.isVisible() else "hidden"
            print(f"window {state} on {app.platformName()}: {window.windowTitle()}", flush=True)

        QTimer.singleShot(0, opened)
        QTimer.singleShot(quit_after_ms, window.close)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    closed = asyncio.Event()
    app.lastWindowClosed.connect(closed.set)
    with loop:
        loop.run_until_complete(closed.wait())
    for timer in timers:
        timer.stop()
    import gc

    gc.unfreeze()  # the models' objects, frozen after loading, are freed before exit
    gc.enable()
    gc.collect()
    return 0


def collect_on_gui_thread() -> list:
    """Python's cycle collector runs on whichever thread allocates when it triggers: a model
    loading or generating in a worker thread could then destroy Qt objects off the GUI
    thread (a crash). Automatic collection is turned off; this thread collects, often and
    young (every second), and everything every 30 s. Returns the timers (keep them)."""
    import gc

    from PySide6.QtCore import QTimer

    gc.disable()
    young = QTimer()
    young.timeout.connect(_collect_young)
    young.start(1000)
    old = QTimer()
    old.timeout.connect(gc.collect)
    old.start(30_000)
    return [young, old]


def _collect_young() -> None:
    import gc

    gc.collect(1)
