"""The main window: the conversation, the assistant's state, a box for typed messages, and a
stop button (Esc). It renders engine events (delivered on the GUI thread by the bridge) and
sends the engine commands; the models load in a worker thread."""

from __future__ import annotations

import math
from collections.abc import Callable

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.gui.bridge import EventBridge
from app.gui.history import HistoryWriter
from app.gui.settings import Settings
from app.gui.widgets.conversation import ConversationView
from app.gui.widgets.state import StateIndicator

EngineFactory = Callable[[EventBridge], object]  # builds and starts an engine (worker thread)


class _Loader(QObject):
    """Runs the engine factory (loading models) off the GUI thread."""

    ready = Signal(object)
    failed = Signal(str)
    finished = Signal()

    def __init__(self, factory: EngineFactory, bridge: EventBridge) -> None:
        super().__init__()
        self.factory, self.bridge = factory, bridge

    @Slot()
    def run(self) -> None:
        from minmo_core.errors import first_line

        try:
            self.ready.emit(self.factory(self.bridge))
        except Exception as err:  # any failure is a message in the window
            self.failed.emit(f"{type(err).__name__}: {first_line(err, 200)}")
        finally:
            self.finished.emit()


class MainWindow(QMainWindow):
    def __init__(
        self,
        factory: EngineFactory | None,
        settings: Settings | None = None,
        notice: str | None = None,
        setup_text: str | None = None,
    ) -> None:
        super().__init__()
        self.setWindowTitle("MinMo Assistant")
        self.resize(880, 640)
        self.settings = settings or Settings()
        self.engine = None
        self.bridge = EventBridge()
        self.bridge.event.connect(self.on_event)  # queued: engine threads -> GUI thread
        self.history = HistoryWriter()  # the conversation, saved as it happens
        self.bridge.event.connect(self.history.on_event)

        central = QWidget()
        column = QVBoxLayout(central)
        self.state = StateIndicator()
        column.addWidget(self.state)
        self.notice = QLabel()
        self.notice.setWordWrap(True)
        self.notice.setStyleSheet(
            "background: #fff4e5; border: 1px solid #f0c36d; padding: 6px; border-radius: 6px;"
        )
        self.notice.hide()
        column.addWidget(self.notice)
        self.setup = QLabel()
        self.setup.setWordWrap(True)
        self.setup.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.setup.hide()
        column.addWidget(self.setup)
        self.conversation = ConversationView()
        column.addWidget(self.conversation, 1)
        row = QHBoxLayout()
        self.entry = QLineEdit()
        self.entry.setPlaceholderText("Type a message and press Enter (or just talk)")
        self.entry.returnPressed.connect(self.send)
        self.send_button = QPushButton("Send")
        self.send_button.clicked.connect(self.send)
        self.stop_button = QPushButton("Stop (Esc)")
        self.stop_button.clicked.connect(self.stop)
        row.addWidget(self.entry, 1)
        row.addWidget(self.send_button)
        row.addWidget(self.stop_button)
        column.addLayout(row)
        self.setCentralWidget(central)
        self.set_ready(False)
        if notice:
            self.show_notice(notice)
        if setup_text:
            self.setup.setText(setup_text)
            self.setup.show()
        self._thread: QThread | None = None
        if factory is not None:
            self.load(factory)

    # -- loading --------------------------------------------------------------------------
    def load(self, factory: EngineFactory) -> None:
        self.state.label.setText("Loading models…")
        thread = QThread(self)
        loader = _Loader(factory, self.bridge)
        loader.moveToThread(thread)
        thread.started.connect(loader.run)
        loader.ready.connect(self.attach)
        loader.failed.connect(self.load_failed)
        loader.finished.connect(thread.quit)
        loader.finished.connect(loader.deleteLater)
        thread.finished.connect(thread.deleteLater)
        self._loader, self._thread = loader, thread
        thread.start()

    @Slot(object)
    def attach(self, engine) -> None:
        self.engine = engine
        self.set_ready(True)
        self.state.set_state("idle")

    @Slot(str)
    def load_failed(self, message: str) -> None:
        self.show_notice(f"The models could not be loaded: {message}")
        self.state.set_state("idle")

    def set_ready(self, ready: bool) -> None:
        for widget in (self.entry, self.send_button, self.stop_button):
            widget.setEnabled(ready)

    # -- commands -------------------------------------------------------------------------
    @Slot()
    def send(self) -> None:
        text = self.entry.text().strip()
        if not text or self.engine is None:
            return
        self.entry.clear()
        self.engine.send_text(text)

    @Slot()
    def stop(self) -> None:
        if self.engine is not None:
            self.engine.interrupt()

    def keyPressEvent(self, event) -> None:  # Esc anywhere in the window stops the reply
        if event.key() == Qt.Key.Key_Escape:
            self.stop()
            return
        super().keyPressEvent(event)

    def show_notice(self, text: str) -> None:
        self.notice.setText(text)
        self.notice.show()

    # -- engine events --------------------------------------------------------------------
    @Slot(object)
    def on_event(self, event) -> None:
        from minmo_core.engine import events as ev

        view = self.conversation
        if isinstance(event, ev.UserText):
            view.side(event.turn_id, "user").set_text(event.text)
        elif isinstance(event, ev.PartialTranscript):
            view.side(event.turn_id, "user").set_text(event.text, partial=True)
        elif isinstance(event, ev.FinalTranscript):
            user = view.side(event.turn_id, "user")
            user.set_text(event.text or "(no words)")
            user.set_tags(event.language, event.emotion, event.event)
        elif isinstance(event, ev.AssistantTextDelta):
            view.side(event.turn_id, "assistant").append(event.text)
        elif isinstance(event, ev.TurnEnded) and event.interrupted:
            view.side(event.turn_id, "assistant").cut(event.heard_text)
        elif isinstance(event, ev.StateChanged):
            self.state.set_state(str(event.state))
        elif isinstance(event, ev.EngineError):
            self.show_notice(event.message)
        elif type(event).__name__ == "Level":  # the audio path's clean microphone level
            self.state.set_level(self.state.mic, event.dbfs)
        elif isinstance(event, ev.AssistantAudio) and event.audio.size:
            rms = float((event.audio.astype("float64") ** 2).mean() ** 0.5)
            self.state.set_level(self.state.out, 20 * math.log10(max(rms, 1e-6)))

    def closeEvent(self, event) -> None:
        if self.engine is not None:
            shutdown = getattr(self.engine, "shutdown", None) or self.engine.stop
            shutdown()
            self.engine = None
        self.history.close()
        if self._thread is not None:
            try:
                self._thread.quit()
                self._thread.wait(5000)
            except RuntimeError:  # already deleted
                pass
        super().closeEvent(event)
