"""The voice path's cost per chunk through one long reply (random weights): text token ids
stream into the voice LM (5:15, restarting at sentence ends), every 15 speech tokens go
through token2wav (flow + HiFT), and each chunk's time is taken from the previous chunk's
audio to this one's. MinMo's first-packet formula holds for chunk 1 only if later chunks
cost no more; here is how much more they cost.

Schemes, side by side in one run:

- ``re-encode (release)``: every chunk re-runs the flow over all tokens so far, one flow
  for the whole reply (the release's token2wav, and ours before the incremental flow);
- ``re-encode, restarts``: the same, but the flow starts afresh at each sentence group, as
  the voice LM does (what the restarts alone save);
- ``incremental``: the flow keeps what complete chunks produced and computes only the open
  chunk (``FlowStream``), restarting at each sentence group: the app's scheme.

CosyVoice 3 runs the last two with its DiT flow (``DiTFlowStream`` for the incremental one)
and its causal vocoder over a bounded window.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from pathlib import Path

import torch

from app.bench.record import Table, machine_name
from minmo_core.voice.speech_tokens import LMPrompt
from minmo_core.voice.token2wav import FlowPrompt

REPORTED = (1, 2, 5, 10, 20, 40)  # chunks whose time is a column
SENTENCE = "This is a sentence of a long answer, with a clause and a few more words. "


V3_SCHEMES = (
    ("re-encode, restarts; vocoder windowed", True, True),
    ("incremental; vocoder windowed", False, True),
)
SCHEMES = (  # name, the release's flow, restart at sentence groups
    ("re-encode (release)", True, False),
    ("re-encode, restarts", True, True),
    ("incremental", False, True),
)


def chunk_times(
    voice,
    ids: list[int],
    tokens: int,
    device: torch.device,
    schedule=None,
    reencode: bool = False,
    restarts: bool = True,
    prompt=None,
):
    """Seconds for each chunk of audio until ``tokens`` speech tokens are rendered, the voice
    LM's share included (the LM runs lazily, so a chunk's time spans its tokens and its
    rendering)."""
    generator = torch.Generator().manual_seed(0)
    stream = voice.t2w.stream(FlowPrompt.from_voice(None), generator, schedule, reencode)
    times: list[float] = []
    started = time.perf_counter()
    speech = voice.tokens.from_token_ids(iter(ids), prompt)
    try:
        for piece in speech:
            if not piece and not restarts:
                continue  # a sentence group's end: the release's flow runs on
            audio = stream.push(piece) if piece else stream.end_group()
            if not audio.numel():
                continue  # the look-ahead is not there yet: the time runs on
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            now = time.perf_counter()
            times.append(now - started)
            started = now
            if stream.rendered >= tokens:
                break
    finally:
        speech.close()
    if stream.rendered < tokens:
        raise RuntimeError(f"the reply gave {stream.rendered} speech tokens, not {tokens}")
    return times


def _ratio(times: list[float], late: int, early: int) -> str:
    return f"{times[late - 1] / times[early - 1]:.2f}" if len(times) >= late else "—"


def bench_stream(
    preset: str = "real",
    device: str = "cpu",
    chunks: int = 40,
    backends: tuple[str, ...] = ("cosyvoice2", "cosyvoice3"),
) -> Table:
    """Each release's schemes (CosyVoice 3's: its flow re-runs the sentence group so far,
    or keeps its complete chunks; its causal vocoder runs over a bounded window) over the
    same reply."""
    from transformers import AutoTokenizer

    from app.bench.chat_model import write_chat_tokenizer
    from app.bench.stack import random_voice
    from minmo_core.voice.token2wav import FIXED, GROWING

    dev = torch.device(device)
    with tempfile.TemporaryDirectory() as tmp:
        write_chat_tokenizer(Path(tmp))
        tokenizer = AutoTokenizer.from_pretrained(tmp)
    ids = tokenizer(SENTENCE * 60, add_special_tokens=False)["input_ids"]
    audio_s = 15 / 25 * chunks  # 15 speech tokens = 0.6 s
    rows = []
    machine = machine_name(
        dev.type, torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
    )
    for backend in backends:
        cosyvoice = 3 if backend == "cosyvoice3" else 2
        voice = random_voice(preset, dev, len(tokenizer), tokenizer, ratio=3.0, cosyvoice=cosyvoice)
        # CosyVoice 3 needs <|endofprompt|> before the text (the app's system sentence)
        eop = voice.tokens.lm.cfg.endofprompt_text_id
        prompt = LMPrompt([eop]) if cosyvoice == 3 else None
        chunk_times(voice, ids[:40], 30, dev, prompt=prompt)  # warm up
        schemes = SCHEMES if cosyvoice == 2 else V3_SCHEMES
        for schedule in (FIXED, GROWING):
            release_total = None
            for scheme, reencode, restarts in schemes:
                if restarts and reencode and schedule is not FIXED and cosyvoice == 2:
                    continue  # the restarts' share, once is enough
                times = chunk_times(
                    voice, ids, 15 * chunks, dev, schedule, reencode, restarts, prompt
                )
                total = sum(times)
                release_total = release_total or total
                cells = [f"{times[n - 1] * 1000:.0f}" if n <= len(times) else "—" for n in REPORTED]
                rows.append((
                    dt.date.today().isoformat(), machine, preset, backend, scheme, schedule.name,
                    str(len(times)), *cells, _ratio(times, 40, 2), f"{max(times) * 1000:.0f}",
                    f"{audio_s:.1f}", f"{total:.1f}",
                    f"{release_total / total:.2f}", f"{audio_s / total:.2f}",
                ))  # fmt: skip
    columns = ("date", "machine", "preset", "release", "scheme", "chunk tokens", "chunks",
               *[f"chunk {n} ms" for n in REPORTED], "chunk 40 / chunk 2", "slowest chunk ms",
               "reply s", "total compute s", "release / this (×)",
               "real-time factor (×)")  # fmt: skip
    key = ("date", "machine", "preset", "release", "scheme", "chunk tokens")
    return Table("## Streaming cost per chunk (voice LM + flow + HiFT)", columns, rows, key)
