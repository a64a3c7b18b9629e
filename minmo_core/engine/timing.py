"""A turn's timings as one line, the way the command line prints them."""

from __future__ import annotations

from minmo_core.engine.events import TurnTimings


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms"


def timing_line(t: TurnTimings) -> str:
    notes = [t.mode]
    if t.policy:  # who took the turn, and after how long
        speculative = ", speculative" if t.speculative else ""
        notes.append(f"{t.policy} took the turn after {_ms(t.policy_wait_s)}{speculative}")
    if t.transcribe_s is not None:
        notes.append(f"transcribed in {_ms(t.transcribe_s)}")
    heard = f" ({'; '.join(notes)})"
    return (
        f"turn {t.turn_id}{heard}: first text {_s(t.first_text_s)}, first speech token "
        f"{_s(t.first_speech_token_s)}, first audio {_s(t.first_audio_s)}, total "
        f"{_s(t.total_s)}; d_llm {_ms(t.d_llm_s)}, d_lm {_ms(t.d_lm_s)}, d_syn "
        f"{_ms(t.d_syn_s)}; engine overhead {_ms(t.engine_overhead_s)}"
    )
