"""The window, offscreen under pytest-qt, on tiny models: typed turns stream into the
conversation, Esc cuts a reply with the unheard part greyed after a marker, engine errors
and a corrupt settings file become visible notices, and the first run says what to fetch."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from app.gui.session import Session, needs_setup
from app.gui.settings import Settings, load_settings, save_settings
from app.gui.widgets.conversation import CUT
from app.gui.window import MainWindow
from minmo_core.engine.engine import ConversationEngine, EngineSettings
from minmo_core.llm.chat import ChatLLM
from tests.test_engine import GREEDY

TIMEOUT_MS = 60_000


def tiny_factory(qwen_dir: Path, voice, slow: float = 0.0, tokens: int = 16):
    def build(bridge):
        llm = ChatLLM(qwen_dir, replace(GREEDY, max_new_tokens=tokens), device="cpu")
        if slow:  # each token takes a while: a reply long enough to interrupt
            stream = llm.stream

            def slow_stream(*args, **kwargs):
                for event in stream(*args, **kwargs):
                    time.sleep(slow)
                    yield event

            llm.stream = slow_stream
        engine = ConversationEngine(llm, voice, bridge, EngineSettings(seed=0))
        return Session(engine.start())

    return build


@pytest.fixture
def window(qtbot, request):
    """Windows for a test. As in the app (app/gui/app.py), no cycle collection runs while
    they live: a worker thread's collection could destroy Qt objects off the GUI thread."""
    import gc

    gc.collect()
    gc.disable()
    windows = []

    def make(*args, **kwargs) -> MainWindow:
        w = MainWindow(*args, **kwargs)
        qtbot.addWidget(w)
        windows.append(w)
        return w

    yield make
    import gc

    for w in windows:  # closed and deleted here, on the GUI thread: never by a worker's GC
        w.close()
        w.deleteLater()
    qtbot.wait(20)
    gc.unfreeze()  # (a loaded window freezes the models' objects out of collections)
    gc.enable()
    gc.collect()


def test_a_typed_turn_streams_into_the_conversation(window, qtbot, qwen_dir, voice) -> None:
    w = window(tiny_factory(qwen_dir, voice))
    qtbot.waitUntil(lambda: w.engine is not None, timeout=TIMEOUT_MS)
    assert w.entry.isEnabled()
    qtbot.keyClicks(w.entry, "Hello there!")
    qtbot.keyClick(w.entry, "\r")
    engine = w.engine.engine
    qtbot.waitUntil(lambda: bool(engine.turns), timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: w.state.state == "idle", timeout=TIMEOUT_MS)
    (user, reply) = [w.conversation.turns[(1, role)] for role in ("user", "assistant")]
    assert user.plain == "Hello there!" and w.entry.text() == ""
    assert reply.plain == engine.turns[-1].reply and reply.heard is None


def test_esc_cuts_the_reply_and_greys_what_was_not_heard(window, qtbot, qwen_dir, voice):
    w = window(tiny_factory(qwen_dir, voice, slow=0.05, tokens=40))
    qtbot.waitUntil(lambda: w.engine is not None, timeout=TIMEOUT_MS)
    w.entry.setText("Tell me a long story.")
    w.send()
    qtbot.waitUntil(lambda: (1, "assistant") in w.conversation.turns, timeout=TIMEOUT_MS)
    reply = w.conversation.turns[(1, "assistant")]
    qtbot.waitUntil(lambda: len(reply.plain) > 3, timeout=TIMEOUT_MS)
    states = []
    w.bridge.event.connect(lambda e: states.append(getattr(e, "state", None)))
    qtbot.keyClick(w.entry, Qt.Key.Key_Escape)  # from the focused text box
    qtbot.waitUntil(lambda: reply.heard is not None, timeout=TIMEOUT_MS)
    assert CUT in reply.text.text() and reply.plain.startswith(reply.heard)
    qtbot.waitUntil(lambda: "interrupted" in [str(s) for s in states], timeout=TIMEOUT_MS)
    assert w.engine.engine.turns[-1].interrupted


def test_an_engine_error_is_a_notice_and_the_window_carries_on(window, qtbot, qwen_dir, voice):
    w = window(tiny_factory(qwen_dir, voice))
    qtbot.waitUntil(lambda: w.engine is not None, timeout=TIMEOUT_MS)
    engine = w.engine.engine
    real = engine.llm.stream

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    engine.llm.stream = broken
    w.entry.setText("Hello")
    w.send()
    qtbot.waitUntil(lambda: w.notice.isVisibleTo(w), timeout=TIMEOUT_MS)
    assert "out of memory" in w.notice.text()
    engine.llm.stream = real  # the next turn works
    w.entry.setText("Hello again")
    w.send()
    qtbot.waitUntil(lambda: bool(engine.turns), timeout=TIMEOUT_MS)


def test_a_failed_model_load_is_a_notice(window, qtbot) -> None:
    def fails(bridge):
        raise FileNotFoundError("no Qwen2.5-7B-Instruct folder")

    w = window(fails)
    qtbot.waitUntil(lambda: w.notice.isVisibleTo(w), timeout=TIMEOUT_MS)
    assert "could not be loaded" in w.notice.text() and "Qwen2.5-7B" in w.notice.text()
    assert not w.entry.isEnabled()


def test_settings_round_trip_and_a_corrupt_file_is_survived(tmp_path: Path, window) -> None:
    path = tmp_path / "settings.json"
    settings = Settings(emotion="happy", turn_policy="silence", echo_cancellation=False)
    save_settings(settings, path)
    loaded, notice = load_settings(path)
    assert loaded == settings and notice is None
    path.write_text('{"emotion": "happy", "future_key": 3}')  # a newer version's key is kept
    loaded, _ = load_settings(path)
    assert loaded.emotion == "happy" and loaded.extra == {"future_key": 3}
    save_settings(loaded, path)
    assert '"future_key": 3' in path.read_text()
    path.write_text("{not json")
    loaded, notice = load_settings(path)
    assert loaded == Settings() and "not usable" in notice
    assert (tmp_path / "settings.json.bad").read_text() == "{not json"
    w = window(None, loaded, notice)
    assert w.notice.isVisibleTo(w) and "Default settings are in use" in w.notice.text()


def test_the_first_run_opens_on_the_setup_screen(tmp_path: Path, monkeypatch, window) -> None:
    monkeypatch.setenv("MINMO_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.delenv("MINMO_LLM_DIR", raising=False)
    assert needs_setup(Settings())  # no LLM installed, none named
    assert not needs_setup(Settings(llm_dir=str(tmp_path)))  # a folder named
    assert not needs_setup(Settings(llm_backend="remote", llm_url="http://gpu-box:8000/v1"))
    w = window(None, setup=True)
    assert w.setup_panel.isVisibleTo(w) and not w.entry.isEnabled()
    assert w.pages.currentWidget().isAncestorOf(w.setup_panel)
    # a pack installed there is the one to load, and its voice the one that speaks
    w.setup_done("minmo-3b-cv3")
    assert (w.settings.pack, w.settings.voice_release) == ("minmo-3b-cv3", "cosyvoice3")
    w.setup_done("minmo-0.5b")
    assert (w.settings.pack, w.settings.voice_release) == ("minmo-0.5b", "cosyvoice2")


def test_without_a_display_it_says_so_in_one_line(monkeypatch, capsys) -> None:
    from app.gui import app as gui

    for name in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(gui.sys, "platform", "linux")
    assert gui.run() == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "minmo converse" in err


def test_a_spoken_turn_and_a_barge_in_through_the_fake_sound_device(
    window, qtbot, qwen_dir, voice, sensevoice, fixtures_dir
) -> None:
    import numpy as np

    from app.audio.events import BargeIn, BargeInConfirmed
    from minmo_core.common.audio import read_audio

    question = read_audio(fixtures_dir / "audio" / "sensevoice_sample.wav", 16000)
    near = np.concatenate([np.zeros(8000, np.float32), question, np.zeros(16000 * 60, np.float32)])
    w, live, fake, tick, until = live_window(window, qtbot, qwen_dir, voice, sensevoice, near,
                                             tokens=30)  # fmt: skip
    shown = []  # what the microphone meter showed
    w.state.mic.valueChanged.connect(shown.append)
    seen = []  # the events' kinds and states, as the window got them
    w.bridge.event.connect(lambda e: seen.append(str(getattr(e, "state", type(e).__name__))))
    until(lambda: any(role == "user" and t.tags() is not None and t.plain
                      for (_, role), t in w.conversation.turns.items()))  # fmt: skip
    until(lambda: w.state.state == "speaking")
    assert max(shown) > 30  # the user's voice reached the meter (above -30 dBFS)
    turn = max(tid for tid, role in w.conversation.turns if role == "assistant")
    reply = w.conversation.turns[(turn, "assistant")]
    until(lambda: live.stream.is_playing)
    tick(0.3)
    live._audio_event(BargeIn(fake.now, fake.now - 0.1))  # the user talks over it
    assert not live.stream.is_playing  # silent at once
    tick(0.8)
    live._audio_event(BargeInConfirmed(fake.now))
    until(lambda: reply.heard is not None)
    assert CUT in reply.text.text()
    until(lambda: w.engine.engine.turns and w.engine.engine.turns[-1].interrupted)
    assert "PartialTranscript" in seen and "interrupted" in seen  # (the words came live)
    # the timeline: the user's speech, the decision, the reply cut at the barge-in, the gap
    model = w.timeline.model
    kinds = [m.kind for m in model.markers]
    assert "barge-in" in kinds and "cut" in kinds and "decision" in kinds
    assert model.user and model.user[0].end is not None
    cut_at = next(m.t for m in model.markers if m.kind == "barge-in")
    assert all(s.end <= cut_at + 1e-6 for s in model.assistant if s.turn_id == turn)
    qtbot.waitUntil(lambda: turn in model.stages, timeout=TIMEOUT_MS)
    w.timeline.canvas.select(turn)  # as a click on it does
    assert "first audio" in w.timeline.details.text()
    assert w.timeline.model.gaps[turn].seconds > 0


def test_the_history_is_saved_as_it_happens_and_survives_a_kill(
    window, qtbot, qwen_dir, voice, tmp_path: Path
) -> None:
    import subprocess
    import sys

    from app.gui.history import read_history, to_markdown

    w = window(tiny_factory(qwen_dir, voice))
    qtbot.waitUntil(lambda: w.engine is not None, timeout=TIMEOUT_MS)
    w.entry.setText("Hello there!")
    w.send()
    qtbot.waitUntil(lambda: len(read_history(w.history.path)) == 2, timeout=TIMEOUT_MS)
    user, reply = read_history(w.history.path)
    assert (user["role"], user["text"], user["typed"]) == ("user", "Hello there!", True)
    assert reply["text"] == w.engine.engine.turns[-1].reply and not reply["interrupted"]
    assert "**You:** Hello there!" in to_markdown([user, reply])
    # a process killed mid-write: the whole lines before it are read, the torn one skipped
    child = (
        "import os, signal, sys; sys.path.insert(0, sys.argv[2]); from pathlib import Path; "
        "from app.gui.history import HistoryWriter; w = HistoryWriter(Path(sys.argv[1])); "
        "w.record(turn=1, role='user', text='hi'); "
        "w.record(turn=1, role='assistant', text='hello', heard='hel', interrupted=True); "
        'w.close(); open(w.path, \'a\').write(\'{"turn": 2, "role": "us\'); '
        "os.kill(os.getpid(), signal.SIGKILL)"
    )
    from tests.conftest import REPO

    done = subprocess.run([sys.executable, "-c", child, str(tmp_path), str(REPO)], timeout=60)
    assert done.returncode != 0
    (path,) = tmp_path.glob("*.jsonl")
    records = read_history(path)
    assert [r["text"] for r in records] == ["hi", "hello"]
    assert "hel ✂ ~~lo~~" in to_markdown(records)


def live_window(
    window, qtbot, qwen_dir, voice, sensevoice, near, settings=None, studio=None, tokens=12
):
    """A window whose session runs the real audio path on the fake sound device (its clock
    moved by the test: ``tick``)."""
    from app.audio.events import AudioSettings
    from app.audio.fake_device import FakeSoundDevice
    from app.conversation import LiveConversation
    from minmo_core.engine.turns import SilencePolicy

    fake = FakeSoundDevice(input_rate=16000, output_rate=24000, near_end=near, seed=0)
    made: dict = {}

    def build(bridge):
        def engine(on_event):
            llm = ChatLLM(qwen_dir, replace(GREEDY, max_new_tokens=tokens), device="cpu")
            return ConversationEngine(llm, voice, on_event, EngineSettings(seed=0), sensevoice,
                                      SilencePolicy(0.5))  # fmt: skip

        live = LiveConversation(engine, bridge, AudioSettings(), backend=fake)
        made["live"] = live.start(threaded=False)
        return Session(live.engine, live, studio, bridge)

    w = window(build, settings)
    qtbot.waitUntil(lambda: w.engine is not None, timeout=TIMEOUT_MS)
    live = made["live"]

    def tick(seconds: float = 0.05) -> None:
        for _ in range(round(seconds / 0.01)):
            fake.advance(0.01)
            live.stream.pump()

    def until(condition) -> None:
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while not condition() and time.monotonic() < deadline:
            tick()
            qtbot.wait(5)
        assert condition()

    return w, live, fake, tick, until


def test_push_to_talk_with_space(window, qtbot, qwen_dir, voice, sensevoice, fixtures_dir):
    import numpy as np

    from minmo_core.common.audio import read_audio

    question = read_audio(fixtures_dir / "audio" / "sensevoice_sample.wav", 16000)[: 16000 * 3]
    gap = np.zeros(8000, np.float32)
    near = np.concatenate([gap, question, gap, question, np.zeros(16000 * 60, np.float32)])
    settings = Settings(talk_mode="push-to-talk")
    w, live, _, tick, until = live_window(window, qtbot, qwen_dir, voice, sensevoice, near,
                                          settings)  # fmt: skip
    assert w.push_to_talk.isChecked() and not w.talk_button.isHidden() and live.push_to_talk
    tick(0.5 + 3.0 + 0.4)  # the first time, without the key: heard by the VAD, not a turn
    qtbot.wait(50)
    assert not w.conversation.turns
    w.conversation.setFocus()
    qtbot.keyPress(w.conversation, Qt.Key.Key_Space)
    assert w.talk_button.isDown()
    tick(3.2)
    qtbot.keyRelease(w.conversation, Qt.Key.Key_Space)
    until(lambda: any(role == "user" and t.plain and not t.plain.endswith("…")
                      for (_, role), t in w.conversation.turns.items()))  # fmt: skip
    until(lambda: w.engine.engine.turns)
    until(lambda: w.timeline.model.stages)  # the timings reach the window by a queued signal
    (timings,) = [t for t in w.timeline.model.stages.values()]
    assert timings.timings.policy == "push-to-talk"
    # Space typed into the message box is a space, not talking
    w.entry.setFocus()
    qtbot.keyClick(w.entry, Qt.Key.Key_Space)
    assert w.entry.text() == " " and not w.talk_button.isDown()
    w.hands_free.click()  # back to hands-free, saved in the settings
    assert not live.push_to_talk and w.talk_button.isHidden()
    assert load_settings()[0].talk_mode == "hands-free"


def test_the_style_panel_marks_what_the_loaded_release_did_not_learn(qtbot) -> None:
    from app.gui.widgets.style import StylePanel

    panel = StylePanel()
    qtbot.addWidget(panel)
    dialect, volume = panel.menus["dialect"], panel.menus["volume"]
    henan, zhengzhou = dialect.findData("henan"), dialect.findData("zhengzhou")
    volume.setCurrentIndex(volume.findData("loud"))
    dialect.setCurrentIndex(henan)
    assert panel.cosyvoice == 2
    assert dialect.itemText(henan) == "Henan (experimental)"
    assert dialect.itemText(zhengzhou) == "Zhengzhou"
    assert dialect.itemData(zhengzhou, Qt.ItemDataRole.ToolTipRole) == "郑州话"
    with qtbot.assertNotEmitted(panel.changed):
        panel.set_backend(3)  # a CosyVoice 3 pack was loaded
    assert dialect.itemText(henan) == "Henan" and dialect.itemText(zhengzhou).endswith(
        "(experimental)"
    )
    assert dialect.itemData(henan, Qt.ItemDataRole.ToolTipRole) == "请用河南话表达。"
    assert volume.itemText(volume.findData("loud")) == "Loud"
    assert panel.values()["dialect"] == "henan" and panel.values()["volume"] == "loud"
    panel.set_backend(None)  # no voice loaded: the marks stay as they were
    assert panel.cosyvoice == 3


def test_style_and_voice_changes_reach_the_engine(
    window, qtbot, qwen_dir, voice, sensevoice, tiny_release_dir, fixtures_dir, monkeypatch
):
    from PySide6.QtWidgets import QFileDialog

    from app.gui.widgets.voices import CloneDialog
    from minmo_core.voice.library import VoiceLibrary, VoiceStudio
    from minmo_core.voice.styles import Dialect, Emotion
    from minmo_core.voice.voice_clone import VoiceCloner

    library = VoiceLibrary()
    studio = VoiceStudio(lambda: VoiceCloner.from_folder(tiny_release_dir, allow_unpinned=True),
                         lambda a: sensevoice.transcribe(a).text, library)  # fmt: skip
    import numpy as np

    quiet = np.zeros(16000 * 5, np.float32)
    w, *_, until = live_window(window, qtbot, qwen_dir, voice, sensevoice, quiet, studio=studio)
    engine = w.engine.engine
    panel = w.style_panel
    panel.menus["emotion"].setCurrentIndex(panel.menus["emotion"].findData("happy"))
    panel.menus["dialect"].setCurrentIndex(panel.menus["dialect"].findData("sichuanese"))
    until(lambda: engine.settings.voice.style.dialect is Dialect.SICHUANESE)
    assert engine.settings.voice.style.emotion is Emotion.HAPPY
    assert engine.settings.voice.wording == "zh"  # dialects are worded in Chinese
    assert load_settings()[0].emotion == "happy"  # and the choice is kept
    # "Clone a voice…" from a file: the picker then lists it, and picking it reaches the engine
    clip = fixtures_dir / "audio" / "cosyvoice_zero_shot_prompt.wav"
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(clip), ""))
    w.open_clone()
    (dialog,) = [d for d in w._dialogs if isinstance(d, CloneDialog)]
    dialog.import_file()
    qtbot.waitUntil(lambda: dialog.check_label.text().startswith("Clip OK"), timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: bool(dialog.transcript.toPlainText()), timeout=TIMEOUT_MS)
    dialog.name.setText("Grandma")
    assert dialog.save_button.isEnabled()
    dialog.save()
    qtbot.waitUntil(lambda: w.style_panel.voice.findData("Grandma") >= 0, timeout=TIMEOUT_MS)
    until(lambda: engine.settings.voice.voice is not None)
    assert engine.settings.voice.voice.name == "Grandma" and w.settings.voice == "Grandma"
    panel.voice.setCurrentIndex(panel.voice.findData(None))  # back to the default voice
    until(lambda: engine.settings.voice.voice is None)


def load_without_sound(window, qtbot, settings: Settings):
    """A window loaded by the real loader (default_factory) with no audio device:
    (window, the LoadProgress events it got)."""
    from app.audio.fake_device import FakeSoundDevice
    from app.gui.session import LoadProgress, default_factory

    factory = default_factory(settings, FakeSoundDevice(devices=[]), allow_unpinned=True)
    seen = []
    w = window(None, settings)
    w.bridge.event.connect(lambda e: seen.append(e) if isinstance(e, LoadProgress) else None)
    w.load(factory)
    qtbot.waitUntil(lambda: w.engine is not None, timeout=TIMEOUT_MS)
    return w, seen


def test_without_a_sound_device_the_window_loads_for_typed_messages(
    window, qtbot, qwen_dir, tiny_release_dir, tiny_sensevoice_dir, monkeypatch
) -> None:
    """The real loader (default_factory): each part's progress reaches the bar, and with no
    audio device the window says so and still serves typed messages and cloning."""
    monkeypatch.setenv("MINMO_COSYVOICE_DIR", str(tiny_release_dir))
    monkeypatch.setenv("MINMO_SENSEVOICE_DIR", str(tiny_sensevoice_dir))
    settings = Settings(llm_dir=str(qwen_dir), turn_policy="silence", device="cpu")
    w, seen = load_without_sound(window, qtbot, settings)
    assert [(p.step, p.steps) for p in seen] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert "SenseVoiceSmall" in seen[0].what and seen[-1].what == "ready"
    assert w.loading.isHidden() and w.entry.isEnabled()
    assert w.notice.isVisibleTo(w) and "no sound" in w.notice.text()
    assert "no audio input device" in w.notice.text() and "typed messages only" in w.notice.text()
    assert not w.engine.hands_free and w.engine.studio is not None


def test_the_voice_release_picked_in_settings_is_the_one_that_speaks(
    window, qtbot, qwen_dir, tiny_release_v3_dir, tiny_sensevoice_dir, monkeypatch
) -> None:
    monkeypatch.setenv("MINMO_COSYVOICE3_DIR", str(tiny_release_v3_dir))
    monkeypatch.setenv("MINMO_SENSEVOICE_DIR", str(tiny_sensevoice_dir))
    settings = Settings(llm_dir=str(qwen_dir), turn_policy="silence", device="cpu",
                        voice_release="cosyvoice3", dialect="henan")  # fmt: skip
    w, seen = load_without_sound(window, qtbot, settings)
    assert "Fun-CosyVoice3-0.5B-2512" in seen[1].what
    assert w.engine.cosyvoice == 3 and w.engine.studio.cosyvoice == 3
    dialect = w.style_panel.menus["dialect"]
    assert w.style_panel.cosyvoice == 3 and dialect.currentData() == "henan"
    assert dialect.currentText() == "Henan"  # trained on CosyVoice 3: not experimental there
    engine = w.engine.engine
    qtbot.waitUntil(lambda: engine.settings.voice.style.dialect is not None, timeout=TIMEOUT_MS)


def test_the_model_loader_runs_on_a_worker_and_is_deleted_on_the_gui_thread(window, qtbot):
    """A Python QObject deleted on a worker thread takes the GIL while Qt holds its
    connection locks, which can hang the GUI thread; the loader goes home first."""
    import threading

    gate, ran_on, deleted_on = threading.Event(), [], []

    def factory(bridge):
        gate.wait(10)
        ran_on.append(threading.get_ident())
        raise RuntimeError("no models here")

    w = window(None, Settings())
    w.load(factory)
    w._loader.destroyed.connect(
        lambda *_: deleted_on.append(threading.get_ident()), Qt.ConnectionType.DirectConnection
    )
    gate.set()
    qtbot.waitUntil(lambda: bool(deleted_on), timeout=TIMEOUT_MS)
    assert ran_on and ran_on[0] != threading.get_ident()
    assert deleted_on == [threading.get_ident()]
    assert "could not be loaded: RuntimeError: no models here" in w.notice.text()


def test_an_unreachable_remote_llm_is_a_notice_and_the_window_carries_on(
    window, qtbot, voice
) -> None:
    from minmo_core.llm.remote import RemoteChatLLM, RemoteLLMSettings
    from tests.test_hub import closed_port

    url = f"http://127.0.0.1:{closed_port()}/v1"

    def build(bridge):
        llm = RemoteChatLLM(RemoteLLMSettings(url, "tiny"), GREEDY)
        return Session(ConversationEngine(llm, voice, bridge, EngineSettings(seed=0)).start())

    w = window(build)
    qtbot.waitUntil(lambda: w.engine is not None, timeout=TIMEOUT_MS)
    w.entry.setText("Hello?")
    w.send()
    qtbot.waitUntil(lambda: w.notice.isVisibleTo(w), timeout=TIMEOUT_MS)
    assert f"127.0.0.1:{url.split(':')[2].split('/')[0]}" in w.notice.text()
    qtbot.waitUntil(lambda: w.state.state == "idle", timeout=TIMEOUT_MS)
    assert w.entry.isEnabled() and w.conversation.turns[(1, "user")].plain == "Hello?"


def test_the_window_imports_no_torch() -> None:
    """The GUI thread never runs a model: the window and every widget import without
    torch (the models come in with the loader, in its worker thread)."""
    import subprocess
    import sys

    from tests.conftest import REPO

    modules = ["app.gui.app", "app.gui.window", "app.gui.settings_dialog",
               "app.gui.widgets.setup", "app.gui.widgets.voices",
               "app.gui.widgets.history_browser", "app.gui.widgets.timeline",
               "app.gui.widgets.style"]  # fmt: skip
    code = (
        f"import sys, importlib; [importlib.import_module(m) for m in {modules!r}]; "
        "sys.exit('torch imported' if 'torch' in sys.modules else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-500:]


def test_a_lost_sound_device_is_a_notice_and_its_return_too(window, qtbot) -> None:
    from app.audio.events import DeviceLost, DeviceRestored

    w = window(None)
    w.bridge(DeviceLost("input", "USB Headset", "unplugged"))
    qtbot.waitUntil(lambda: w.notice.isVisibleTo(w), timeout=TIMEOUT_MS)
    assert "USB Headset" in w.notice.text() and "unplugged" in w.notice.text()
    w.bridge(DeviceRestored("input", "USB Headset"))
    qtbot.waitUntil(lambda: "is back" in w.notice.text(), timeout=TIMEOUT_MS)


def test_the_chosen_pack_and_models_folder_are_what_loads(tmp_path, monkeypatch) -> None:
    import os

    from app.gui.session import apply_models_dir, pack_llm_dir
    from minmo_core.manager import store

    monkeypatch.setenv("MINMO_MODELS_DIR", str(tmp_path / "elsewhere"))
    apply_models_dir(Settings(models_dir=str(tmp_path / "models")))
    assert os.environ["MINMO_MODELS_DIR"] == str(tmp_path / "models")
    chosen = Settings(pack="minmo-0.5b")
    assert pack_llm_dir(chosen) is None  # not installed: the loader's default
    monkeypatch.setattr(store, "release_status", lambda release, s: "installed")
    folder = pack_llm_dir(chosen)
    assert folder == str(tmp_path / "models" / "Qwen2.5-0.5B-Instruct")
    assert pack_llm_dir(replace(chosen, llm_dir="/x")) is None  # a folder named wins
    assert pack_llm_dir(Settings(pack="no-such-pack")) is None


def test_settings_from_the_window_apply_and_a_reload_keeps_the_conversation(
    window, qtbot, qwen_dir, voice
) -> None:
    from app.gui.settings_dialog import SettingsDialog

    built = []

    def make_factory(settings):
        built.append(settings)
        return tiny_factory(qwen_dir, voice)

    w = window(tiny_factory(qwen_dir, voice), make_factory=make_factory)
    qtbot.waitUntil(lambda: w.engine is not None, timeout=TIMEOUT_MS)
    w.entry.setText("Hello there!")
    w.send()
    qtbot.waitUntil(lambda: bool(w.engine.engine.turns), timeout=TIMEOUT_MS)
    w.open_settings()
    (dialog,) = [d for d in w._dialogs if isinstance(d, SettingsDialog)]
    dialog.prompt_edit.setPlainText("Answer like a pirate.")
    dialog.schedule_combo.setCurrentIndex(dialog.schedule_combo.findData("growing"))
    dialog.accept_settings()
    qtbot.waitUntil(lambda: w.engine.engine.settings.system_prompt == "Answer like a pirate.",
                    timeout=TIMEOUT_MS)  # fmt: skip
    assert load_settings()[0].system_prompt == "Answer like a pirate."
    assert w.engine.engine.settings.voice.chunk_schedule == "growing"  # from the next reply
    assert not w.notice.isVisibleTo(w)  # neither needs a reload
    changed = replace(w.settings, vad_sensitivity=3)
    w.settings_applied(changed)  # as the dialog's OK does
    assert w.notice.isVisibleTo(w) and w.notice.action.text() == "Reload now"
    said = list(w.engine.engine.turns)
    w.notice.action.click()
    qtbot.waitUntil(lambda: w.engine is not None, timeout=TIMEOUT_MS)
    assert built[-1].vad_sensitivity == 3 and w.engine.engine.turns == said
