"""100 turns on tiny models (typed and spoken, random barge-ins): resident memory stays flat
after warm-up and no thread is left behind."""

from __future__ import annotations

import gc
import random
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from minmo_core.common.audio import read_audio
from minmo_core.engine.engine import ConversationEngine, EngineSettings
from minmo_core.engine.events import AssistantAudio, EngineError, TurnEnded
from minmo_core.engine.turns import SilencePolicy
from minmo_core.llm.adapters import load_adapters
from minmo_core.llm.chat import ChatLLM
from minmo_core.understanding.sensevoice import SenseVoice
from tests.test_engine import GREEDY, TIMEOUT, Recorder

TURNS, WARM_UP = 100, 20


def resident_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("mode", ["composed", "aligned"])
def test_a_hundred_turns_keep_memory_flat_and_leave_no_thread(
    mode: str,
    qwen_dir: Path,
    voice,
    tiny_sensevoice_dir: Path,
    fixtures_dir: Path,
    adapters_dir: Path,
) -> None:
    threads_before = set(threading.enumerate())
    recorder = Recorder()
    ears = SenseVoice.from_folder(tiny_sensevoice_dir, allow_unpinned=True)
    llm = ChatLLM(qwen_dir, replace(GREEDY, max_new_tokens=10), device="cpu")
    adapters = load_adapters(adapters_dir) if mode == "aligned" else None
    engine = ConversationEngine(
        llm, voice, recorder, EngineSettings(seed=0), ears, SilencePolicy(), adapters
    ).start()
    question = read_audio(fixtures_dir / "audio" / "sensevoice_sample.wav", 16000)[:32000]
    rng = random.Random(3)
    sizes = {}
    try:
        for i in range(TURNS):
            turn = engine.send_audio(question) if i % 4 == 3 else engine.send_text(f"Hi {i}!")
            if rng.random() < 0.3:  # barge in once the first audio is out
                deadline = time.monotonic() + TIMEOUT
                while not recorder.of(AssistantAudio, turn) and time.monotonic() < deadline:
                    if recorder.of(TurnEnded, turn) or recorder.of(EngineError, turn):
                        break
                    time.sleep(0.001)
                engine.interrupt()
            assert engine.wait_idle(TIMEOUT)
            if i + 1 in (WARM_UP, TURNS):
                with recorder.lock:
                    recorder.events.clear()  # the test's own record, not the engine's memory
                gc.collect()
                sizes[i + 1] = resident_bytes()
    finally:
        engine.shutdown()
    growth = sizes[TURNS] / sizes[WARM_UP] - 1
    print(f"{mode}: resident memory after {WARM_UP} turns {sizes[WARM_UP] / 2**20:.1f} MiB, after "
          f"{TURNS} {sizes[TURNS] / 2**20:.1f} MiB: growth {growth:+.1%}")  # fmt: skip
    assert growth <= 0.05
    left = [t for t in set(threading.enumerate()) - threads_before if t.is_alive()]
    assert left == []
