"""``minmo bench e2e``: spoken turns through the whole engine, stage by stage.

Each turn: 2 s of speech-like audio goes in as 10 ms microphone frames with the VAD's start
and end; then silence frames come in real time, as from a microphone, until the reply has
been spoken. Every figure is measured from the end of the user's speech (the VAD's end) to
the moment the user could have it: the transcript, the first reply text, the first speech
token, the first audio chunk. A speculative reply is made during the policy's wait but is
held until the policy decides, so its stages count from when they were let out.

Beside them: the policy's wait, the engine's per-token stage costs (d_llm, d_lm, d_syn) and
MinMo's first-packet formula 5·d_llm + 15·d_lm + 15·d_syn (600 ms in theory, about 800 ms in
practice for MinMo on an L20), the engine's own overhead, with speculation off and on. The
first turn warms up and is not counted; the rows hold medians over the rest.
"""

from __future__ import annotations

import datetime as dt
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch

from app.bench.models import speech_like_audio
from app.bench.record import Table, machine_name
from minmo_core.engine.engine import ConversationEngine, EngineSettings
from minmo_core.engine.events import (
    AssistantAudio,
    AssistantTextDelta,
    EngineError,
    FinalTranscript,
    TurnEnded,
    TurnTimings,
    UserSpeechStarted,
)
from minmo_core.engine.turns import SilencePolicy
from minmo_core.errors import MinMoError

FRAME = 160  # 10 ms at 16 kHz
MINMO_FIRST_PACKET = "MinMo 7B: ~600 ms theory, ~800 ms practical (L20)"
TURN_TIMEOUT_S = 600.0


class _Delivered:
    """Engine events with the moment each reached the user (time.monotonic)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[float, object]] = []

    def __call__(self, event: object) -> None:
        with self.lock:
            self.events.append((time.monotonic(), event))

    def of(self, kind: type, turn: int) -> list[tuple[float, object]]:
        with self.lock:
            return [(t, e) for t, e in self.events if isinstance(e, kind) and e.turn_id == turn]


def _turn(engine: ConversationEngine, delivered: _Delivered, audio, clock: float) -> dict:
    """One spoken turn; returns its stage times in ms from the end of speech."""
    engine.speech_started(clock)
    with delivered.lock:
        turn = next(e.turn_id for _, e in reversed(delivered.events)
                    if isinstance(e, UserSpeechStarted))  # fmt: skip
    for i in range(0, audio.size - FRAME + 1, FRAME):
        engine.push_frame(audio[i : i + FRAME], clock)
        clock += 0.01
    engine.speech_ended(clock)
    ended_at = time.monotonic()
    silence = audio[:FRAME] * 0.0
    deadline = ended_at + TURN_TIMEOUT_S
    frame_due = ended_at
    while time.monotonic() < deadline:  # the microphone goes on, in real time
        if delivered.of(TurnEnded, turn) or delivered.of(EngineError, turn):
            break
        frame_due += 0.01
        clock += 0.01
        engine.push_frame(silence, clock)
        time.sleep(max(0.0, frame_due - time.monotonic()))
    if not engine.wait_idle(TURN_TIMEOUT_S):
        raise MinMoError("the engine did not finish a benchmark turn")
    errors = delivered.of(EngineError, turn)
    if errors:
        raise MinMoError(f"a benchmark turn failed: {errors[0][1].message}")
    (_, timings), *_ = delivered.of(TurnTimings, turn)
    (final_at, _), *_ = delivered.of(FinalTranscript, turn)
    text_at = delivered.of(AssistantTextDelta, turn)[0][0]
    audio_at, first_audio = delivered.of(AssistantAudio, turn)[0]
    # the first speech token existed (first audio - its synthesis) and was let out no earlier
    # than the transcript (a speculative reply's events wait for the policy together)
    reply_started = first_audio.t - timings.first_audio_s
    token_at = max(reply_started + timings.first_speech_token_s, final_at)

    def ms(t: float) -> float:
        return (t - ended_at) * 1000

    return {
        "policy": timings.policy_wait_s * 1000,
        "transcript": ms(final_at),
        "text": ms(text_at),
        "token": ms(token_at),
        "audio": ms(audio_at),
        "d_llm": timings.d_llm_s * 1000,
        "d_lm": timings.d_lm_s * 1000,
        "d_syn": timings.d_syn_s * 1000,
        "overhead": timings.engine_overhead_s * 1000,
    }


def bench_e2e(
    preset: str = "tiny",
    device: str = "cpu",
    turns: int = 4,
    policy_wait_ms: int = 500,
    llm_size: str = "7b",
) -> Table:
    from app.bench.stack import random_stack

    dev = torch.device(device)
    with tempfile.TemporaryDirectory() as tmp:
        llm, voice, ears = random_stack(preset, dev, Path(tmp), llm_size)
    audio = speech_like_audio(2.0)
    rows = []
    for speculate in (False, True):
        delivered = _Delivered()
        engine = ConversationEngine(
            llm,
            voice,
            delivered,
            EngineSettings(seed=0, speculate=speculate, system_prompt="Be brief."),
            ears,
            SilencePolicy(policy_wait_ms / 1000),
        ).start()
        try:
            measured = []
            for i in range(turns + 1):  # the first warms up
                figures = _turn(engine, delivered, audio, 100.0 * i)
                if i:
                    measured.append(figures)
                engine.reset()  # every turn from the same (empty) history
                engine.wait_idle(TURN_TIMEOUT_S)
        finally:
            engine.shutdown()
        median = {k: statistics.median(m[k] for m in measured) for k in measured[0]}
        formula = 5 * median["d_llm"] + 15 * median["d_lm"] + 15 * median["d_syn"]
        rows.append(
            (
                dt.date.today().isoformat(),
                machine_name(dev.type, torch.cuda.get_device_name(dev) if dev.type == "cuda"
                             else None),
                preset,
                "tiny" if preset == "tiny" else f"Qwen2.5-{llm_size.upper()} shape",
                str(llm.dtype).removeprefix("torch."),
                "on" if speculate else "off",
                f"{median['policy']:.0f}",
                f"{median['transcript']:.0f}",
                f"{median['text']:.0f}",
                f"{median['token']:.0f}",
                f"{median['audio']:.0f}",
                f"{median['d_llm']:.1f}",
                f"{median['d_lm']:.1f}",
                f"{median['d_syn']:.1f}",
                f"{formula:.0f}",
                f"{median['overhead']:.1f}",
                MINMO_FIRST_PACKET if preset == "real" else "none (tiny preset)",
            )
        )  # fmt: skip
    columns = (
        "date",
        "machine",
        "preset",
        "LLM",
        "LLM dtype",
        "speculation",
        "policy wait ms",
        "transcript ms",
        "first text ms",
        "first speech token ms",
        "first audio ms",
        "d_llm ms",
        "d_lm ms",
        "d_syn ms",
        "5 d_llm + 15 d_lm + 15 d_syn ms",
        "engine overhead ms",
        "compare with",
    )
    key = ("date", "machine", "preset", "LLM", "speculation")
    return Table("## Spoken turn, end to end (engine)", columns, rows, key)
