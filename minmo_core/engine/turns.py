"""Turn-taking: when has the user finished speaking?

Every policy answers one question each time the VAD has seen a pause: given the user's audio
so far and how long they have been quiet, is the turn over (True), not over (False: keep
listening), or not known yet (None: ask again on the next frame). The silence rule is the
fallback; Smart Turn and MinMo's duplex predictor arrive behind the same interface.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from minmo_core.common.releases import Pin, cached_sha256
from minmo_core.errors import CheckpointError

SMART_TURN_FILE = "smart-turn-v3.2-cpu.onnx"
SMART_TURN_PIN = Pin(8679182, "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f")
SMART_TURN_SECONDS = 8  # the model reads the last 8 s, zero-padded in front


class TurnPolicy(Protocol):
    name: str

    def turn_is_over(self, audio: np.ndarray, silence_s: float) -> bool | None:
        """audio : (N,) float32 at 16 kHz, the user's utterance so far."""


@dataclass(frozen=True)
class SilencePolicy:
    """The turn is over after ``timeout_s`` of silence following the VAD's end of speech."""

    timeout_s: float = 0.5
    name: str = "silence"

    def turn_is_over(self, audio: np.ndarray, silence_s: float) -> bool | None:
        return True if silence_s >= self.timeout_s else None


def smart_turn_model() -> Path:
    """The shipped Smart Turn file: the checkout's assets/ or the installed share folder."""
    here = Path(__file__).resolve().parents[2] / "assets" / "smart-turn" / SMART_TURN_FILE
    installed = Path(sys.prefix) / "share" / "minmo-assistant" / "smart-turn" / SMART_TURN_FILE
    for path in (here, installed):
        if path.is_file():
            return path
    raise CheckpointError(f"the Smart Turn model {SMART_TURN_FILE} is missing (looked in {here})")


class SmartTurnModel:
    """Smart Turn v3.2 through onnxruntime: P(the speaker has finished) for 16 kHz audio."""

    def __init__(self, path: Path | None = None, threads: int = 1) -> None:
        import onnxruntime as ort
        from transformers import WhisperFeatureExtractor

        path = Path(path) if path is not None else smart_turn_model()
        size = path.stat().st_size if path.is_file() else -1
        if size != SMART_TURN_PIN.size or cached_sha256(path) != SMART_TURN_PIN.sha256:
            raise CheckpointError(f"{path} is not the pinned Smart Turn v3.2 model")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.features = WhisperFeatureExtractor(chunk_length=SMART_TURN_SECONDS)

    def probability(self, audio: np.ndarray) -> float:
        """audio : (N,) float32 at 16 kHz; only its last 8 s are read."""
        n = SMART_TURN_SECONDS * 16000
        audio = np.asarray(audio, np.float32)[-n:]
        audio = np.pad(audio, (n - audio.size, 0))  # silence in front, as the model learned
        features = self.features(
            audio,
            sampling_rate=16000,
            padding="max_length",
            max_length=n,
            truncation=True,
            do_normalize=True,
            return_tensors="np",
        ).input_features  # (1, 80, 800)
        (out, *_) = self.session.run(None, {"input_features": features.astype(np.float32)})
        return float(np.asarray(out).reshape(-1)[0])


class SmartTurnPolicy:
    """Smart Turn decides at each pause: run once when the pause has lasted ``min_pause_s``
    (in a thread of its own: the audio thread never waits for it); "finished" takes the turn
    at once, "not finished" keeps listening until ``max_wait_s`` of silence (the fallback)."""

    name = "smart-turn"

    def __init__(
        self,
        model: SmartTurnModel | None = None,
        threshold: float = 0.5,
        min_pause_s: float = 0.1,
        max_wait_s: float = 2.0,
    ) -> None:
        self.model = model or SmartTurnModel()
        self.threshold, self.min_pause_s, self.max_wait_s = threshold, min_pause_s, max_wait_s
        self._lock = threading.Lock()
        self._job: threading.Thread | None = None
        self._jobs = 0  # pauses judged so far; a late answer for an old pause is dropped
        self._result: bool | None = None
        self._last_silence = float("inf")
        self.last_probability: float | None = None

    def turn_is_over(self, audio: np.ndarray, silence_s: float) -> bool | None:
        with self._lock:
            if silence_s < self._last_silence:  # a new pause: forget the last one's answer
                self._job, self._result = None, None
            self._last_silence = silence_s
            if silence_s >= self.max_wait_s:
                return True
            if self._result is not None:
                return True if self._result else None
            if self._job is None and silence_s >= self.min_pause_s:
                self._jobs += 1
                self._job = threading.Thread(
                    target=self._judge, args=(audio.copy(), self._jobs), daemon=True
                )
                self._job.start()
            return None

    def decide(self, audio: np.ndarray) -> bool:
        """The model's answer for an utterance, synchronously (benchmarks, tests)."""
        self.last_probability = self.model.probability(audio)
        return self.last_probability > self.threshold

    def _judge(self, audio: np.ndarray, job: int) -> None:
        finished = self.decide(audio)
        with self._lock:
            if job == self._jobs and self._job is not None:
                self._result = finished
