"""The Settings dialog, offscreen under pytest-qt, on the fake sound device: values round-trip
through the dialog to disk, Cancel saves nothing, a bad remote URL is refused in the dialog,
the devices come from the backend, the test tone reaches the speaker, the microphone check
reports the level it heard, a missing device or PortAudio is a line (never a crash), and the
connection test answers from a local server or names the address it could not reach."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QRadioButton,
)

from app.audio.devices import TONE_DBFS
from app.audio.fake_device import FakeDevice, FakeSoundDevice
from app.gui.settings import (
    Settings,
    audio_settings,
    load_settings,
    save_settings,
    settings_path,
    validate,
)
from app.gui.settings_dialog import NO_DEVICES, SettingsDialog
from minmo_core.errors import AudioError
from tests.test_hub import closed_port

TIMEOUT_MS = 30_000
RATE = 48000


def room() -> FakeSoundDevice:
    """Two microphones and one pair of speakers."""
    return FakeSoundDevice([
        FakeDevice("USB Headset Microphone", max_input_channels=1),
        FakeDevice("Laptop Microphone", max_input_channels=2),
        FakeDevice("Laptop Speakers", max_output_channels=2),
    ])  # fmt: skip


@pytest.fixture
def dialog(qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Dialogs for a test, saving into its own config folder. As in the app, no cycle
    collection runs while their worker threads do (see the window fixture in test_gui)."""
    import gc

    monkeypatch.setenv("MINMO_CONFIG_DIR", str(tmp_path / "config"))
    gc.collect()
    gc.disable()
    made = []

    def make(settings: Settings | None = None, backend=None) -> SettingsDialog:
        d = SettingsDialog(settings or Settings(), backend)
        qtbot.addWidget(d)
        made.append(d)
        d.show()
        return d

    yield make
    for d in made:  # every worker has reported before the dialog goes, on the GUI thread
        qtbot.waitUntil(lambda d=d: not d.running, timeout=TIMEOUT_MS)
        d.close()
        d.deleteLater()
    qtbot.wait(20)
    gc.enable()
    gc.collect()


def listed(qtbot, d: SettingsDialog) -> SettingsDialog:
    qtbot.waitUntil(lambda: "devices" not in d.running, timeout=TIMEOUT_MS)
    return d


def choose(combo: QComboBox, value: object) -> None:
    index = next(i for i in range(combo.count()) if combo.itemData(i) == value)
    combo.setCurrentIndex(index)


def until(qtbot, fake: FakeSoundDevice, condition) -> None:
    """The sound card's clock moves on (its callbacks run here) until ``condition()``."""

    def step() -> bool:
        fake.advance(0.2)
        return bool(condition())

    qtbot.waitUntil(step, timeout=TIMEOUT_MS)


def click(qtbot, widget) -> None:
    qtbot.mouseClick(widget, Qt.MouseButton.LeftButton)


def toggle(qtbot, box: QCheckBox) -> None:
    """Space on a check box, as from the keyboard."""
    box.setFocus()
    qtbot.keyClick(box, Qt.Key.Key_Space)


def tab(qtbot, d: SettingsDialog, title: str) -> None:
    """Click the tab whose title (without its mnemonic) is ``title``."""
    bar = d.tabs.tabBar()
    (index,) = [i for i in range(bar.count()) if bar.tabText(i).replace("&", "") == title]
    qtbot.mouseClick(bar, Qt.MouseButton.LeftButton, pos=bar.tabRect(index).center())
    assert d.tabs.currentIndex() == index


# -- saving ------------------------------------------------------------------------------------


def test_changed_values_round_trip_through_the_dialog_to_disk(qtbot, dialog, tmp_path):
    given = Settings(emotion="happy", extra={"future_key": [1, 2]})
    kept = replace(given, extra=dict(given.extra))
    d = listed(qtbot, dialog(given, room()))
    choose(d.input_combo, "Laptop Microphone")
    choose(d.output_combo, "Laptop Speakers")
    choose(d.aec_combo, "webrtc")
    toggle(qtbot, d.echo_box)
    assert not d.aec_combo.isEnabled()  # no canceller to choose with echo cancellation off
    choose(d.vad_combo, 3)
    choose(d.bargein_combo, "high")
    tab(qtbot, d, "Models")
    choose(d.pack_combo, "minmo-3b-cv3")  # a pack speaks with its own voice
    assert d.voice_combo.currentData() == "cosyvoice3" and d.voice_note.isVisibleTo(d)
    choose(d.pack_combo, "minmo-3b")
    assert d.voice_combo.currentData() == "cosyvoice2"
    qtbot.keyClicks(d.models_edit, str(tmp_path / "models"))
    choose(d.device_combo, "cpu")
    choose(d.precision_combo, "int8")
    choose(d.schedule_combo, "growing")
    assert not d.voice_note.isVisibleTo(d)
    assert not d.voice_lm_combo.isEnabled()  # CosyVoice 2 has one voice LM
    choose(d.voice_combo, "cosyvoice3")  # where the voice is picked, it says what it costs
    assert d.voice_lm_combo.isEnabled() and "--also llm.rl.pt" in d.voice_lm_combo.toolTip()
    choose(d.voice_lm_combo, "rl")
    assert d.voice_note.isVisibleTo(d) and "aligned mode" in d.voice_note.text()
    assert "needs CosyVoice 2" in d.voice_note.text()
    assert (
        "aligned mode" in d.voice_combo.currentText() or "composed" in d.voice_combo.currentText()
    )
    tab(qtbot, d, "Assistant")
    assert not d.url_edit.isEnabled()  # only for a remote server
    click(qtbot, d.remote_radio)
    assert d.url_edit.isEnabled() and d.model_edit.isEnabled()
    qtbot.keyClicks(d.url_edit, "http://127.0.0.1:8000/v1")
    qtbot.keyClicks(d.model_edit, "qwen2.5-7b")
    choose(d.policy_combo, "silence")
    assert "silence" in d.policy_text.text()
    qtbot.keyClicks(d.prompt_edit, "Be brief.")
    toggle(qtbot, d.save_audio_box)
    with qtbot.waitSignal(d.applied) as blocker:
        click(qtbot, d.ok_button)
    expected = replace(
        given, input_device="Laptop Microphone", output_device="Laptop Speakers",
        echo_cancellation=False, aec_backend="webrtc", vad_sensitivity=3,
        bargein_sensitivity="high", pack="minmo-3b",
        models_dir=str(tmp_path / "models"), device="cpu", precision="int8",
        chunk_schedule="growing", voice_release="cosyvoice3", voice_lm="rl", llm_backend="remote", llm_url="http://127.0.0.1:8000/v1",
        llm_model="qwen2.5-7b",
        turn_policy="silence", system_prompt="Be brief.", save_audio=True,
    )  # fmt: skip
    loaded, notice = load_settings()
    assert notice is None and loaded == expected and blocker.args[0] == expected
    assert loaded.extra == {"future_key": [1, 2]}  # a newer version's key survives the dialog
    assert d.result() == QDialog.DialogCode.Accepted
    assert given == kept  # the caller's Settings were never touched


def test_a_saved_choice_is_shown_and_apply_keeps_the_dialog_open(qtbot, dialog):
    given = Settings(input_device="Laptop Microphone", vad_sensitivity=0, llm_backend="remote",
                     llm_url="https://example.org/v1", turn_policy="duplex")  # fmt: skip
    d = listed(qtbot, dialog(given, room()))
    assert d.input_combo.currentText() == "Laptop Microphone"
    assert d.vad_combo.currentData() == 0 and d.remote_radio.isChecked()
    assert d.url_edit.text() == "https://example.org/v1"
    assert d.policy_combo.currentData() == "duplex"
    choose(d.bargein_combo, "low")
    with qtbot.waitSignal(d.applied) as blocker:
        click(qtbot, d.apply_button)
    assert blocker.args[0] == replace(given, bargein_sensitivity="low")
    assert load_settings()[0] == replace(given, bargein_sensitivity="low")
    assert d.result() != QDialog.DialogCode.Accepted  # still open for more


def test_cancel_changes_nothing_on_disk(qtbot, dialog):
    save_settings(Settings(turn_policy="silence"))
    before = settings_path().read_text()
    d = listed(qtbot, dialog(load_settings()[0], room()))
    toggle(qtbot, d.echo_box)
    tab(qtbot, d, "Assistant")
    choose(d.policy_combo, "duplex")
    qtbot.keyClicks(d.prompt_edit, "Talk like a pirate.")
    with qtbot.assertNotEmitted(d.applied):
        click(qtbot, d.cancel_button)
    assert d.result() == QDialog.DialogCode.Rejected
    assert settings_path().read_text() == before


def test_an_echo_canceller_that_is_not_installed_cannot_be_chosen(qtbot, dialog, monkeypatch):
    from app.audio import aec

    monkeypatch.setattr(aec, "backend_installed", lambda name: name == "webrtc")  # no libspeexdsp
    d = listed(qtbot, dialog(Settings(), room()))
    texts = [d.aec_combo.itemText(i) for i in range(d.aec_combo.count())]
    assert texts == ["Automatic (WebRTC AEC3)", "SpeexDSP (not installed)", "WebRTC AEC3"]
    model = d.aec_combo.model()
    assert [model.item(i).isEnabled() for i in range(3)] == [True, False, True]
    assert d.aec_combo.currentData() == "auto"


def test_a_remote_backend_without_an_http_url_is_refused_in_the_dialog(qtbot, dialog):
    d = listed(qtbot, dialog(Settings(), room()))
    tab(qtbot, d, "Assistant")
    click(qtbot, d.remote_radio)
    with qtbot.assertNotEmitted(d.applied):
        click(qtbot, d.ok_button)
    assert d.problems.isVisibleTo(d) and "needs a server URL" in d.problems.text()
    assert not settings_path().exists() and d.result() != QDialog.DialogCode.Accepted
    qtbot.keyClicks(d.url_edit, "ftp://example.org/v1")
    with qtbot.assertNotEmitted(d.applied):
        click(qtbot, d.apply_button)
    assert "'ftp://example.org/v1' is not an http:// or https:// address" in d.problems.text()
    assert "\n" not in d.problems.text() and not settings_path().exists()
    d.url_edit.clear()
    qtbot.keyClicks(d.url_edit, "http://localhost:8000/v1")
    with qtbot.waitSignal(d.applied):
        click(qtbot, d.ok_button)
    assert not d.problems.isVisibleTo(d)
    assert load_settings()[0].llm_url == "http://localhost:8000/v1"


def test_a_settings_file_that_cannot_be_written_is_a_line_in_the_dialog(
    qtbot, dialog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    monkeypatch.setenv("MINMO_CONFIG_DIR", str(blocker / "config"))  # under a file: no folder
    d = listed(qtbot, dialog(Settings(), room()))
    with qtbot.assertNotEmitted(d.applied):
        click(qtbot, d.ok_button)
    assert "could not be saved" in d.problems.text() and str(blocker) in d.problems.text()
    assert d.result() != QDialog.DialogCode.Accepted


# -- audio devices -----------------------------------------------------------------------------


def test_devices_are_listed_from_the_backend(qtbot, dialog):
    d = listed(qtbot, dialog(Settings(), room()))
    inputs = [d.input_combo.itemText(i) for i in range(d.input_combo.count())]
    outputs = [d.output_combo.itemText(i) for i in range(d.output_combo.count())]
    assert inputs == ["System default", "USB Headset Microphone", "Laptop Microphone"]
    assert outputs == ["System default", "Laptop Speakers"]
    assert d.input_combo.itemData(0) is None and d.input_combo.currentData() is None
    assert d.tone_button.isEnabled() and d.mic_button.isEnabled()
    assert not d.devices_status.isVisibleTo(d)


def test_a_saved_device_that_is_unplugged_is_kept_and_says_so(qtbot, dialog):
    d = listed(qtbot, dialog(Settings(input_device="Old Webcam"), room()))
    assert d.input_combo.currentText() == "Old Webcam (not connected)"
    assert d.values().input_device == "Old Webcam"


def test_no_devices_is_a_message_and_no_crash(qtbot, dialog):
    d = listed(qtbot, dialog(Settings(output_device="Laptop Speakers"), FakeSoundDevice([])))
    assert d.devices_status.isVisibleTo(d) and d.devices_status.text() == NO_DEVICES
    assert not d.tone_button.isEnabled() and not d.mic_button.isEnabled()
    with qtbot.waitSignal(d.applied):  # the rest of the settings still save
        click(qtbot, d.ok_button)
    assert load_settings()[0].output_device == "Laptop Speakers"


def test_without_portaudio_the_audio_tab_says_so(qtbot, dialog, monkeypatch):
    import app.audio.devices

    def missing():
        raise AudioError("PortAudio is not available: libportaudio.so.2: cannot open")

    monkeypatch.setattr(app.audio.devices, "sounddevice_backend", missing)
    d = listed(qtbot, dialog(Settings(), None))
    assert d.devices_status.text().startswith(NO_DEVICES)
    assert "PortAudio is not available" in d.devices_status.text()
    assert not d.tone_button.isEnabled() and not d.mic_button.isEnabled()


def test_the_test_tone_reaches_the_chosen_speakers(qtbot, dialog):
    fake = room()
    d = listed(qtbot, dialog(Settings(), fake))
    choose(d.output_combo, "Laptop Speakers")
    click(qtbot, d.tone_button)
    assert not d.tone_button.isEnabled()  # one tone at a time
    until(qtbot, fake, lambda: "tone" not in d.running)
    assert d.tone_status.text() == "played a 440 Hz tone on Laptop Speakers"
    assert d.tone_button.isEnabled()
    (stream,) = fake.streams
    assert stream.kind == "output" and stream.output_device.name == "Laptop Speakers"
    played = fake.played
    sound = played[np.abs(played) > 1e-4]
    assert abs(sound.size / RATE - 1.0) < 0.02  # a second of tone, then silence
    spectrum = np.abs(np.fft.rfft(played))
    assert abs(np.fft.rfftfreq(played.size, 1 / RATE)[spectrum.argmax()] - 440) < 2
    assert 20 * np.log10(np.abs(played).max()) == pytest.approx(TONE_DBFS, abs=0.1)


def test_the_microphone_check_reports_silence(qtbot, dialog):
    fake = room()  # nobody speaks and there is no noise
    d = listed(qtbot, dialog(Settings(), fake))
    click(qtbot, d.mic_button)
    until(qtbot, fake, lambda: "mic" not in d.running)
    assert d.mic_verdict.text() == "silent: is the microphone muted?"
    assert d.mic_meter.value() == 0


def test_the_microphone_check_hears_a_sine_at_its_level(qtbot, dialog):
    t = np.arange(RATE * 10) / RATE
    fake = room()
    fake.near_end = (0.1 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)  # -20 dBFS peak
    d = listed(qtbot, dialog(Settings(), fake))
    choose(d.input_combo, "Laptop Microphone")
    click(qtbot, d.mic_button)
    until(qtbot, fake, lambda: "mic" not in d.running)
    assert d.mic_level == pytest.approx(-20.0, abs=0.5)
    assert d.mic_verdict.text() == "hearing you at -20 dBFS"
    assert d.mic_meter.value() == 40  # -20 dBFS on a -60 .. 0 meter
    (stream,) = fake.streams
    assert stream.kind == "input" and stream.input_device.name == "Laptop Microphone"
    assert abs(stream.blocks * stream.blocksize / stream.samplerate - 2.0) < 0.05  # ~2 s


def test_a_device_gone_since_listing_is_a_line_not_a_crash(qtbot, dialog):
    fake = room()
    d = listed(qtbot, dialog(Settings(), fake))
    choose(d.input_combo, "USB Headset Microphone")
    fake.devices[0].connected = False  # unplugged after the list was made
    click(qtbot, d.mic_button)
    qtbot.waitUntil(lambda: "mic" not in d.running, timeout=TIMEOUT_MS)
    verdict = d.mic_verdict.text()
    assert verdict.startswith("microphone check failed: audio input device")
    assert "'USB Headset Microphone' not found" in verdict and "\n" not in verdict
    assert d.mic_button.isEnabled()


# -- the connection test -----------------------------------------------------------------------


@pytest.fixture
def models_server():
    """A local OpenAI-compatible server that only lists its models (at /v1/models)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            if self.path != "/v1/models":
                self.send_error(404)
                return
            body = json.dumps({"object": "list", "data": [{"id": "a"}, {"id": "b"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_the_connection_test_lists_the_servers_models(qtbot, dialog, models_server):
    d = listed(qtbot, dialog(Settings(), room()))
    tab(qtbot, d, "Assistant")
    click(qtbot, d.remote_radio)
    qtbot.keyClicks(d.url_edit, models_server + "/")
    click(qtbot, d.test_button)
    qtbot.waitUntil(lambda: "connection" not in d.running, timeout=TIMEOUT_MS)
    assert d.connection_status.text() == "reachable: 2 models"
    d.url_edit.setText(models_server.removesuffix("/v1"))  # no /v1: the server says 404
    click(qtbot, d.test_button)
    qtbot.waitUntil(lambda: "connection" not in d.running, timeout=TIMEOUT_MS)
    assert d.connection_status.text().startswith("unreachable: ")
    assert "HTTP 404" in d.connection_status.text()


def test_the_connection_test_names_an_address_that_does_not_answer(qtbot, dialog):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    d = listed(qtbot, dialog(Settings(llm_backend="remote", llm_url=url), room()))
    tab(qtbot, d, "Assistant")
    click(qtbot, d.test_button)
    qtbot.waitUntil(lambda: "connection" not in d.running, timeout=TIMEOUT_MS)
    status = d.connection_status.text()
    assert status.startswith(f"unreachable: {url}/models: ") and "\n" not in status
    assert "refused" in status.lower()


def test_the_connection_test_needs_an_http_url_first(qtbot, dialog):
    d = listed(qtbot, dialog(Settings(llm_backend="remote", llm_url="localhost:8000"), room()))
    tab(qtbot, d, "Assistant")
    click(qtbot, d.test_button)
    assert "connection" not in d.running
    assert d.connection_status.text() == "enter an http:// or https:// server URL first"


# -- the settings file and what the audio path takes from it ----------------------------------


def test_wrong_typed_or_unknown_values_are_dropped_on_loading(tmp_path: Path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({
        "vad_sensitivity": True,  # a bool is not an int setting
        "save_audio": 1,  # nor an int a bool
        "precision": "fp8",  # not one of the choices
        "bargein_sensitivity": "high",
        "pack": "minmo-1.5b",
    }))  # fmt: skip
    loaded, notice = load_settings(path)
    assert notice is None
    assert loaded == Settings(bargein_sensitivity="high", pack="minmo-1.5b")
    path.write_text(json.dumps({"vad_sensitivity": 0}))
    assert load_settings(path)[0].vad_sensitivity == 0


def test_a_file_from_before_the_backend_choice_keeps_its_remote_server(tmp_path: Path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"llm_url": "http://gpu-box:8000/v1"}))
    assert load_settings(path)[0].llm_backend == "remote"
    path.write_text(json.dumps({"llm_url": "http://gpu-box:8000/v1", "llm_backend": "local"}))
    assert load_settings(path)[0].llm_backend == "local"


def test_a_settings_file_that_is_not_an_object_is_set_aside(tmp_path: Path):
    path = tmp_path / "settings.json"
    path.write_text("[1, 2]")
    loaded, notice = load_settings(path)
    assert loaded == Settings() and "not a settings object" in notice
    assert (tmp_path / "settings.json.bad").read_text() == "[1, 2]" and not path.exists()


def test_validate_names_each_problem():
    assert validate(Settings()) == []
    assert validate(Settings(llm_backend="remote", llm_url="https://api.example.org/v1")) == []
    assert validate(Settings(llm_url="not a url")) == []  # unused while the LLM is local
    (problem,) = validate(Settings(vad_sensitivity=True))
    assert problem.startswith("vad_sensitivity is True")
    (problem,) = validate(Settings(llm_backend="remote", llm_url="http://"))
    assert "'http://' is not an http:// or https:// address" in problem


def test_audio_settings_follow_the_users_choices():
    audio = audio_settings(Settings(input_device="Laptop Microphone", output_device="HDMI",
                                    vad_sensitivity=1, bargein_sensitivity="high"))  # fmt: skip
    assert (audio.input_device, audio.output_device) == ("Laptop Microphone", "HDMI")
    assert audio.vad_aggressiveness == 1 and audio.bargein_min_speech_ms == 60
    assert (
        audio.echo_cancellation
        and not audio_settings(Settings(echo_cancellation=False)).echo_cancellation
    )
    assert audio.aec_backend == "auto"
    assert audio_settings(Settings(aec_backend="webrtc")).aec_backend == "webrtc"
    assert audio_settings(Settings()).bargein_min_speech_ms == 100
    low = audio_settings(Settings(bargein_sensitivity="low"))
    assert low.bargein_min_speech_ms == 200
    assert low.bargein_false_ms == audio_settings(Settings()).bargein_false_ms


def test_every_control_has_a_name_for_keyboard_and_screen_readers(qtbot, dialog):
    d = listed(qtbot, dialog(Settings(), room()))
    kinds = (QComboBox, QLineEdit, QPlainTextEdit, QPushButton, QCheckBox, QRadioButton)
    controls = [w for kind in kinds for w in d.findChildren(kind)]
    assert len(controls) > 20
    unnamed = [type(w).__name__ for w in controls if not w.accessibleName()]
    assert not unnamed
    buddies = {label.text(): label.buddy() for label in d.findChildren(QLabel) if label.buddy()}
    assert buddies["&Input device:"] is d.input_combo
    assert buddies["Ou&tput device:"] is d.output_combo
    assert buddies["Model &pack:"] is d.pack_combo
    assert buddies["Ser&ver URL:"] is d.url_edit
    assert buddies["S&ystem prompt:"] is d.prompt_edit


def test_the_voice_releases_offered_are_the_stacks(monkeypatch, tmp_path: Path):
    from app.gui.settings import VOICE_RELEASES
    from minmo_core.engine.stack import VOICE_RELEASES as STACK_RELEASES
    from minmo_core.engine.stack import voice_folder
    from minmo_core.errors import CheckpointError

    assert tuple(STACK_RELEASES) == VOICE_RELEASES
    monkeypatch.setenv("MINMO_MODELS_DIR", str(tmp_path))
    monkeypatch.delenv("MINMO_COSYVOICE3_DIR", raising=False)
    assert voice_folder("cosyvoice2") is None  # the usual default, as before
    with pytest.raises(CheckpointError, match=r"2512 is not installed .*minmo-7b-cv3.*import"):
        voice_folder("cosyvoice3")
    (tmp_path / "Fun-CosyVoice3-0.5B-2512").mkdir()
    assert voice_folder("cosyvoice3") == tmp_path / "Fun-CosyVoice3-0.5B-2512"
    monkeypatch.setenv("MINMO_COSYVOICE3_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(CheckpointError, match="elsewhere"):
        voice_folder("cosyvoice3")


def test_the_chunk_schedules_offered_are_the_engines():
    """The settings name the schedules without importing torch; they must stay the same."""
    from app.gui.settings import CHUNK_SCHEDULES
    from minmo_core.voice.token2wav import SCHEDULES

    assert tuple(SCHEDULES) == CHUNK_SCHEDULES
