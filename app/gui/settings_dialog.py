"""The Settings dialog: audio devices (with a test tone and a microphone check), the model
pack and folders, compute device and precision, the LLM backend (with a connection test),
turn-taking, barge-in and the system prompt.

It edits a copy: the Settings it was given are never touched. OK and Apply validate, save
(``save_settings``) and emit ``applied`` with the new Settings; a problem is a line in the
dialog and nothing is saved. Device listing, the tone, the microphone check and the
connection test are blocking calls, so each runs in a worker thread and reports back through
queued signals.
"""

from __future__ import annotations

import copy
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from functools import partial

from PySide6.QtCore import QCoreApplication, QObject, Qt, QThread, Signal, Slot
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.gui.settings import (
    BARGEIN_SENSITIVITIES,
    CHUNK_SCHEDULES,
    DEVICES,
    PRECISIONS,
    VOICE_LMS,
    VOICE_RELEASES,
    Settings,
    is_http_url,
    save_settings,
    settings_path,
    validate,
)
from minmo_core.errors import AudioError, MinMoError, first_line, reason

TONE_SECONDS = 1.0
MIC_CHECK_SECONDS = 2.0
SILENT_DBFS = -60.0  # a microphone check below this heard nothing
CONNECT_TIMEOUT_S = 5.0
API_KEY_ENV = "MINMO_LLM_API_KEY"  # as the CLI reads it (app/cli/stack.py)
NO_DEVICES = "no audio devices found"

TURN_POLICIES = {
    "smart-turn": "A small model (Smart Turn) hears when you have finished, even after a pause.",
    "silence": "Your turn ends after a moment of silence: simple, but a long pause cuts you off.",
    "duplex": "MinMo's full-duplex predictor decides from your speech (needs the adapters).",
}
VAD_LABELS = (
    "0: hears the most as speech",
    "1",
    "2: balanced",
    "3: hears the least as speech (noisy rooms)",
)
AEC_NAMES = {"speex": "SpeexDSP", "webrtc": "WebRTC AEC3"}  # every backend but "auto"
PRECISION_LABELS = {"auto": "auto (what fits this machine)"}
SCHEDULE_LABELS = {"fixed": "fixed 15 tokens (first audio soonest)",
                   "growing": "growing: 15, 25, then 50 (less compute)"}  # fmt: skip
VOICE_LM_LABELS = {
    "standard": "Standard (llm.pt)",
    "rl": "RL-tuned (llm.rl.pt: fewer misread words)",
}
VOICE_RELEASE_LABELS = {
    "cosyvoice2": "CosyVoice 2 (CosyVoice2-0.5B, MinMo's; needed for aligned mode)",
    "cosyvoice3": "CosyVoice 3 (Fun-CosyVoice3-0.5B-2512, composed mode only)",
}


def check_server(url: str, timeout: float = CONNECT_TIMEOUT_S) -> str:
    """GET ``{url}/models`` of an OpenAI-compatible server: "reachable: N models", or one
    line naming the address and what went wrong (blocking: call it from a worker thread)."""
    endpoint = f"{url.strip().rstrip('/')}/models"
    request = urllib.request.Request(endpoint, headers={"Accept": "application/json"})
    if os.environ.get(API_KEY_ENV):
        request.add_header("Authorization", f"Bearer {os.environ[API_KEY_ENV]}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read(4_000_000))
    except urllib.error.HTTPError as err:
        return f"unreachable: {endpoint} answered HTTP {err.code} {err.reason}"
    except (urllib.error.URLError, OSError, ValueError) as err:
        cause = err.reason if isinstance(err, urllib.error.URLError) else err
        if isinstance(cause, TimeoutError):
            return f"unreachable: {endpoint} did not answer within {timeout:g} s"
        why = reason(cause) if isinstance(cause, BaseException) else str(cause)
        return f"unreachable: {endpoint}: {why}"
    models = body.get("data") if isinstance(body, dict) else None
    if not isinstance(models, list):
        return f"unreachable: {endpoint} answered, but not with an OpenAI-compatible model list"
    return f"reachable: {len(models)} model{'' if len(models) == 1 else 's'}"


def list_audio_devices(backend=None) -> tuple[object, list[str], list[str]]:
    """(backend, input names, output names); imports sounddevice when ``backend`` is None.
    AudioError when PortAudio or sounddevice is missing or cannot list (blocking: it may
    initialise PortAudio)."""
    from app.audio.devices import list_devices, sounddevice_backend
    from minmo_core.errors import AudioError

    if backend is None:
        try:
            backend = sounddevice_backend()
        except ImportError as err:
            raise AudioError(f"the sounddevice package is missing ({err})") from err
    inputs = [d.name for d in list_devices(backend, "input")]
    outputs = [d.name for d in list_devices(backend, "output")]
    return backend, inputs, outputs


def _failure(err: BaseException) -> str:
    if isinstance(err, MinMoError):
        return first_line(err)
    return f"{type(err).__name__}: {first_line(err)}"


class _Job(QObject):
    """One blocking call (audio device I/O, a network request) in a worker thread."""

    done = Signal(object)
    failed = Signal(str)
    finished = Signal()

    def __init__(self, work: Callable[[], object]) -> None:
        super().__init__()
        self.work = work
        self._home = self.thread()  # the GUI thread

    @Slot()
    def run(self) -> None:
        try:
            self.done.emit(self.work())
        except Exception as err:  # any failure is a line in the dialog
            self.failed.emit(_failure(err))
        finally:
            self.moveToThread(self._home)  # deleted on the GUI thread (window.py's _Loader)
            self.finished.emit()


def _label(text: str, buddy: QWidget) -> QLabel:
    label = QLabel(text)
    label.setBuddy(buddy)
    return label


def _named(widget: QWidget, name: str, tip: str | None = None) -> QWidget:
    widget.setAccessibleName(name)
    if tip:
        widget.setToolTip(tip)
        widget.setAccessibleDescription(tip)
    return widget


def _combo(items: list[tuple[str, object]], name: str) -> QComboBox:
    combo = QComboBox()
    for text, value in items:
        combo.addItem(text, value)
    return _named(combo, name)


def _select(combo: QComboBox, value: object, missing: str = "{} (unknown)") -> None:
    """Select the item holding ``value``; one is added for a value not in the list."""
    for i in range(combo.count()):
        if combo.itemData(i) == value:
            combo.setCurrentIndex(i)
            return
    combo.addItem(missing.format(value), value)
    combo.setCurrentIndex(combo.count() - 1)


def _line(text: str | None, name: str, placeholder: str = "") -> QLineEdit:
    edit = QLineEdit(text or "")
    edit.setPlaceholderText(placeholder)
    return _named(edit, name)


def _text(edit: QLineEdit) -> str | None:
    return edit.text().strip() or None


def _status() -> QLabel:
    label = QLabel()
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


class SettingsDialog(QDialog):
    """Edits a copy of ``settings``; ``backend`` is the sounddevice module (None: imported
    when the dialog opens, in a worker) or a FakeSoundDevice in tests."""

    applied = Signal(object)  # the new Settings (a copy), saved

    def __init__(self, settings: Settings, backend=None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.initial = copy.deepcopy(settings)  # what the fields started from; never the caller's
        self.backend = backend
        self.running: set[str] = set()  # worker jobs in flight: devices, tone, mic, connection
        self.mic_level: float | None = None  # dBFS, the last microphone check's peak
        column = QVBoxLayout(self)
        self.tabs = QTabWidget()
        self.tabs.setAccessibleName("settings sections")
        self.tabs.addTab(self._audio_tab(), "A&udio")
        self.tabs.addTab(self._models_tab(), "&Models")
        self.tabs.addTab(self._assistant_tab(), "A&ssistant")
        column.addWidget(self.tabs)
        self.problems = _status()
        self.problems.setStyleSheet("color: #c0392b;")
        self.problems.setAccessibleName("settings problems")
        self.problems.hide()
        column.addWidget(self.problems)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok
            | QDialogButtonBox.StandardButton.Cancel
            | QDialogButtonBox.StandardButton.Apply
        )
        self.ok_button = buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.cancel_button = buttons.button(QDialogButtonBox.StandardButton.Cancel)
        self.apply_button = buttons.button(QDialogButtonBox.StandardButton.Apply)
        for button, name in ((self.ok_button, "OK: save and close"),
                             (self.cancel_button, "Cancel: close without saving"),
                             (self.apply_button, "Apply: save and keep open")):  # fmt: skip
            button.setAccessibleName(name)
        buttons.accepted.connect(self.accept_settings)
        buttons.rejected.connect(self.reject)
        self.apply_button.clicked.connect(self.apply)
        column.addWidget(buttons)
        self._list_devices()

    # -- the audio tab ------------------------------------------------------------------------
    def _audio_tab(self) -> QWidget:
        s = self.initial
        tab, form = QWidget(), QFormLayout()
        layout = QVBoxLayout(tab)
        self.devices_status = _status()
        self.devices_status.setAccessibleName("audio devices status")
        self.devices_status.setText("Looking for audio devices…")
        layout.addWidget(self.devices_status)
        layout.addLayout(form)
        self.input_combo = self._device_combo(s.input_device, "input device")
        self.tone_button = _named(QPushButton("Play test to&ne"), "play a test tone",
                                  "a short 440 Hz tone on the chosen output device")  # fmt: skip
        self.mic_button = _named(QPushButton("Check micro&phone"), "check the microphone",
                                 "records 2 s from the chosen input, shows its level")  # fmt: skip
        self.output_combo = self._device_combo(s.output_device, "output device")
        self.tone_status = _named(_status(), "test tone result")
        self.mic_meter = QProgressBar()
        self.mic_meter.setRange(0, 60)  # -60 .. 0 dBFS, as the window's meters
        self.mic_meter.setTextVisible(False)
        self.mic_meter.setMaximumHeight(10)
        self.mic_meter.setAccessibleName("microphone check level")
        self.mic_verdict = _named(_status(), "microphone check result")
        form.addRow(_label("&Input device:", self.input_combo), self.input_combo)
        form.addRow("", self._row(self.mic_button, self.mic_meter))
        form.addRow("", self.mic_verdict)
        form.addRow(_label("Ou&tput device:", self.output_combo), self.output_combo)
        form.addRow("", self._row(self.tone_button))
        form.addRow("", self.tone_status)
        self.echo_box = _named(QCheckBox("&Echo cancellation"), "echo cancellation",
                               "removes the assistant's own voice from the microphone")  # fmt: skip
        self.echo_box.setChecked(s.echo_cancellation)
        form.addRow("", self.echo_box)
        self.aec_combo = self._canceller_combo(s.aec_backend)
        self.aec_combo.setEnabled(s.echo_cancellation)
        self.echo_box.toggled.connect(self.aec_combo.setEnabled)
        form.addRow(_label("Echo &canceller:", self.aec_combo), self.aec_combo)
        self.vad_combo = _combo(list(zip(VAD_LABELS, range(4), strict=True)),
                                "voice detection sensitivity")  # fmt: skip
        _select(self.vad_combo, s.vad_sensitivity)
        form.addRow(_label("Voice &detection:", self.vad_combo), self.vad_combo)
        self.bargein_combo = _combo([(v, v) for v in BARGEIN_SENSITIVITIES],
                                    "barge-in sensitivity")  # fmt: skip
        self.bargein_combo.setToolTip("how quickly your speech interrupts the assistant")
        _select(self.bargein_combo, s.bargein_sensitivity)
        form.addRow(_label("&Barge-in sensitivity:", self.bargein_combo), self.bargein_combo)
        self.tone_button.clicked.connect(self.play_tone)
        self.mic_button.clicked.connect(self.check_microphone)
        for button in (self.tone_button, self.mic_button):
            button.setEnabled(False)  # until the devices are listed
        layout.addStretch(1)
        return tab

    def _canceller_combo(self, current: str) -> QComboBox:
        """The echo cancellers; one whose library is missing is listed but cannot be chosen."""
        from app.audio.aec import backend_installed, resolve_backend

        try:
            auto = f"Automatic ({AEC_NAMES[resolve_backend('auto')]})"
        except AudioError:
            auto = "Automatic (none installed)"
        items = [(auto, "auto")]
        installed = {b: backend_installed(b) for b in AEC_NAMES}
        items += [(name if installed[b] else f"{name} (not installed)", b)
                  for b, name in AEC_NAMES.items()]  # fmt: skip
        combo = _combo(items, "echo canceller")
        combo.setToolTip("SpeexDSP: keeps your voice whole while the assistant talks; WebRTC "
                         "AEC3: removes more echo, also from distorting speakers")  # fmt: skip
        for i, (_, backend) in enumerate(items):
            if backend != "auto" and not installed[backend]:
                combo.model().item(i).setEnabled(False)
        _select(combo, current)
        return combo

    def _device_combo(self, current: str | None, name: str) -> QComboBox:
        combo = _combo([("System default", None)], name)
        _select(combo, current, "{}")
        return combo

    @staticmethod
    def _row(*widgets: QWidget) -> QHBoxLayout:
        row = QHBoxLayout()
        for widget in widgets:
            row.addWidget(widget)
        return row

    def _list_devices(self) -> None:
        self._start("devices", partial(list_audio_devices, self.backend),
                    self._devices_listed, self._devices_failed)  # fmt: skip

    @Slot(object)
    def _devices_listed(self, found: tuple) -> None:
        self.running.discard("devices")
        self.backend, inputs, outputs = found
        self._fill(self.input_combo, inputs)
        self._fill(self.output_combo, outputs)
        self.mic_button.setEnabled(bool(inputs))
        self.tone_button.setEnabled(bool(outputs))
        if not inputs and not outputs:
            self.devices_status.setText(NO_DEVICES)
        elif not inputs:
            self.devices_status.setText("no audio input devices found: is a microphone connected?")
        elif not outputs:
            self.devices_status.setText("no audio output devices found: are speakers connected?")
        else:
            self.devices_status.setText("")
        self.devices_status.setVisible(bool(self.devices_status.text()))

    @Slot(str)
    def _devices_failed(self, message: str) -> None:
        self.running.discard("devices")
        self.devices_status.setText(f"{NO_DEVICES} ({message})")

    @staticmethod
    def _fill(combo: QComboBox, names: list[str]) -> None:
        current = combo.currentData()
        combo.clear()
        combo.addItem("System default", None)
        for name in names:
            combo.addItem(name, name)
        _select(combo, current, "{} (not connected)")

    @Slot()
    def play_tone(self) -> None:
        from app.audio.devices import play_tone

        device = self.output_combo.currentData()
        self.tone_button.setEnabled(False)
        self.tone_status.setText(f"Playing a 440 Hz tone on {device or 'the default output'}…")
        self._start("tone", partial(play_tone, self.backend, device, TONE_SECONDS),
                    self._tone_played, self._tone_failed)  # fmt: skip

    @Slot(object)
    def _tone_played(self, device) -> None:
        self.running.discard("tone")
        self.tone_button.setEnabled(True)
        self.tone_status.setText(f"played a 440 Hz tone on {device.name}")

    @Slot(str)
    def _tone_failed(self, message: str) -> None:
        self.running.discard("tone")
        self.tone_button.setEnabled(True)
        self.tone_status.setText(f"test tone failed: {message}")

    @Slot()
    def check_microphone(self) -> None:
        from app.audio.devices import measure_input

        device = self.input_combo.currentData()
        self.mic_button.setEnabled(False)
        self.mic_meter.setValue(0)
        self.mic_verdict.setText("Listening for 2 s: say something…")
        self._start("mic", partial(measure_input, self.backend, device, MIC_CHECK_SECONDS),
                    self._mic_measured, self._mic_failed)  # fmt: skip

    @Slot(object)
    def _mic_measured(self, dbfs: float) -> None:
        self.running.discard("mic")
        self.mic_button.setEnabled(True)
        self.mic_level = dbfs
        self.mic_meter.setValue(round(max(0.0, min(60.0, dbfs + 60.0))))
        if dbfs < SILENT_DBFS:
            self.mic_verdict.setText("silent: is the microphone muted?")
        else:
            self.mic_verdict.setText(f"hearing you at {dbfs:.0f} dBFS")

    @Slot(str)
    def _mic_failed(self, message: str) -> None:
        self.running.discard("mic")
        self.mic_button.setEnabled(True)
        self.mic_verdict.setText(f"microphone check failed: {message}")

    # -- the models tab -----------------------------------------------------------------------
    def _models_tab(self) -> QWidget:
        from minmo_core.common.paths import models_dir
        from minmo_core.manager.packs import all_packs

        s = self.initial
        tab = QWidget()
        form = QFormLayout(tab)
        self.pack_combo = _combo([("Automatic (the planner's choice)", None)], "model pack")
        self.packs_status = _named(_status(), "model packs status")
        try:
            packs = [p for p in all_packs().values() if not p.optional]
        except MinMoError as err:  # a malformed manifest: the automatic choice still works
            packs = []
            self.packs_status.setText(f"the model packs could not be read: {first_line(err)}")
        for pack in packs:
            self.pack_combo.addItem(f"{pack.title} ({pack.name})", pack.name)
            last = self.pack_combo.count() - 1
            self.pack_combo.setItemData(last, pack.description, Qt.ItemDataRole.ToolTipRole)
        self.packs_status.setVisible(bool(self.packs_status.text()))
        form.addRow(self.packs_status)
        _select(self.pack_combo, s.pack)
        form.addRow(_label("Model &pack:", self.pack_combo), self.pack_combo)
        self.voice_combo = _combo([(VOICE_RELEASE_LABELS[r], r) for r in VOICE_RELEASES],
                                  "voice release")  # fmt: skip
        self.voice_combo.setToolTip(
            "Which CosyVoice speaks the replies. CosyVoice 3 sounds better and knows more "
            "dialects; it speaks in composed mode only. Aligned mode (MinMo's adapters: "
            "projectors, LoRA, duplex predictor) needs CosyVoice 2, which they were trained "
            "against."
        )
        _select(self.voice_combo, s.voice_release)
        form.addRow(_label("&Voice release:", self.voice_combo), self.voice_combo)
        self.voice_note = _named(_status(), "voice release note")
        form.addRow(self.voice_note)
        self.voice_lm_combo = _combo([(VOICE_LM_LABELS[m], m) for m in VOICE_LMS], "voice LM")
        self.voice_lm_combo.setToolTip(
            "CosyVoice 3 ships two voice LMs: the standard one and an RL-tuned twin that "
            "misreads fewer words (1.68 % instead of 2.24 % WER on its English test set). "
            "The RL-tuned file (2 GB) is fetched on request: minmo models download PACK "
            "--also llm.rl.pt"
        )
        _select(self.voice_lm_combo, s.voice_lm)
        form.addRow(_label("Voice L&M:", self.voice_lm_combo), self.voice_lm_combo)
        self.voice_combo.currentIndexChanged.connect(self._voice_release_changed)
        self._voice_release_changed()
        self._packs = {p.name: p for p in packs}
        self.pack_combo.currentIndexChanged.connect(self._pack_changed)
        self.models_edit = _line(s.models_dir, "models folder", f"default: {models_dir()}")
        browse = _named(QPushButton("Bro&wse…"), "choose the models folder")
        browse.clicked.connect(self.browse_models)
        form.addRow(_label("Models &folder:", self.models_edit),
                    self._row(self.models_edit, browse))  # fmt: skip
        self.llm_dir_edit = _line(s.llm_dir, "chat LLM folder", "default: the pack's LLM")
        browse_llm = _named(QPushButton("Brows&e…"), "choose the chat LLM folder")
        browse_llm.clicked.connect(self.browse_llm)
        form.addRow(_label("Chat &LLM folder:", self.llm_dir_edit),
                    self._row(self.llm_dir_edit, browse_llm))  # fmt: skip
        labels = {"auto": "auto (a GPU when there is one)", "cuda": "cuda (NVIDIA GPU)"}
        self.device_combo = _combo([(labels.get(d, d), d) for d in DEVICES], "compute device")
        _select(self.device_combo, s.device)
        form.addRow(_label("Compute &device:", self.device_combo), self.device_combo)
        self.precision_combo = _combo([(PRECISION_LABELS.get(p, p), p) for p in PRECISIONS],
                                      "precision")  # fmt: skip
        _select(self.precision_combo, s.precision)
        form.addRow(_label("P&recision:", self.precision_combo), self.precision_combo)
        self.schedule_combo = _combo([(SCHEDULE_LABELS[c], c) for c in CHUNK_SCHEDULES],
                                     "speech chunks")  # fmt: skip
        self.schedule_combo.setToolTip(
            "How much speech each synthesis step renders. Fixed: 15 tokens (0.6 s), the first "
            "audio soonest. Growing: 15, then 25 and 50 while playback has audio in hand, "
            "which takes less compute for long replies."
        )
        _select(self.schedule_combo, s.chunk_schedule)
        form.addRow(_label("Speech c&hunks:", self.schedule_combo), self.schedule_combo)
        return tab

    @Slot()
    def _pack_changed(self, _index: int = 0) -> None:
        """A pack speaks with its own voice: the voice release follows the pack chosen."""
        from minmo_core.manager.packs import voice_release_of

        chosen = self._packs.get(self.pack_combo.currentData())
        voice = voice_release_of(chosen) if chosen is not None else None
        if voice is not None:
            _select(self.voice_combo, voice)

    @Slot()
    def _voice_release_changed(self, _index: int = 0) -> None:
        # CosyVoice 2 has one voice LM
        self.voice_lm_combo.setEnabled(self.voice_combo.currentData() == "cosyvoice3")
        if self.voice_combo.currentData() == "cosyvoice3":
            self.voice_note.setText(
                "CosyVoice 3 speaks in composed mode only: aligned mode (MinMo's adapters) "
                "needs CosyVoice 2. Saved voices are cloned again from their recordings the "
                "first time CosyVoice 3 speaks with them."
            )
        else:
            self.voice_note.setText("")
        self.voice_note.setVisible(bool(self.voice_note.text()))

    @Slot()
    def browse_models(self) -> None:
        self._browse(self.models_edit, "Models folder")

    @Slot()
    def browse_llm(self) -> None:
        self._browse(self.llm_dir_edit, "Chat LLM folder")

    def _browse(self, edit: QLineEdit, title: str) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, title, edit.text() or os.path.expanduser("~")
        )
        if folder:
            edit.setText(folder)

    # -- the assistant tab --------------------------------------------------------------------
    def _assistant_tab(self) -> QWidget:
        s = self.initial
        tab = QWidget()
        form = QFormLayout(tab)
        self.local_radio = _named(QRadioButton("&Local models"), "local LLM")
        self.remote_radio = _named(QRadioButton("&Remote OpenAI-compatible server"), "remote LLM")
        self.backend_group = QButtonGroup(tab)
        self.backend_group.addButton(self.local_radio)
        self.backend_group.addButton(self.remote_radio)
        (self.remote_radio if s.llm_backend == "remote" else self.local_radio).setChecked(True)
        form.addRow("LLM:", self._row(self.local_radio, self.remote_radio))
        self.url_edit = _line(s.llm_url, "server URL", "http://localhost:8000/v1")
        form.addRow(_label("Ser&ver URL:", self.url_edit), self.url_edit)
        self.model_edit = _line(s.llm_model, "model name", "the server's model name")
        form.addRow(_label("Model &name:", self.model_edit), self.model_edit)
        self.test_button = _named(QPushButton("&Test connection"), "test the connection",
                                  "asks the server for its models (GET URL/models)")  # fmt: skip
        self.test_button.clicked.connect(self.test_connection)
        self.connection_status = _named(_status(), "connection test result")
        form.addRow("", self._row(self.test_button, self.connection_status))
        self.local_radio.toggled.connect(self._backend_changed)
        self._backend_changed()
        self.policy_combo = _combo([(k, k) for k in TURN_POLICIES], "turn-taking policy")
        self.policy_text = _named(_status(), "turn-taking policy description")
        self.policy_combo.currentIndexChanged.connect(self._policy_changed)
        _select(self.policy_combo, s.turn_policy)
        self._policy_changed()
        form.addRow(_label("Turn-ta&king:", self.policy_combo), self.policy_combo)
        form.addRow("", self.policy_text)
        self.prompt_edit = _named(QPlainTextEdit(s.system_prompt), "system prompt")
        self.prompt_edit.setPlaceholderText("Empty: the assistant's built-in system prompt")
        self.prompt_edit.setTabChangesFocus(True)
        reset = _named(QPushButton("Reset to de&fault"), "reset the system prompt to default")
        reset.clicked.connect(self.prompt_edit.clear)
        self.reset_prompt_button = reset
        form.addRow(_label("S&ystem prompt:", self.prompt_edit), self.prompt_edit)
        form.addRow("", self._row(reset))
        self.save_audio_box = _named(QCheckBox("Save t&he conversation's audio too"),
                                     "save the conversation's audio")  # fmt: skip
        self.save_audio_box.setChecked(s.save_audio)
        form.addRow("", self.save_audio_box)
        return tab

    @Slot()
    def _backend_changed(self) -> None:
        remote = self.remote_radio.isChecked()
        self.url_edit.setEnabled(remote)
        self.model_edit.setEnabled(remote)
        self.test_button.setEnabled(remote and "connection" not in self.running)

    @Slot()
    def _policy_changed(self) -> None:
        self.policy_text.setText(TURN_POLICIES.get(self.policy_combo.currentData(), ""))

    @Slot()
    def test_connection(self) -> None:
        url = self.url_edit.text().strip()
        if not is_http_url(url):
            self.connection_status.setText("enter an http:// or https:// server URL first")
            return
        self.test_button.setEnabled(False)
        self.connection_status.setText(f"Asking {url}…")
        self._start("connection", partial(check_server, url),
                    self._connection_checked, self._connection_checked)  # fmt: skip

    @Slot(object)
    def _connection_checked(self, message: str) -> None:
        self.running.discard("connection")
        self.test_button.setEnabled(self.remote_radio.isChecked())
        self.connection_status.setText(message)

    # -- the result ---------------------------------------------------------------------------
    def values(self) -> Settings:
        """The settings as the fields show them (a new object; unshown fields as given)."""
        return replace(
            copy.deepcopy(self.initial),
            input_device=self.input_combo.currentData(),
            output_device=self.output_combo.currentData(),
            echo_cancellation=self.echo_box.isChecked(),
            aec_backend=self.aec_combo.currentData(),
            vad_sensitivity=self.vad_combo.currentData(),
            bargein_sensitivity=self.bargein_combo.currentData(),
            pack=self.pack_combo.currentData(),
            models_dir=_text(self.models_edit),
            llm_dir=_text(self.llm_dir_edit),
            device=self.device_combo.currentData(),
            precision=self.precision_combo.currentData(),
            chunk_schedule=self.schedule_combo.currentData(),
            voice_release=self.voice_combo.currentData(),
            voice_lm=self.voice_lm_combo.currentData(),
            llm_backend="remote" if self.remote_radio.isChecked() else "local",
            llm_url=_text(self.url_edit),
            llm_model=_text(self.model_edit),
            turn_policy=self.policy_combo.currentData(),
            system_prompt=self.prompt_edit.toPlainText().strip(),
            save_audio=self.save_audio_box.isChecked(),
        )

    @Slot()
    def apply(self) -> bool:
        """Validate, save and emit ``applied``; False (and the problem shown) if not saved."""
        new = self.values()
        problems = validate(new)
        if not problems:
            try:
                save_settings(new)
            except OSError as err:
                problems = [f"the settings could not be saved to {settings_path()}: {reason(err)}"]
        if problems:
            self.problems.setText("\n".join(problems))
            self.problems.show()
            return False
        self.problems.hide()
        self.initial = copy.deepcopy(new)
        self.applied.emit(new)
        return True

    @Slot()
    def accept_settings(self) -> None:
        if self.apply():
            self.accept()

    # -- workers ------------------------------------------------------------------------------
    def _start(
        self, name: str, work: Callable[[], object], done: Callable, failed: Callable
    ) -> None:
        """Run ``work`` in a worker thread; ``done`` or ``failed`` get its result on the GUI
        thread. The thread belongs to the application, so closing the dialog mid-job is safe."""
        thread = QThread(QCoreApplication.instance())
        job = _Job(work)
        job.moveToThread(thread)
        thread.job = job  # kept alive as long as its thread
        thread.started.connect(job.run)
        job.done.connect(done)
        job.failed.connect(failed)
        job.finished.connect(thread.quit)
        job.finished.connect(job.deleteLater)
        thread.finished.connect(thread.deleteLater)
        self.running.add(name)
        thread.start()
