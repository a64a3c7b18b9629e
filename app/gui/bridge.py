"""Engine events into the GUI thread: the engine calls ``on_event`` from its worker
threads, which emits a Qt signal; connected to widgets, it is delivered queued, on the GUI
thread, in order."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal


class EventBridge(QObject):
    event = Signal(object)

    def __call__(self, event: object) -> None:  # any thread
        self.event.emit(event)
