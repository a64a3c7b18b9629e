"""Cloning a voice in the window, offscreen under pytest-qt, on the tiny cloner and the tiny
(real, random-weight) SenseVoice: an imported or recorded clip gets its transcript and its
checks, Save puts it in the library and the picker; the manager renames, deletes and
previews. Recording goes through the fake sound device's real callback path."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QMessageBox

from app.audio.fake_device import FakeSoundDevice
from app.audio.recorder import SoundDeviceRecorder
from app.gui.widgets import voices
from app.gui.widgets.voices import (
    CLONE_ENTRY,
    CloneDialog,
    VoiceManager,
    fill_voice_picker,
    wait_for_workers,
)
from minmo_core.common.audio import read_audio, resample
from minmo_core.voice.library import PROFILE, VoiceLibrary, VoiceStudio
from tests.conftest import REPO

TIMEOUT_MS = 60_000


@pytest.fixture
def dialogs(qtbot):
    """Dialogs for a test. As in the app, no cycle collection runs while their workers do
    (a worker thread's collection could destroy Qt objects off the GUI thread)."""
    import gc

    gc.collect()
    gc.disable()
    made = []

    def keep(dialog):
        qtbot.addWidget(dialog)
        dialog.show()
        made.append(dialog)
        return dialog

    yield keep
    assert wait_for_workers(TIMEOUT_MS)
    for dialog in made:  # closed and deleted here, on the GUI thread
        dialog.close()
        dialog.deleteLater()
    qtbot.wait(20)
    gc.enable()
    gc.collect()


@pytest.fixture(scope="module")
def cloner(tiny_release_dir: Path):
    from minmo_core.voice.voice_clone import VoiceCloner

    return VoiceCloner.from_folder(tiny_release_dir, allow_unpinned=True)


@pytest.fixture
def library(tmp_path: Path) -> VoiceLibrary:
    return VoiceLibrary(tmp_path / "voices")


@pytest.fixture
def studio(cloner, sensevoice, library: VoiceLibrary) -> VoiceStudio:
    return VoiceStudio(lambda: cloner, lambda audio: sensevoice.transcribe(audio).text, library)


@pytest.fixture
def speech_wav(fixtures_dir: Path) -> Path:
    return fixtures_dir / "audio" / "sensevoice_sample.wav"  # 6 s of speech, 16 kHz


def choose_file(monkeypatch, path: Path) -> None:
    """The file dialog answers ``path``."""
    picker = SimpleNamespace(getOpenFileName=lambda *args, **kwargs: (str(path), ""))
    monkeypatch.setattr(voices, "QFileDialog", picker)


def click(qtbot, button) -> None:
    assert button.isEnabled(), button.text()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def expected_transcript(sensevoice, audio: np.ndarray, rate: int) -> str:
    return sensevoice.transcribe(resample(audio, rate, 16000)).text.strip()


def test_an_imported_speech_file_is_transcribed_checked_and_saved(
    dialogs, qtbot, monkeypatch, studio, library, sensevoice, speech_wav
) -> None:
    choose_file(monkeypatch, speech_wav)
    d = dialogs(CloneDialog(studio))
    assert not d.save_button.isEnabled() and not d.play_button.isEnabled()
    click(qtbot, d.import_button)
    qtbot.waitUntil(lambda: d.check_label.text().startswith("Clip OK"), timeout=TIMEOUT_MS)
    assert d.check_label.text() == "Clip OK: 6.0 s of speech"
    qtbot.waitUntil(lambda: bool(d.transcript.toPlainText()), timeout=TIMEOUT_MS)
    words = expected_transcript(sensevoice, read_audio(speech_wav, 24000), 24000)
    assert d.transcript.toPlainText() == words and not d.transcript.isReadOnly()
    assert not d.save_button.isEnabled()  # no name yet
    qtbot.keyClicks(d.name, "Grandma")
    assert d.save_button.isEnabled()
    with qtbot.waitSignal(d.saved, timeout=TIMEOUT_MS) as saved:
        click(qtbot, d.save_button)
    assert saved.args == ["Grandma"] and not d.isVisible()
    (entry,) = library.list()
    assert (entry.name, entry.transcript, entry.source) == ("Grandma", words, "imported")
    assert entry.seconds == pytest.approx(6.0)

    combo = QComboBox()
    assert fill_voice_picker(combo, library, "grandma") == "Grandma"
    texts = [combo.itemText(i) for i in range(combo.count())]
    assert texts == ["Default voice", "Grandma", "", "Clone a voice…"]
    assert combo.currentText() == "Grandma" and combo.itemData(0) is None
    assert combo.itemData(combo.count() - 1) == CLONE_ENTRY
    assert fill_voice_picker(combo, library, "Gone") is None and combo.currentIndex() == 0


def test_a_silent_file_shows_the_check_message_and_save_stays_disabled(
    dialogs, qtbot, monkeypatch, studio, library, tmp_path: Path
) -> None:
    silent = tmp_path / "silent.wav"
    sf.write(silent, 1e-4 * np.random.default_rng(0).standard_normal(16000 * 6), 16000)
    choose_file(monkeypatch, silent)
    d = dialogs(CloneDialog(studio))
    click(qtbot, d.import_button)
    qtbot.waitUntil(lambda: "silent" in d.check_label.text(), timeout=TIMEOUT_MS)
    assert d.check_label.text().startswith("The reference clip is silent (loudest -")
    assert "c0392b" in d.check_label.styleSheet()  # red
    qtbot.waitUntil(lambda: d.transcript_status.text() != "Transcribing…", timeout=TIMEOUT_MS)
    qtbot.keyClicks(d.name, "Quiet")
    qtbot.keyClicks(d.transcript, "some words")
    assert not d.save_button.isEnabled()
    qtbot.keyClick(d.name, Qt.Key.Key_Return)  # Enter does not save either
    qtbot.wait(50)
    assert library.names() == []


def test_a_broken_file_and_a_taken_name_are_one_line_messages(
    dialogs, qtbot, monkeypatch, studio, library, speech_wav, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF and nothing more")
    choose_file(monkeypatch, broken)
    d = dialogs(CloneDialog(studio))
    click(qtbot, d.import_button)
    qtbot.waitUntil(lambda: bool(d.error.text()), timeout=TIMEOUT_MS)
    assert d.error.text().endswith(
        "broken.wav is not a readable audio file (Format not recognised)"
    )
    assert "\n" not in d.error.text() and d.import_button.isEnabled()

    audio, rate = studio.load_file(speech_wav)
    studio.clone(audio, rate, "words", "Grandma", "imported")
    choose_file(monkeypatch, speech_wav)
    click(qtbot, d.import_button)
    qtbot.waitUntil(lambda: d.check_label.text().startswith("Clip OK"), timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: bool(d.transcript.toPlainText()), timeout=TIMEOUT_MS)
    assert d.error.text() == ""  # a new clip clears the old message
    qtbot.keyClicks(d.name, "grandma")
    click(qtbot, d.save_button)
    qtbot.waitUntil(lambda: bool(d.error.text()), timeout=TIMEOUT_MS)
    assert d.error.text() == "A voice named 'Grandma' already exists: choose another name"
    assert d.isVisible() and library.names() == ["Grandma"] and d.save_button.isEnabled()


def test_a_transcript_typed_before_the_transcription_finishes_is_kept(
    dialogs, qtbot, monkeypatch, cloner, sensevoice, library, speech_wav
) -> None:
    gate, results = threading.Event(), []

    def slow_transcriber(audio16k: np.ndarray) -> str:
        gate.wait(TIMEOUT_MS / 1000)
        results.append(sensevoice.transcribe(audio16k).text)
        return results[-1]

    studio = VoiceStudio(lambda: cloner, slow_transcriber, library)
    choose_file(monkeypatch, speech_wav)
    d = dialogs(CloneDialog(studio))
    click(qtbot, d.import_button)
    qtbot.waitUntil(lambda: d.transcript_status.text() == "Transcribing…", timeout=TIMEOUT_MS)
    qtbot.keyClicks(d.transcript, "My own words")
    gate.set()
    qtbot.waitUntil(lambda: d.transcript_status.text() != "Transcribing…", timeout=TIMEOUT_MS)
    assert results and results[0]  # the model did answer, with other words
    assert d.transcript.toPlainText() == "My own words"
    qtbot.waitUntil(lambda: d.check_label.text().startswith("Clip OK"), timeout=TIMEOUT_MS)
    qtbot.keyClicks(d.name, "Mine")
    with qtbot.waitSignal(d.saved, timeout=TIMEOUT_MS):
        click(qtbot, d.save_button)
    assert library.entry("Mine").transcript == "My own words"


def recording_dialog(dialogs, studio, fake: FakeSoundDevice, countdown_s: int) -> CloneDialog:
    return dialogs(CloneDialog(studio, SoundDeviceRecorder(backend=fake), countdown_s=countdown_s))


def advance(qtbot, d: CloneDialog, fake: FakeSoundDevice, seconds: float) -> None:
    """The sound card's clock moves on; the dialog's timer takes the blocks."""
    steps = int(seconds / 0.1)
    for step in [0.1] * steps + [seconds - 0.1 * steps]:
        fake.advance(step)
        qtbot.wait(1)
    mic = fake.streams[0]
    recorded = mic.blocks * mic.blocksize  # a block is delivered once its last sample is in
    qtbot.waitUntil(lambda: d._recorded == recorded or d.state != "recording", timeout=5000)
    qtbot.wait(60)  # one more timer tick updates the controls


def test_recording_through_the_microphone_keeps_what_was_said(
    dialogs, qtbot, studio, library, sensevoice, speech_wav
) -> None:
    speech = read_audio(speech_wav, 16000)  # 6 s
    near = np.concatenate([speech, np.zeros(16000 * 2, np.float32)])
    fake = FakeSoundDevice(input_rate=24000, output_rate=48000, near_end=near,
                           near_end_rate=16000)  # fmt: skip
    d = recording_dialog(dialogs, studio, fake, countdown_s=1)
    click(qtbot, d.record_button)
    assert d.status.text() == "Recording starts in 1…" and not d.record_button.isEnabled()
    qtbot.waitUntil(lambda: d.state == "recording", timeout=TIMEOUT_MS)
    assert d.recorder.rate == 24000 and fake.now == 0.0
    advance(qtbot, d, fake, 4.0)
    assert d.elapsed.text() == "4.0 s of 15 s" and not d.stop_button.isEnabled()
    assert d.meter.value() > 0  # the level meter moves
    advance(qtbot, d, fake, 2.005)  # the block ending at 6 s is in
    assert d.elapsed.text() == "6.0 s of 15 s" and d.stop_button.isEnabled()
    click(qtbot, d.stop_button)
    qtbot.waitUntil(lambda: d.clip is not None, timeout=TIMEOUT_MS)
    assert fake.streams[0].closed  # the microphone is closed again
    assert d.clip_rate == 24000 and d.clip.size == 6 * 24000
    said = np.interp(np.arange(d.clip.size) * 16000 / 24000, np.arange(near.size), near)
    np.testing.assert_allclose(d.clip, said, atol=1e-6)  # every sample, in order
    assert d.record_button.text() == "Record &again" and d.play_button.isEnabled()

    qtbot.waitUntil(lambda: d.check_label.text().startswith("Clip OK"), timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: bool(d.transcript.toPlainText()), timeout=TIMEOUT_MS)
    assert d.transcript.toPlainText() == expected_transcript(sensevoice, d.clip, 24000)

    click(qtbot, d.play_button)  # played back through the speaker at its own rate
    qtbot.waitUntil(lambda: len(fake.streams) == 2 and fake.streams[1].active, timeout=5000)
    fake.advance(6.5)
    played = fake.played
    expected = resample(d.clip, 24000, 48000)
    assert not fake.streams[1].active  # it stops at the end of the clip
    np.testing.assert_allclose(played[: expected.size], expected, atol=1e-6)
    assert not played[expected.size :].any()

    qtbot.keyClicks(d.name, "Me")
    with qtbot.waitSignal(d.saved, timeout=TIMEOUT_MS):
        click(qtbot, d.save_button)
    assert library.entry("Me").source == "recorded"
    assert library.entry("Me").seconds == pytest.approx(6.0)


def test_recording_stops_itself_at_15_seconds(dialogs, qtbot, studio, speech_wav) -> None:
    speech = read_audio(speech_wav, 24000)
    fake = FakeSoundDevice(input_rate=24000, near_end=np.tile(speech, 3))  # 18 s
    d = recording_dialog(dialogs, studio, fake, countdown_s=0)
    click(qtbot, d.record_button)
    qtbot.waitUntil(lambda: d.state == "recording", timeout=TIMEOUT_MS)
    advance(qtbot, d, fake, 16.0)
    qtbot.waitUntil(lambda: d.clip is not None, timeout=TIMEOUT_MS)
    assert d.clip.size == 15 * 24000 and fake.streams[0].closed
    np.testing.assert_allclose(d.clip, np.tile(speech, 3)[: d.clip.size], atol=1e-6)
    assert d.elapsed.text() == "15.0 s of 15 s"


def test_a_missing_microphone_is_a_message(dialogs, qtbot, studio) -> None:
    from app.audio.fake_device import FakeDevice

    fake = FakeSoundDevice(devices=[FakeDevice("Speakers", max_output_channels=2)])
    d = recording_dialog(dialogs, studio, fake, countdown_s=0)
    click(qtbot, d.record_button)
    qtbot.waitUntil(lambda: bool(d.error.text()), timeout=TIMEOUT_MS)
    assert d.error.text() == (
        "Audio device: no audio input device found: is a microphone connected?"
    )
    assert d.state == "empty" and d.record_button.isEnabled()


def test_a_microphone_that_stops_sending_is_a_message(dialogs, qtbot, studio) -> None:
    fake = FakeSoundDevice(input_rate=24000, noise_dbfs=-40)
    d = recording_dialog(dialogs, studio, fake, countdown_s=0)
    d.stall_s = 0.5
    click(qtbot, d.record_button)
    qtbot.waitUntil(lambda: d.state == "recording", timeout=TIMEOUT_MS)
    advance(qtbot, d, fake, 1.0)
    assert d.state == "recording" and d.meter.value() > 0
    qtbot.waitUntil(lambda: bool(d.error.text()), timeout=TIMEOUT_MS)  # the clock stands still
    assert d.error.text() == (
        "Audio device: the microphone stopped sending sound (was it unplugged?)"
    )
    assert d.state == "empty" and d.clip is None and d.record_button.isEnabled()
    qtbot.waitUntil(lambda: fake.streams[0].closed, timeout=TIMEOUT_MS)


def test_the_manager_renames_deletes_and_previews(
    dialogs, qtbot, monkeypatch, studio, library, speech_wav, fixtures_dir
) -> None:
    for name, path in (("Alice", speech_wav), ("Bob", fixtures_dir / "audio" /
                       "cosyvoice_zero_shot_prompt.wav")):  # fmt: skip
        audio, rate = studio.load_file(path)
        studio.clone(audio, rate, "words", name, "imported")
    played: list[tuple[np.ndarray, int]] = []
    m = dialogs(VoiceManager(library, player=lambda audio, rate: played.append((audio, rate))))
    rows = [m.table.topLevelItem(i) for i in range(m.table.topLevelItemCount())]
    assert [(r.text(0), r.text(1)) for r in rows] == [("Alice", "6.0 s"), ("Bob", "3.5 s")]
    assert m.selected_name() == "Alice"

    answers = iter([("Ally", True), ("BOB", True)])
    monkeypatch.setattr(voices, "QInputDialog", SimpleNamespace(getText=lambda *a: next(answers)))
    with qtbot.waitSignal(m.changed, timeout=TIMEOUT_MS):
        click(qtbot, m.rename_button)
    assert library.names() == ["Ally", "Bob"] and m.selected_name() == "Ally"
    assert m.table.topLevelItem(0).text(0) == "Ally"
    from safetensors import safe_open

    with safe_open(str(library.entry("Ally").folder / PROFILE), framework="pt") as f:
        assert f.metadata()["name"] == "Ally"
    with qtbot.assertNotEmitted(m.changed, wait=100):
        click(qtbot, m.rename_button)  # to a taken name
        qtbot.waitUntil(lambda: "already exists" in m.status.text(), timeout=TIMEOUT_MS)
    assert m.status.text() == "A voice named 'Bob' already exists: choose another name"

    m.table.setCurrentItem(m.table.topLevelItem(1))
    click(qtbot, m.preview_button)
    qtbot.waitUntil(lambda: bool(played), timeout=TIMEOUT_MS)
    ((audio, rate),) = played
    assert rate == 24000
    np.testing.assert_array_equal(audio, library.reference("Bob"))

    asked = []
    confirm = SimpleNamespace(StandardButton=QMessageBox.StandardButton,
                              question=lambda *a: asked.append(a[2]) or
                              QMessageBox.StandardButton.Yes)  # fmt: skip
    monkeypatch.setattr(voices, "QMessageBox", confirm)
    with qtbot.waitSignal(m.changed, timeout=TIMEOUT_MS):
        click(qtbot, m.delete_button)
    assert "'Bob'" in asked[0]
    assert library.names() == ["Ally"] and m.table.topLevelItemCount() == 1
    confirm.question = lambda *a: QMessageBox.StandardButton.No
    with qtbot.assertNotEmitted(m.changed, wait=200):
        click(qtbot, m.delete_button)
    assert library.names() == ["Ally"]


def test_the_voice_widgets_import_no_torch() -> None:
    code = "import sys, app.gui.widgets.voices; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, check=True, timeout=60)  # fmt: skip
    assert done.stdout.strip() == "False"
