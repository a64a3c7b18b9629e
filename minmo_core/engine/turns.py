"""Turn-taking: when has the user finished speaking?

Every policy answers one question each time the VAD has seen a pause: given the user's audio
so far and how long they have been quiet, is the turn over (True), not over (False: keep
listening), or not known yet (None: ask again on the next frame). The silence rule is the
fallback; Smart Turn (an audio-native end-of-turn model) and MinMo's duplex predictor (over
the LLM's hidden states, from the MinMo adapters) judge pauses behind the same interface.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from minmo_core.common.releases import Pin, cached_sha256
from minmo_core.errors import CheckpointError, ConfigError
from minmo_core.llm.duplex import DuplexAction

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


class JudgedPolicy:
    """A model judges each pause: first when it has lasted ``min_pause_s``, then again every
    ``every_s`` while it lasts (None: once). Each judgement runs in a thread of its own, so the
    audio thread never waits for it. "Finished" takes the turn at once; "not finished" keeps
    listening, until ``max_wait_s`` of silence takes the turn anyway (the fallback)."""

    name = "judged"

    def __init__(
        self, min_pause_s: float = 0.1, max_wait_s: float = 2.0, every_s: float | None = None
    ) -> None:
        self.min_pause_s, self.max_wait_s, self.every_s = min_pause_s, max_wait_s, every_s
        self._lock = threading.Lock()
        self._running = False
        self._jobs = 0  # judgements started; a late answer for an older one is dropped
        self._result: bool | None = None
        self._next_at = min_pause_s  # the silence at which the next judgement starts
        self._last_silence = float("inf")

    def decide(self, audio: np.ndarray) -> bool:
        """Has the speaker finished? Synchronous (the policy calls it in a thread)."""
        raise NotImplementedError

    def turn_is_over(self, audio: np.ndarray, silence_s: float) -> bool | None:
        with self._lock:
            if silence_s < self._last_silence:  # a new pause: forget the last one's answers
                self._jobs += 1
                self._running, self._result, self._next_at = False, None, self.min_pause_s
            self._last_silence = silence_s
            if silence_s >= self.max_wait_s or self._result:
                return True
            if not self._running and silence_s >= self._next_at:
                self._jobs += 1
                self._running = True
                self._next_at = silence_s + self.every_s if self.every_s else float("inf")
                job = threading.Thread(
                    target=self._judge, args=(audio.copy(), self._jobs), daemon=True
                )
                job.start()
            return None

    def _judge(self, audio: np.ndarray, job: int) -> None:
        try:
            finished = self.decide(audio)
        except Exception:  # a failing model must not take the turn: the fallback will
            finished = False
        with self._lock:
            if job == self._jobs:
                self._running, self._result = False, finished


class SmartTurnPolicy(JudgedPolicy):
    """Smart Turn v3.2 judges the user's last 8 s of audio at each pause."""

    name = "smart-turn"

    # Judged once, when the pause reaches 200 ms (pipecat's VAD stop_secs for Smart Turn);
    # "finished" above 0.3, not pipecat's 0.5: on `minmo bench turns` (espeak-ng sentences
    # whole and cut mid-phrase, and recordings) 0.3 with a 1.5 s fallback is the setting of a
    # small round grid that beats the silence rule at equal p50 and mean latency; 0.5 leaves
    # most finished synthetic sentences to the fallback (docs/BENCHMARKS.md).
    def __init__(
        self,
        model: SmartTurnModel | None = None,
        threshold: float = 0.3,
        min_pause_s: float = 0.2,
        max_wait_s: float = 1.5,
        every_s: float | None = None,
    ) -> None:
        super().__init__(min_pause_s, max_wait_s, every_s)
        self.model = model or SmartTurnModel()
        self.threshold = threshold
        self.last_probability: float | None = None

    def decide(self, audio: np.ndarray) -> bool:
        self.last_probability = self.model.probability(audio)
        return self.last_probability > self.threshold


class DuplexPolicy(JudgedPolicy):
    """MinMo's full-duplex predictor judges the pause: the user's speech goes through the
    voice encoder, the input projector and the LLM, and the predictor reads the LLM's hidden
    states (``duplex_hidden``). While the assistant speaks, the same predictor says whether
    the user's speech means "stop speaking" (``stop_speaking``)."""

    name = "duplex"

    def __init__(
        self,
        sensevoice,
        llm,
        adapters,
        min_pause_s: float = 0.1,
        max_wait_s: float = 2.0,
        every_s: float | None = 0.2,
    ) -> None:
        super().__init__(min_pause_s, max_wait_s, every_s)
        if adapters.duplex is None:
            raise ConfigError("the MinMo adapters hold no duplex predictor")
        self.sensevoice, self.llm, self.adapters = sensevoice, llm, adapters
        self.last_probabilities = None

    def action(self, audio: np.ndarray) -> DuplexAction:
        hidden = duplex_hidden(self.sensevoice, self.llm, self.adapters, audio)
        action, self.last_probabilities = self.adapters.duplex.decide(hidden)
        return action

    def decide(self, audio: np.ndarray) -> bool:
        return self.action(audio) is DuplexAction.TAKE_TURN

    def stop_speaking(self, audio: np.ndarray) -> bool:
        return self.action(audio) is DuplexAction.STOP_SPEAKING


def duplex_hidden(sensevoice, llm, adapters, audio: np.ndarray):
    """The LLM's last hidden states over the user's speech, as the predictor reads them:
    (T', d_llm) for the last 30 s of ``audio`` (encoder states -> input projector -> LLM)."""
    # the query the engine's spoken turns use ("auto" language, ITN on): the same states
    _, states = sensevoice.hear(np.asarray(audio, np.float32)[-30 * 16000 :], "auto", True)
    projector = adapters.input_projector
    dtype = projector.conv.weight.dtype
    with torch.inference_mode():
        speech, _ = projector(states[None].to(dtype))
        return llm.hidden_states(speech[0])
