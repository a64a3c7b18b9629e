"""Cloned voices in the window: the voice picker's entries, the "Clone a voice…" dialog
(record 5-15 s or import a file, transcript filled in, clip checked, voice saved) and the
manager (rename, delete, preview).

Every step that touches a model, a file or an audio device runs in a worker: model and file
work in Qt's global thread pool, device work (open, close, play) one job at a time in a pool
of its own, so a stop always follows the start it cancels. Results come back through queued
signals; the GUI thread only reads the microphone's blocks from a queue on a timer.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QCoreApplication, QObject, QRunnable, Qt, QThreadPool, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.audio.recorder import Recorder, SoundDeviceRecorder
from minmo_core.errors import MinMoError, first_line
from minmo_core.voice.library import REFERENCE_RATE, VoiceLibrary, VoiceStudio

CLONE_ENTRY = "__clone__"  # the picker's "Clone a voice…" item data
RECORD_MIN_S = 5.0  # Stop is enabled from here on
RECORD_MAX_S = 15.0  # recording stops itself here
AUDIO_FILES = "Audio files (*.wav *.flac *.ogg *.oga *.opus *.mp3 *.aif *.aiff);;All files (*)"
OK_STYLE = "color: #1e8449;"
BAD_STYLE = "color: #c0392b;"
QUIET_STYLE = "color: #7f8c8d;"

Player = Callable[[np.ndarray, int], None]  # (audio, sample rate); blocking I/O: a worker


# -- workers ----------------------------------------------------------------------------------
class _JobSignals(QObject):
    done = Signal(object, object)  # (tag, result)
    failed = Signal(object, str)  # (tag, one-line message)


class _Job(QRunnable):
    def __init__(self, work: Callable[[], Any], tag: object, signals: _JobSignals) -> None:
        super().__init__()
        self.work, self.tag, self.signals = work, tag, signals

    def run(self) -> None:
        try:
            result = self.work()
        except Exception as err:  # every failure becomes a one-line message in the dialog
            self.signals.failed.emit(self.tag, describe(err))
        else:
            self.signals.done.emit(self.tag, result)


_device_pool: QThreadPool | None = None


def device_pool() -> QThreadPool:
    """One thread for audio devices: opens, closes and playbacks run in the order asked."""
    global _device_pool
    if _device_pool is None:
        _device_pool = QThreadPool()
        _device_pool.setMaxThreadCount(1)
    return _device_pool


def run_job(
    work: Callable[[], Any],
    done: Callable[[object, object], None] | None = None,
    failed: Callable[[object, str], None] | None = None,
    tag: object = None,
    device: bool = False,
) -> None:
    """Run ``work`` in a worker; ``done(tag, result)`` or ``failed(tag, message)`` follows on
    the GUI thread. Pass bound methods of a QObject: a deleted receiver is never called.

    The signals object belongs to the application (GUI thread) until it has spoken, so it is
    never destroyed by a worker."""
    signals = _JobSignals(QCoreApplication.instance())
    for signal, slot in ((signals.done, done), (signals.failed, failed)):
        if slot is not None:
            signal.connect(slot)
        signal.connect(signals.deleteLater)
    pool = device_pool() if device else QThreadPool.globalInstance()
    pool.start(_Job(work, tag, signals))


def wait_for_workers(msecs: int = 30_000) -> bool:
    """Wait for the voice jobs in flight (before the app quits); False on timeout."""
    return device_pool().waitForDone(msecs) and QThreadPool.globalInstance().waitForDone(msecs)


def sentence(message: str) -> str:
    """A message as a label shows it: starting with a capital letter."""
    return message[:1].upper() + message[1:]


def describe(err: BaseException) -> str:
    """One line for the user: our errors speak for themselves, others carry their type."""
    if isinstance(err, MinMoError):
        return first_line(err, 240)
    return f"{type(err).__name__}: {first_line(err, 200)}"


# -- the microphone and speaker ---------------------------------------------------------------


def level_dbfs(audio: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    return 20 * np.log10(max(rms, 1e-6))


# -- the "Clone a voice…" dialog --------------------------------------------------------------
def _button(text: str, name: str, slot: Callable[[], None]) -> QPushButton:
    button = QPushButton(text)
    button.setAccessibleName(name)
    button.setAutoDefault(False)
    button.clicked.connect(slot)
    return button


class CloneDialog(QDialog):
    """Record or import a clip, check it, transcribe it, name it and save it as a voice.

    ``recorder`` (a :class:`Recorder`) defaults to the default microphone and speaker;
    ``countdown_s`` is the 3-2-1 before recording starts (0: none, for tests).
    Emits ``saved(name)`` when the voice is in the library, then closes.
    """

    saved = Signal(str)
    stall_s = 3.0  # seconds without a block from the microphone: it has stopped

    def __init__(
        self,
        studio: VoiceStudio,
        recorder: Recorder | None = None,
        parent: QWidget | None = None,
        *,
        countdown_s: int = 3,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Clone a voice")
        self.studio = studio
        self.recorder = recorder if recorder is not None else SoundDeviceRecorder()
        self.countdown_s = countdown_s
        self.state = "empty"  # countdown, starting, recording, stopping, loading, ready, saving
        self.clip: np.ndarray | None = None  # (N,) float32
        self.clip_rate = 0
        self.source = ""  # "recorded" or "imported"
        self.clip_ok = False
        self._clip_id = 0  # results of an older clip are ignored
        self._incoming: deque[np.ndarray] = deque()  # filled by the audio callback
        self._blocks: list[np.ndarray] = []
        self._recorded = 0  # samples
        self._last_block_at = 0.0  # time.monotonic() when the last block was taken
        self._countdown_left = 0
        self._transcript_edited = False
        self._filling = False  # the transcript is being set by the program, not the user
        self._countdown = QTimer(self, interval=1000, timeout=self._tick_countdown)
        self._drain_timer = QTimer(self, interval=50, timeout=self._drain)
        self._build()
        self._update_controls()

    def _build(self) -> None:
        column = QVBoxLayout(self)
        row = QHBoxLayout()
        self.record_button = _button("&Record", "record a clip", self.record)
        self.import_button = _button("&Import a file…", "import an audio file", self.import_file)
        row.addWidget(self.record_button)
        row.addWidget(self.import_button)
        row.addStretch(1)
        column.addLayout(row)
        self.status = QLabel(
            "Record 5 to 15 seconds of one or two clear sentences, or import a recording."
        )
        self.status.setWordWrap(True)
        self.status.setAccessibleName("recording status")
        column.addWidget(self.status)
        row = QHBoxLayout()
        self.meter = QProgressBar()
        self.meter.setRange(0, 60)  # -60 .. 0 dBFS
        self.meter.setTextVisible(False)
        self.meter.setAccessibleName("microphone level")
        self.elapsed = QLabel(f"0.0 s of {RECORD_MAX_S:.0f} s")
        self.elapsed.setAccessibleName("recorded time")
        self.stop_button = _button("&Stop", "stop recording", self.stop_recording)
        self.play_button = _button("&Play back", "play the clip back", self.play)
        for widget in (self.meter, self.elapsed, self.stop_button, self.play_button):
            row.addWidget(widget, 1 if widget is self.meter else 0)
        column.addLayout(row)
        form = QFormLayout()
        self.transcript = QPlainTextEdit()
        self.transcript.setTabChangesFocus(True)
        self.transcript.setMaximumHeight(80)
        self.transcript.setAccessibleName("transcript: the words spoken in the clip")
        self.transcript.textChanged.connect(self._transcript_changed)
        label = QLabel("Trans&cript:")
        label.setBuddy(self.transcript)
        form.addRow(label, self.transcript)
        self.transcript_status = QLabel()
        self.transcript_status.setStyleSheet(QUIET_STYLE)
        self.transcript_status.setAccessibleName("transcription status")
        form.addRow("", self.transcript_status)
        self.name = QLineEdit()
        self.name.setMaxLength(60)
        self.name.setPlaceholderText("e.g. Grandma")
        self.name.setAccessibleName("voice name")
        self.name.textChanged.connect(self._update_controls)
        label = QLabel("&Name:")
        label.setBuddy(self.name)
        form.addRow(label, self.name)
        column.addLayout(form)
        row = QHBoxLayout()
        self.check_label = QLabel()
        self.check_label.setWordWrap(True)
        self.check_label.setAccessibleName("clip check")
        self.save_button = _button("&Save", "save the voice", self.save)
        self.save_button.setDefault(True)
        self.cancel_button = _button("Cancel", "cancel", self.reject)
        row.addWidget(self.check_label, 1)
        row.addWidget(self.save_button)
        row.addWidget(self.cancel_button)
        column.addLayout(row)
        self.error = QLabel()
        self.error.setStyleSheet(BAD_STYLE)
        self.error.setAccessibleName("error")
        column.addWidget(self.error)
        order = [
            self.record_button,
            self.import_button,
            self.stop_button,
            self.play_button,
            self.transcript,
            self.name,
            self.save_button,
            self.cancel_button,
        ]
        for before, after in pairwise(order):
            QWidget.setTabOrder(before, after)

    # -- recording ----------------------------------------------------------------------------
    def record(self) -> None:
        if self.state not in ("empty", "ready"):
            return
        self._show_error("")
        if self.countdown_s <= 0:
            self._open_microphone()
            return
        self._set_state("countdown")
        self._countdown_left = self.countdown_s
        self.status.setText(f"Recording starts in {self._countdown_left}…")
        self._countdown.start()

    def _tick_countdown(self) -> None:
        self._countdown_left -= 1
        if self._countdown_left > 0:
            self.status.setText(f"Recording starts in {self._countdown_left}…")
            return
        self._countdown.stop()
        self._open_microphone()

    def _open_microphone(self) -> None:
        self._set_state("starting")
        self.status.setText("Opening the microphone…")
        self._incoming.clear()
        self._blocks, self._recorded = [], 0
        start = partial(self.recorder.start, self._incoming.append)  # no reference to self
        run_job(start, self._recording_started, self._device_failed, device=True)

    def _recording_started(self, tag: object, result: object) -> None:
        if self.state != "starting":  # cancelled meanwhile
            run_job(self.recorder.stop, device=True)
            return
        self._set_state("recording")
        self.status.setText("Recording: speak one or two clear sentences, then press Stop.")
        self._last_block_at = time.monotonic()
        self._drain_timer.start()

    def _take_blocks(self) -> None:
        while self._incoming:
            block = self._incoming.popleft()
            self._blocks.append(block)
            self._recorded += block.size

    def _drain(self) -> None:
        """Timer tick while recording: the new blocks, the meter, the time, the limits."""
        fresh = len(self._incoming)
        self._take_blocks()
        if fresh:
            self._last_block_at = time.monotonic()
            recent = np.concatenate(self._blocks[-min(fresh, 5) :])
            self.meter.setValue(int(np.clip(level_dbfs(recent) + 60, 0, 60)))
        elif time.monotonic() - self._last_block_at > self.stall_s:
            run_job(self.recorder.stop, device=True)
            self._device_failed(None, "the microphone stopped sending sound (was it unplugged?)")
            return
        seconds = self._recorded / self.recorder.rate
        self.elapsed.setText(f"{min(seconds, RECORD_MAX_S):.1f} s of {RECORD_MAX_S:.0f} s")
        self._update_controls()
        if seconds >= RECORD_MAX_S:
            self.stop_recording()

    def stop_recording(self) -> None:
        if self.state != "recording":
            return
        self._drain_timer.stop()
        self._set_state("stopping")
        run_job(self.recorder.stop, self._recording_stopped, self._device_failed, device=True)

    def _recording_stopped(self, tag: object, result: object) -> None:
        if self.state != "stopping":  # the dialog was closed meanwhile
            return
        self._take_blocks()
        self.meter.setValue(0)
        rate = self.recorder.rate
        clip = np.concatenate(self._blocks)[: int(RECORD_MAX_S * rate)] if self._blocks else None
        self._blocks = []
        if clip is None or not clip.size:
            self._set_state("ready" if self.clip is not None else "empty")
            self._show_error("Nothing was recorded: is the microphone working?")
            return
        self.elapsed.setText(f"{clip.size / rate:.1f} s of {RECORD_MAX_S:.0f} s")
        self._set_clip(clip, rate, "recorded")

    def _device_failed(self, tag: object, message: str) -> None:
        self._countdown.stop()
        self._drain_timer.stop()
        self.meter.setValue(0)
        if self.state in ("starting", "recording", "stopping"):
            self._set_state("ready" if self.clip is not None else "empty")
            self.status.setText("Recording failed.")
        self._show_error(f"Audio device: {message}")

    def play(self) -> None:
        if self.clip is None or self.state != "ready":
            return
        run_job(
            partial(self.recorder.play, self.clip, self.clip_rate),
            None,
            self._device_failed,
            device=True,
        )

    # -- importing ----------------------------------------------------------------------------
    def import_file(self) -> None:
        if self.state not in ("empty", "ready"):
            return
        path, _ = QFileDialog.getOpenFileName(self, "Import a voice recording", "", AUDIO_FILES)
        if not path:
            return
        self._show_error("")
        self._set_state("loading")
        self.status.setText(f"Reading {Path(path).name}…")
        run_job(partial(self.studio.load_file, path), self._file_loaded, self._file_failed)

    def _file_loaded(self, tag: object, result: tuple[np.ndarray, int]) -> None:
        if self.state != "loading":  # the dialog was closed meanwhile
            return
        audio, rate = result
        self.elapsed.setText(f"{audio.size / rate:.1f} s")
        self._set_clip(audio, rate, "imported")

    def _file_failed(self, tag: object, message: str) -> None:
        if self.state != "loading":
            return
        self._set_state("ready" if self.clip is not None else "empty")
        self.status.setText("The file could not be used.")
        self._show_error(message)

    # -- a clip: transcript and checks --------------------------------------------------------
    def _set_clip(self, audio: np.ndarray, rate: int, source: str) -> None:
        self._clip_id += 1
        self.clip, self.clip_rate, self.source = audio, rate, source
        self.clip_ok = False
        self._set_state("ready")
        what = "Recorded" if source == "recorded" else "Imported"
        self.status.setText(f"{what} {audio.size / rate:.1f} s.")
        self._filling = True
        self.transcript.clear()
        self._filling = False
        self._transcript_edited = False
        self.transcript.setPlaceholderText("Transcribing…")
        self.transcript_status.setText("Transcribing…")
        self._show_check("Checking the clip…", QUIET_STYLE)
        tag = self._clip_id
        run_job(
            partial(self.studio.transcribe, audio, rate),
            self._transcribed,
            self._transcribe_failed,
            tag,
        )
        run_job(partial(self.studio.check, audio, rate), self._checked, self._check_failed, tag)

    def _transcript_changed(self) -> None:
        if not self._filling:
            self._transcript_edited = True
        self._update_controls()

    def _transcribed(self, tag: object, text: object) -> None:
        if tag != self._clip_id:
            return
        self.transcript.setPlaceholderText("Type the words spoken in the clip")
        if self._transcript_edited:  # the user's words win over a late result
            self.transcript_status.setText("")
            return
        self._filling = True
        self.transcript.setPlainText(str(text))
        self._filling = False
        self.transcript_status.setText(
            "Check the words and correct them if needed."
            if text
            else "No words were heard: type what the clip says."
        )
        self._update_controls()

    def _transcribe_failed(self, tag: object, message: str) -> None:
        if tag != self._clip_id:
            return
        self.transcript.setPlaceholderText("Type the words spoken in the clip")
        self.transcript_status.setText(f"Type the words yourself ({message})")

    def _checked(self, tag: object, result: object) -> None:
        if tag != self._clip_id or self.clip is None:
            return
        self.clip_ok = True
        self._show_check(f"Clip OK: {self.clip.size / self.clip_rate:.1f} s of speech", OK_STYLE)
        self._update_controls()

    def _check_failed(self, tag: object, message: str) -> None:
        if tag != self._clip_id:
            return
        self.clip_ok = False
        self._show_check(sentence(message), BAD_STYLE)
        self._update_controls()

    # -- saving -------------------------------------------------------------------------------
    def save(self) -> None:
        if not self.save_button.isEnabled() or self.clip is None:
            return
        self._show_error("")
        self._set_state("saving")
        self.status.setText("Cloning the voice…")
        clone = partial(
            self.studio.clone,
            self.clip,
            self.clip_rate,
            self.transcript.toPlainText(),
            self.name.text(),
            self.source,
        )
        run_job(clone, self._saved, self._save_failed)

    def _saved(self, tag: object, entry: Any) -> None:
        self._set_state("ready")
        self.saved.emit(entry.name)
        self.accept()

    def _save_failed(self, tag: object, message: str) -> None:
        self._set_state("ready")
        self.status.setText("The voice was not saved.")
        self._show_error(message)

    # -- state --------------------------------------------------------------------------------
    def _set_state(self, state: str) -> None:
        self.state = state
        self._update_controls()

    def _update_controls(self) -> None:
        idle = self.state in ("empty", "ready")
        ready = self.state == "ready" and self.clip is not None
        self.record_button.setEnabled(idle)
        self.record_button.setText("Record &again" if self.clip is not None else "&Record")
        self.import_button.setEnabled(idle)
        rate = getattr(self.recorder, "rate", 0) or 1
        long_enough = self._recorded / rate >= RECORD_MIN_S
        self.stop_button.setEnabled(self.state == "recording" and long_enough)
        self.play_button.setEnabled(ready)
        self.transcript.setReadOnly(self.state == "saving")
        self.name.setReadOnly(self.state == "saving")
        self.save_button.setEnabled(
            ready
            and self.clip_ok
            and bool(self.name.text().strip())
            and bool(self.transcript.toPlainText().strip())
        )

    def _show_check(self, text: str, style: str) -> None:
        self.check_label.setText(text)
        self.check_label.setStyleSheet(style)

    def _show_error(self, message: str) -> None:
        message = sentence(message)
        self.error.setText(message)
        self.error.setToolTip(message)

    def done(self, result: int) -> None:
        """Closing: a countdown or recording in progress stops and the microphone closes."""
        self._countdown.stop()
        self._drain_timer.stop()
        if self.state in ("starting", "recording", "stopping"):
            run_job(self.recorder.stop, device=True)
        if self.state != "saving":
            self.state = "closed"
        super().done(result)


# -- the manager ------------------------------------------------------------------------------
def _play_reference(library: VoiceLibrary, player: Player, name: str) -> None:
    player(library.reference(name), REFERENCE_RATE)


class VoiceManager(QDialog):
    """The saved voices (name, length, created) with Rename, Delete and Preview.

    ``player(audio, rate)`` plays a preview (it runs in a worker; by default the default
    speaker). Emits ``changed`` after a rename or delete, for the picker to refill.
    """

    changed = Signal()

    def __init__(
        self, library: VoiceLibrary, player: Player | None = None, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Voices")
        self.resize(560, 360)
        self.library = library
        self.player = player if player is not None else SoundDeviceRecorder().play
        self.busy = False
        column = QVBoxLayout(self)
        self.table = QTreeWidget()
        self.table.setHeaderLabels(["Name", "Length", "Created"])
        self.table.setRootIsDecorated(False)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAccessibleName("saved voices")
        self.table.itemSelectionChanged.connect(self._update_controls)
        self.table.itemActivated.connect(self.preview)
        column.addWidget(self.table, 1)
        self.problems = QLabel()
        self.problems.setWordWrap(True)
        self.problems.setStyleSheet(BAD_STYLE)
        self.problems.setAccessibleName("voices that could not be read")
        column.addWidget(self.problems)
        self.status = QLabel()
        self.status.setAccessibleName("status")
        column.addWidget(self.status)
        row = QHBoxLayout()
        self.rename_button = _button("&Rename…", "rename the voice", self.rename)
        self.delete_button = _button("&Delete…", "delete the voice", self.delete)
        self.preview_button = _button("&Preview", "play the voice's recording", self.preview)
        self.close_button = _button("&Close", "close", self.accept)
        for button in (self.rename_button, self.delete_button, self.preview_button):
            row.addWidget(button)
        row.addStretch(1)
        row.addWidget(self.close_button)
        column.addLayout(row)
        self.refresh()

    def refresh(self, select: str | None = None) -> None:
        """List the voices again (a few small files, no torch), selecting ``select``."""
        select = select or self.selected_name()
        self.table.clear()
        for entry in self.library.list():
            created = entry.created.replace("T", " ")[:16]
            item = QTreeWidgetItem([entry.name, f"{entry.seconds:.1f} s", created])
            item.setData(0, Qt.ItemDataRole.UserRole, entry.name)
            item.setToolTip(0, entry.transcript)
            self.table.addTopLevelItem(item)
            if entry.name == select:
                self.table.setCurrentItem(item)
        if self.table.currentItem() is None and self.table.topLevelItemCount():
            self.table.setCurrentItem(self.table.topLevelItem(0))
        for column in range(3):
            self.table.resizeColumnToContents(column)
        if not self.table.topLevelItemCount():
            self.status.setText("No saved voices yet: choose “Clone a voice…” in the voice menu.")
        self.problems.setText("\n".join(self.library.problems))
        self.problems.setVisible(bool(self.library.problems))
        self._update_controls()

    def selected_name(self) -> str | None:
        item = self.table.currentItem()
        return None if item is None else item.data(0, Qt.ItemDataRole.UserRole)

    def rename(self) -> None:
        name = self.selected_name()
        if name is None or self.busy:
            return
        new, ok = QInputDialog.getText(
            self, "Rename voice", f"New name for {name}:", QLineEdit.EchoMode.Normal, name
        )
        if not ok or new.strip() == name:
            return
        self._start(f"Renaming {name}…", partial(self.library.rename, name, new), self._renamed)

    def delete(self) -> None:
        name = self.selected_name()
        if name is None or self.busy:
            return
        answer = QMessageBox.question(
            self, "Delete voice", f"Delete the voice {name!r}? Its recording goes with it."
        )
        if answer != QMessageBox.StandardButton.Yes:
            return
        self._start(f"Deleting {name}…", partial(self.library.delete, name), self._deleted)

    def preview(self) -> None:
        name = self.selected_name()
        if name is not None:
            self.status.setText(f"Playing {name}…")
            run_job(
                partial(_play_reference, self.library, self.player, name),
                None,
                self._failed,
                device=True,
            )

    def _start(self, text: str, work: Callable[[], Any], done) -> None:
        self.busy = True
        self.status.setText(text)
        self._update_controls()
        run_job(work, done, self._failed)

    def _renamed(self, tag: object, entry: Any) -> None:
        self.busy = False
        self.status.setText(f"Renamed to {entry.name}.")
        self.refresh(entry.name)
        self.changed.emit()

    def _deleted(self, tag: object, result: object) -> None:
        self.busy = False
        self.status.setText("Deleted.")
        self.refresh()
        self.changed.emit()

    def _failed(self, tag: object, message: str) -> None:
        self.busy = False
        self.status.setText(sentence(message))
        self._update_controls()

    def _update_controls(self) -> None:
        chosen = self.selected_name() is not None
        for button in (self.rename_button, self.delete_button):
            button.setEnabled(chosen and not self.busy)
        self.preview_button.setEnabled(chosen)


# -- the picker -------------------------------------------------------------------------------
def fill_voice_picker(combo: QComboBox, library: VoiceLibrary, current: str | None) -> str | None:
    """Fill ``combo``: "Default voice" (data None), the saved voices (data: the name), and
    "Clone a voice…" (data ``CLONE_ENTRY``). Selects ``current`` (case-insensitive) when it
    exists, else the default voice, without emitting index signals; returns the voice now
    selected (None: the default), which differs from ``current`` when that voice is gone."""
    combo.blockSignals(True)
    try:
        combo.clear()
        combo.addItem("Default voice", None)
        wanted = current.casefold() if current else None
        selected = 0
        for entry in library.list():
            combo.addItem(entry.name, entry.name)
            combo.setItemData(combo.count() - 1, entry.transcript, Qt.ItemDataRole.ToolTipRole)
            if entry.name.casefold() == wanted:
                selected = combo.count() - 1
        combo.insertSeparator(combo.count())
        combo.addItem("Clone a voice…", CLONE_ENTRY)
        combo.setCurrentIndex(selected)
    finally:
        combo.blockSignals(False)
    return combo.currentData()
