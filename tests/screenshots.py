"""Screenshots of the real window for the README (docs/screenshots/), under Xvfb:

    make screenshots        (xvfb-run -a .venv/bin/python -m tests.screenshots docs/screenshots)

1. conversation.png: a spoken conversation with an interruption. The user's voice comes
   from espeak-ng through the fake sound card in real time (the real audio path: echo
   canceller, VAD, barge-in); the replies are SmolLM2-135M-Instruct's, really written
   (`make test` fetches it); the voice is a tiny random-weight CosyVoice 2 (it sounds like
   noise, which a picture does not show). SenseVoiceSmall is not on this machine (no hub
   access), so the recogniser is a stand-in that returns the words espeak-ng was given.
2. style-panel.png: the style panel with the emotion menu open.
3. first-run.png: the setup screen on a machine with no models.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

QUESTION = "What should I name my new cat?"
OVER = "Wait, something shorter please."


def say(text: str) -> np.ndarray:
    """espeak-ng's English voice, 16 kHz float32."""
    from minmo_core.common.audio import read_audio

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "say.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), text],
                       check=True)  # fmt: skip
        return read_audio(wav, 16000)


class KnownWords:
    """Stands in for SenseVoiceSmall: the words of the clip being heard, by its length."""

    sample_rate = 16000

    def __init__(self, clips: list[tuple[np.ndarray, str]]) -> None:
        self.clips = clips

    def transcribe(self, audio, language="auto", use_itn=False, start=0.0):
        from minmo_core.understanding.transcript import RichTranscript

        seconds = audio.size / 16000
        clip, words = min(self.clips, key=lambda c: abs(c[0].size / 16000 - seconds))
        share = min(1.0, seconds / (clip.size / 16000))
        said = words.split()
        shown = " ".join(said[: max(1, round(share * len(said)))])
        return RichTranscript(shown if share < 0.9 else words, "en", "happy", "speech", True)


def main(out: Path) -> int:
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    out.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance() or QApplication(["minmo-screenshots"])
    app.setApplicationName("MinMo Assistant")
    if app.platformName() != "xcb":
        print(f"needs a real X display (Xvfb), not {app.platformName()}", file=sys.stderr)
        return 2
    os.environ.setdefault("MINMO_DATA_DIR", tempfile.mkdtemp())
    os.environ.setdefault("MINMO_CONFIG_DIR", tempfile.mkdtemp())
    os.environ.setdefault("MINMO_MODELS_DIR", tempfile.mkdtemp())

    def wait(ms: int) -> None:
        loop = QEventLoop()
        QTimer.singleShot(ms, loop.quit)
        loop.exec()

    first_run(app, out, wait)
    conversation(app, out, wait)
    return 0


def first_run(app, out: Path, wait) -> None:
    from app.gui.settings import Settings
    from app.gui.window import MainWindow

    window = MainWindow(None, Settings(), setup=True)
    window.show()
    deadline = time.monotonic() + 60
    while "Checking" in window.setup_panel.recommendation.text():
        wait(100)
        if time.monotonic() > deadline:
            break
    wait(300)
    window.grab().save(str(out / "first-run.png"))
    window.close()


def conversation(app, out: Path, wait) -> None:
    import torch

    from app.audio.events import AudioSettings
    from app.audio.fake_device import FakeSoundDevice
    from app.bench.gui import RealTimeSoundCard
    from app.bench.stack import random_voice
    from app.conversation import LiveConversation
    from app.gui.session import Session
    from app.gui.settings import Settings
    from app.gui.window import MainWindow
    from minmo_core.config import LLMConfig
    from minmo_core.engine.engine import ConversationEngine, EngineSettings
    from minmo_core.engine.speakable import warm_up
    from minmo_core.engine.turns import SilencePolicy
    from minmo_core.llm.chat import ChatLLM
    from tests.real_models import smollm2_folder

    folder = smollm2_folder()
    if folder is None:
        raise SystemExit("needs SmolLM2-135M-Instruct: run `make test` once (it fetches it)")
    config = replace(LLMConfig(), dtype="float32", max_new_tokens=60, temperature=0.0)
    llm = ChatLLM(folder, config, device="cpu")
    voice = random_voice("tiny", torch.device("cpu"), len(llm.tokenizer), llm.tokenizer, 4.0)
    warm_up()
    question, over = say(QUESTION), say(OVER)
    ears = KnownWords([(question, QUESTION), (over, OVER)])
    gap = np.zeros(8000, np.float32)
    # the question, then the user talks over the reply 3 s into it
    near = np.concatenate([gap, question, np.zeros(16000 * 4, np.float32), over,
                           np.zeros(16000 * 40, np.float32)])  # fmt: skip
    fake = FakeSoundDevice(input_rate=48000, output_rate=48000, near_end=near,
                           near_end_rate=16000, seed=0)  # fmt: skip
    made: dict = {}

    def build(bridge):
        def engine(on_event):
            settings = EngineSettings(seed=0, system_prompt="You are a friendly assistant. "
                                      "Answer in two or three short sentences.")  # fmt: skip
            return ConversationEngine(llm, voice, on_event, settings, ears, SilencePolicy(0.5))

        live = LiveConversation(engine, bridge, AudioSettings(), backend=fake)
        made["live"] = live.start(threaded=False)
        return Session(live.engine, live)

    settings = Settings(emotion="happy", rate="fast")
    window = MainWindow(build, settings)
    window.resize(1280, 820)
    window.show()
    while window.engine is None:
        wait(50)
    card = RealTimeSoundCard(fake, made["live"])
    card.start()
    engine = window.engine.engine
    deadline = time.monotonic() + 180
    # until the second reply has begun after the interruption
    while time.monotonic() < deadline:
        wait(100)
        cut = [t for t in engine.turns if t.interrupted]
        replies = [k for k in window.conversation.turns if k[1] == "assistant"]
        if cut and len(replies) >= 2 and len(window.conversation.turns[replies[-1]].plain) > 40:
            break
    wait(600)
    first = min(window.timeline.model.gaps)
    window.timeline.canvas.select(first)  # the stage timings of the first turn
    wait(200)
    window.grab().save(str(out / "conversation.png"))
    # the style panel with its emotion menu open (a popup: grab the screen)
    menu = window.style_panel.menus["emotion"]
    menu.showPopup()
    wait(400)
    screen = app.primaryScreen().grabWindow(0)
    box = window.style_panel.layout().itemAt(0).widget()  # the "How it speaks" group
    popup = menu.view().window().geometry()
    top_left = box.mapToGlobal(box.rect().topLeft())
    bottom = max(top_left.y() + box.height(), popup.bottom())
    screen.copy(top_left.x() - 12, top_left.y() - 12, box.width() + 24,
                bottom - top_left.y() + 24).save(str(out / "style-panel.png"))  # fmt: skip
    menu.hidePopup()
    card.stop.set()
    card.join(5)
    window.close()
    wait(200)


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots")))
