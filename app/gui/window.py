"""The main window: the conversation, the assistant's state with the level meters, the duplex
timeline, the style side panel, a box for typed messages, a stop button (Esc) and, in
push-to-talk mode, a talk button (Space). With no models it opens on the setup screen.

It renders engine and audio events (delivered on the GUI thread by the bridge) and sends
commands to the session; models load and run in worker threads, never here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

from PySide6.QtCore import QEvent, QObject, Qt, QThread, Signal, Slot
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QButtonGroup,
    QHBoxLayout,
    QLineEdit,
    QMainWindow,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSplitter,
    QStackedWidget,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from app.gui.assets import app_icon
from app.gui.bridge import EventBridge
from app.gui.history import HistoryWriter
from app.gui.settings import Settings, TalkMode, save_settings
from app.gui.widgets.conversation import ConversationView
from app.gui.widgets.notice import NoticeBar
from app.gui.widgets.state import StateIndicator
from app.gui.widgets.style import StylePanel
from app.gui.widgets.timeline import DuplexTimeline

EngineFactory = Callable[[EventBridge], object]  # builds and starts a session (worker thread)
RELOAD_FIELDS = ("input_device", "output_device", "device", "llm_dir", "llm_url", "llm_model",
                 "llm_backend", "precision", "echo_cancellation", "vad_sensitivity",
                 "bargein_sensitivity", "models_dir", "pack", "voice_release",
                 "voice_lm")  # fmt: skip


class _Loader(QObject):
    """Runs the engine factory (loading models) off the GUI thread."""

    ready = Signal(object)
    failed = Signal(str)
    finished = Signal()

    def __init__(self, factory: EngineFactory, bridge: EventBridge) -> None:
        super().__init__()
        self.factory, self.bridge = factory, bridge
        self._home = self.thread()  # the GUI thread

    @Slot()
    def run(self) -> None:
        from minmo_core.errors import first_line

        try:
            self.ready.emit(self.factory(self.bridge))
        except Exception as err:  # any failure is a message in the window
            self.failed.emit(f"{type(err).__name__}: {first_line(err, 200)}")
        finally:
            # back to the GUI thread before finishing, so it is deleted there: a Python
            # object destroyed on the worker takes the GIL while holding Qt's connection
            # locks, which can deadlock the GUI thread (seen once: stuck in QLabel.setText)
            self.moveToThread(self._home)
            self.finished.emit()


class MainWindow(QMainWindow):
    audio_failed = Signal(str)  # the history's writer thread could not save audio

    def __init__(
        self,
        factory: EngineFactory | None,
        settings: Settings | None = None,
        notice: str | None = None,
        setup: bool = False,
        make_factory: Callable[[Settings], EngineFactory] | None = None,
        backend=None,
    ) -> None:
        """``factory`` loads the models now (None: not yet); ``setup`` opens on the setup
        screen; ``make_factory`` builds a factory from settings (after setup, or a settings
        change that needs a reload); ``backend`` is the sound device module (tests: fake)."""
        super().__init__()
        self.setWindowTitle("MinMo Assistant")
        self.setWindowIcon(app_icon())
        self.resize(1180, 760)
        self.settings = settings or Settings()
        self.make_factory = make_factory
        self.backend = backend
        self.engine = None  # the Session, once loaded
        self.bridge = EventBridge()
        self.bridge.event.connect(self.on_event)  # queued: engine threads -> GUI thread
        self.audio_failed.connect(self.show_notice)
        self._new_history()
        self._thread: QThread | None = None
        self._talking = False
        self._dialogs: list = []
        self.setup_panel = None

        self._build_menus()
        self.pages = QStackedWidget()
        self.pages.addWidget(self._build_main())
        self.setCentralWidget(self.pages)
        self.set_ready(False)
        self._apply_mode(self.settings.talk_mode)
        self.style_panel.set_values(self._style_values())
        self.refresh_voices()
        if notice:
            self.show_notice(notice)
        if setup:
            self.show_setup()
        QApplication.instance().installEventFilter(self)  # Space anywhere: push-to-talk
        if factory is not None:
            self.load(factory)

    # -- building -------------------------------------------------------------------------
    def _build_menus(self) -> None:
        bar = self.menuBar()
        conversation = bar.addMenu("&Conversation")
        self._action(conversation, "&History…", self.open_history, "Ctrl+H")
        self._action(conversation, "&Export to Markdown…", self.export_markdown, "Ctrl+E")
        conversation.addSeparator()
        self._action(conversation, "&Settings…", self.open_settings, QKeySequence.Preferences)
        self._action(conversation, "&Quit", self.close, QKeySequence.Quit)
        voices = bar.addMenu("&Voices")
        self._action(voices, "&Clone a voice…", self.open_clone, "Ctrl+Shift+C")
        self._action(voices, "&Manage voices…", self.open_voices)
        view = bar.addMenu("&View")
        self.timeline_action = self._action(view, "Duplex &timeline", self._toggle_timeline, "F9")
        self.timeline_action.setCheckable(True)
        self.timeline_action.setChecked(True)
        self._action(view, "&Clear the conversation", self.clear_conversation)

    def _action(self, menu, text: str, slot, shortcut=None) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(slot)
        menu.addAction(action)
        return action

    def _build_main(self) -> QWidget:
        page = QWidget()
        column = QVBoxLayout(page)
        header = QHBoxLayout()
        self.state = StateIndicator()
        header.addWidget(self.state, 1)
        self.hands_free = QRadioButton("&Hands-free")
        self.push_to_talk = QRadioButton("Push-to-&talk")
        self.hands_free.setToolTip("Just talk; talk over the assistant to interrupt it")
        self.push_to_talk.setToolTip("Hold Space (or the talk button) while you speak")
        modes = QButtonGroup(self)
        for button in (self.hands_free, self.push_to_talk):
            modes.addButton(button)
            header.addWidget(button)
        self.hands_free.toggled.connect(self._mode_toggled)
        column.addLayout(header)
        self.loading = QProgressBar()
        self.loading.setTextVisible(True)
        self.loading.setAccessibleName("model loading progress")
        self.loading.hide()
        column.addWidget(self.loading)
        self.notice = NoticeBar()
        column.addWidget(self.notice)

        sides = QSplitter(Qt.Orientation.Horizontal)
        talk = QSplitter(Qt.Orientation.Vertical)
        self.conversation = ConversationView()
        talk.addWidget(self.conversation)
        self.timeline = DuplexTimeline()
        talk.addWidget(self.timeline)
        talk.setStretchFactor(0, 3)
        talk.setStretchFactor(1, 1)
        talk.setSizes([460, 190])
        sides.addWidget(talk)
        self.style_panel = StylePanel()
        self.style_panel.changed.connect(self.style_changed)
        self.style_panel.manage_voices.connect(self.open_voices)
        self.style_panel.voice.activated.connect(self._voice_picked)
        self.style_panel.setMinimumWidth(250)
        sides.addWidget(self.style_panel)
        sides.setStretchFactor(0, 1)
        sides.setSizes([880, 280])
        column.addWidget(sides, 1)

        row = QHBoxLayout()
        self.entry = QLineEdit()
        self.entry.setPlaceholderText("Type a message and press Enter (or just talk)")
        self.entry.setAccessibleName("message")
        self.entry.returnPressed.connect(self.send)
        self.send_button = QPushButton("Se&nd")
        self.send_button.clicked.connect(self.send)
        self.talk_button = QPushButton("Hold to talk (Space)")
        self.talk_button.setAccessibleName("hold to talk")
        self.talk_button.pressed.connect(self.talk_pressed)
        self.talk_button.released.connect(self.talk_released)
        self.stop_button = QPushButton("Stop (Esc)")
        self.stop_button.clicked.connect(self.stop)
        row.addWidget(self.entry, 1)
        for button in (self.send_button, self.talk_button, self.stop_button):
            row.addWidget(button)
        column.addLayout(row)
        return page

    # -- setup and loading ----------------------------------------------------------------
    def show_setup(self) -> None:
        """The first-run screen: the planner's pick, download with progress, or import."""
        from app.gui.widgets.setup import SetupPanel

        if self.setup_panel is None:
            self.setup_panel = SetupPanel()
            self.setup_panel.installed.connect(self.setup_done)
            self.setup_panel.setMaximumWidth(780)
            page = QWidget()  # the panel as a column in the middle of the window
            row = QHBoxLayout(page)
            row.setContentsMargins(24, 32, 24, 24)
            row.addStretch(1)
            column = QVBoxLayout()
            column.addWidget(self.setup_panel)
            column.addStretch(1)
            row.addLayout(column, 4)
            row.addStretch(1)
            self._setup_page = page
            self.pages.addWidget(page)
        self.pages.setCurrentWidget(self._setup_page)

    @Slot(str)
    def setup_done(self, pack: str) -> None:
        """A pack is installed: it is the one to load, and its voice the one that speaks."""
        from minmo_core.errors import MinMoError
        from minmo_core.manager.packs import pack as find_pack
        from minmo_core.manager.packs import voice_release_of

        try:
            voice = voice_release_of(find_pack(pack)) or self.settings.voice_release
        except MinMoError:  # (a pack this version does not know: the voice stays)
            voice = self.settings.voice_release
        self.settings = replace(self.settings, pack=pack, voice_release=voice)
        self._save()
        self.pages.setCurrentIndex(0)
        if self.make_factory is not None:
            self.load(self.make_factory(self.settings))

    def load(self, factory: EngineFactory) -> None:
        self.state.label.setText("Loading models…")
        self.loading.setRange(0, 0)  # busy until the first step is reported
        self.loading.setFormat("Loading models…")
        self.loading.show()
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
    def attach(self, session) -> None:
        old = getattr(self, "_carry_turns", None)
        if old and hasattr(session, "engine"):  # a reload keeps what was said
            session.engine.turns.extend(old)
        self._carry_turns = None
        self.engine = session
        self.style_panel.set_backend(getattr(session, "cosyvoice", None))
        import gc

        gc.collect(1)  # young garbage of the load (cheap) ...
        gc.freeze()  # ... and the models' objects out of every later collection (a full
        # collection over them takes a quarter of a second: a visible stall every 30 s)
        self.loading.hide()
        self.set_ready(True)
        self.state.set_state("listening" if getattr(session, "hands_free", False) else "idle")
        self._apply_mode(self.settings.talk_mode)
        if any(self._style_values().values()):
            self.style_changed(self.style_panel.values())

    @Slot(str)
    def load_failed(self, message: str) -> None:
        self.loading.hide()
        text = f"The models could not be loaded: {message}"
        self.show_notice(text, "Settings…", self.open_settings)
        self.state.set_state("idle")

    def set_ready(self, ready: bool) -> None:
        for widget in (self.entry, self.send_button, self.stop_button, self.talk_button):
            widget.setEnabled(ready)

    def reload(self) -> None:
        """Load again with the current settings (devices, models, precision changed); the
        conversation's history carries over into the new engine."""
        if self.make_factory is None:
            return
        if self.engine is not None:
            self._carry_turns = list(getattr(self.engine.engine, "turns", []))
            self.engine.shutdown()
            self.engine = None
        self.set_ready(False)
        self.load(self.make_factory(self.settings))

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

    @Slot()
    def talk_pressed(self) -> None:
        if self.engine is None or self._talking or not self.push_to_talk.isChecked():
            return
        self._talking = True
        self.talk_button.setDown(True)
        self.engine.talk_pressed()

    @Slot()
    def talk_released(self) -> None:
        if not self._talking:
            return
        self._talking = False
        self.talk_button.setDown(False)
        if self.engine is not None:
            self.engine.talk_released()

    def _mode_toggled(self, hands_free: bool) -> None:
        mode = TalkMode.HANDS_FREE if hands_free else TalkMode.PUSH_TO_TALK
        if mode.value != self.settings.talk_mode:
            self.settings = replace(self.settings, talk_mode=mode.value)
            self._save()
        self._apply_mode(mode.value)

    def _apply_mode(self, mode: str) -> None:
        ptt = mode == TalkMode.PUSH_TO_TALK.value
        button = self.push_to_talk if ptt else self.hands_free
        if not button.isChecked():
            button.blockSignals(True)
            button.setChecked(True)
            button.blockSignals(False)
        self.talk_button.setVisible(ptt)
        self.entry.setPlaceholderText(
            "Type a message and press Enter (or hold Space and talk)"
            if ptt
            else "Type a message and press Enter (or just talk)"
        )
        if self.engine is not None and hasattr(self.engine, "set_push_to_talk"):
            self.engine.set_push_to_talk(ptt)

    def keyPressEvent(self, event) -> None:  # Esc anywhere in the window stops the reply
        if event.key() == Qt.Key.Key_Escape:
            self.stop()
            return
        super().keyPressEvent(event)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """Space held anywhere in this window talks in push-to-talk mode, unless the focus is
        in a text box (where it types a space)."""
        kind = event.type()
        if kind not in (QEvent.Type.KeyPress, QEvent.Type.KeyRelease):
            return False
        if event.key() != Qt.Key.Key_Space or not self.push_to_talk.isChecked():
            return False
        if not isinstance(watched, QWidget) or watched.window() is not self:
            return False
        typing = (QLineEdit, QTextEdit, QPlainTextEdit)
        if isinstance(watched, typing) or isinstance(QApplication.focusWidget(), typing):
            return False
        if event.isAutoRepeat():
            return True
        if kind == QEvent.Type.KeyPress:
            self.talk_pressed()
        else:
            self.talk_released()
        return True

    def show_notice(self, text: str, action: str | None = None, callback=None) -> None:
        self.notice.show_text(text, action, callback)

    # -- style and voices -----------------------------------------------------------------
    def _style_values(self) -> dict:
        s = self.settings
        return {"emotion": s.emotion, "dialect": s.dialect, "rate": s.rate,
                "persona": s.persona, "volume": s.volume, "voice": s.voice}  # fmt: skip

    @Slot(dict)
    def style_changed(self, values: dict) -> None:
        from app.gui.widgets.voices import CLONE_ENTRY

        if values.get("voice") == CLONE_ENTRY:
            return  # "Clone a voice…" is a command, handled by _voice_picked
        self.settings = replace(self.settings, **values)
        self._save()
        if self.engine is not None and hasattr(self.engine, "set_style"):
            self.engine.set_style(values)

    def _voice_picked(self, index: int) -> None:
        from app.gui.widgets.voices import CLONE_ENTRY

        if self.style_panel.voice.itemData(index) == CLONE_ENTRY:
            self.refresh_voices()  # back to the voice in use
            self.open_clone()

    def refresh_voices(self) -> None:
        from app.gui.widgets.voices import fill_voice_picker
        from minmo_core.voice.library import VoiceLibrary

        selected = fill_voice_picker(self.style_panel.voice, VoiceLibrary(), self.settings.voice)
        if selected != self.settings.voice:  # the voice is gone (deleted) or renamed
            self.settings = replace(self.settings, voice=selected)

    def open_clone(self) -> None:
        from app.audio.recorder import SoundDeviceRecorder
        from app.gui.widgets.voices import CloneDialog

        studio = getattr(self.engine, "studio", None)
        if studio is None:
            self.show_notice("Cloning a voice needs the speech models: wait until they load.")
            return
        recorder = SoundDeviceRecorder(self.backend, self.settings.input_device)
        dialog = CloneDialog(studio, recorder, self)
        dialog.saved.connect(self._voice_saved)
        self._open(dialog)

    @Slot(str)
    def _voice_saved(self, name: str) -> None:
        self.settings = replace(self.settings, voice=name)
        self.refresh_voices()
        self.style_changed(self.style_panel.values())

    def open_voices(self) -> None:
        from app.gui.widgets.voices import VoiceManager
        from minmo_core.voice.library import VoiceLibrary

        dialog = VoiceManager(VoiceLibrary(), self._player(), self)
        dialog.changed.connect(self.refresh_voices)
        self._open(dialog)

    def _player(self):
        from app.audio.recorder import SoundDeviceRecorder

        recorder = SoundDeviceRecorder(self.backend, None, self.settings.output_device)
        return recorder.play

    # -- dialogs --------------------------------------------------------------------------
    def _open(self, dialog) -> None:
        self._dialogs.append(dialog)
        dialog.finished.connect(lambda _r, d=dialog: self._dialogs.remove(d))
        dialog.open()

    def open_settings(self) -> None:
        from app.gui.settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.settings, self.backend, self)
        dialog.applied.connect(self.settings_applied)
        self._open(dialog)

    @Slot(object)
    def settings_applied(self, settings: Settings) -> None:
        from app.gui.session import apply_models_dir

        old, self.settings = self.settings, settings
        apply_models_dir(settings)
        if self.engine is None:
            return
        if old.system_prompt != settings.system_prompt:
            self.engine.set_system_prompt(settings.system_prompt)
        if old.chunk_schedule != settings.chunk_schedule:
            self.engine.set_chunk_schedule(settings.chunk_schedule)
        if old.talk_mode != settings.talk_mode:
            self._apply_mode(settings.talk_mode)
        reload = [f for f in RELOAD_FIELDS if getattr(old, f) != getattr(settings, f)]
        if old.turn_policy != settings.turn_policy:
            reload.append("turn_policy")
        if reload:
            self.show_notice("Some changes apply when the models reload.", "Reload now",
                             self.reload)  # fmt: skip

    def open_history(self) -> None:
        from app.gui.widgets.history_browser import HistoryBrowser

        self._open(HistoryBrowser(current=self.history.path, parent=self))

    def export_markdown(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        from app.gui.history import read_history, to_markdown

        path, _ = QFileDialog.getSaveFileName(self, "Export the conversation",
                                              "conversation.md", "Markdown (*.md)")  # fmt: skip
        if not path:
            return
        try:
            with open(path, "w", encoding="utf-8") as out:
                out.write(to_markdown(read_history(self.history.path)))
        except OSError as err:
            self.show_notice(f"Could not write {path}: {err.strerror or err}")
            return
        self.show_notice(f"Saved the conversation to {path}")

    def clear_conversation(self) -> None:
        """A new conversation: the view, the engine's history and a new history file."""
        self.conversation.clear()
        if self.engine is not None:
            self.engine.engine.reset()
        self.bridge.event.disconnect(self.history.on_event)
        self.history.close()
        self._new_history()

    def _new_history(self) -> None:
        self.history = HistoryWriter(
            save_audio=self.settings.save_audio, on_audio_error=self.audio_failed.emit
        )
        self.bridge.event.connect(self.history.on_event)

    def _toggle_timeline(self, on: bool) -> None:
        self.timeline.setVisible(on)

    def _save(self) -> None:
        try:
            save_settings(self.settings)
        except OSError as err:
            self.show_notice(f"The settings could not be saved: {err}")

    # -- engine events --------------------------------------------------------------------
    @Slot(object)
    def on_event(self, event) -> None:
        from app.gui.session import LoadProgress
        from minmo_core.engine import events as ev

        self.timeline.feed(event)
        view = self.conversation
        name = type(event).__name__
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
        elif name == "Level":  # the audio path's clean microphone level
            self.state.set_level(self.state.mic, event.dbfs)
        elif isinstance(event, ev.AssistantAudio) and event.audio.size:
            rms = float((event.audio.astype("float64") ** 2).mean() ** 0.5)
            self.state.set_level(self.state.out, 20 * math.log10(max(rms, 1e-6)))
        elif name == "BargeIn":
            self.state.set_state("interrupted")
        elif name == "DeviceLost":
            self.show_notice(f"The audio {event.kind} device {event.name} is gone "
                             f"({event.reason}); the conversation waits for it.")  # fmt: skip
        elif name == "DeviceRestored":
            self.show_notice(f"The audio {event.kind} device {event.name} is back.")
        elif isinstance(event, LoadProgress):
            self.loading.setRange(0, event.steps)
            self.loading.setValue(event.step)
            self.loading.setFormat(f"Loading {event.what}… (%v of %m)")

    def closeEvent(self, event) -> None:
        app = QApplication.instance()
        if app is not None:
            app.removeEventFilter(self)
        if self.setup_panel is not None:
            self.setup_panel.shutdown()
        from app.gui.widgets.voices import wait_for_workers

        wait_for_workers(10_000)  # a voice being saved is finished first
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
