"""The model benchmarks (``minmo bench encoder | voice-lm | token2wav``): random weights at
the real or tiny sizes, warmed up before timing; each returns a Table.

Benchmarks never fail on a slow result: they measure and report, beside MinMo's
published figures (arXiv 2501.06282) and the official implementations' where known.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from app.bench.record import Table, machine_name
from minmo_core.config import FrontendConfig, VoiceEncoderConfig, VoiceTokenLMConfig
from minmo_core.understanding.frontend import Frontend
from minmo_core.understanding.voice_encoder import VoiceEncoder

# The official SenseVoiceSmall (FunASR), random weights, 2 threads, on the project's 2-core
# CI machine: 0.77 s for 10 s of audio (issue 2).
OFFICIAL_ENCODER_CPU_S_PER_10S = 0.77
MINMO_15_SPEECH_TOKENS_MS = 70.0  # MinMo's voice-token LM, 15 tokens, NVIDIA L20
MINMO_TOKEN2WAV_CHUNK_MS = 130.0  # MinMo's token2wav, one 15-token chunk, NVIDIA L20
# CosyVoice's HiFTGenerator, random weights, 2 threads, 2 s of audio on the 2-core CI CPU
OFFICIAL_HIFT_CPU_RTF = 0.29


PREFIX_COLUMNS = ("date", "machine", "preset", "params", "dtype")  # what row_prefix fills


def row_prefix(
    device: torch.device, preset: str, model: torch.nn.Module, dtype: torch.dtype
) -> tuple[str, ...]:
    """date, machine, preset, parameters (tied tensors counted once), dtype."""
    params = sum(p.numel() for p in model.parameters())
    return (
        dt.date.today().isoformat(),
        _machine(device),
        preset,
        f"{params / 1e6:.1f}M",
        str(dtype).removeprefix("torch."),
    )


def _machine(device: torch.device) -> str:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return machine_name(device.type, gpu)


WARMUP_MIN_CALLS = 2
WARMUP_MAX_CALLS = 6
WARMUP_SETTLED = 0.15  # two warm-up calls this close (relative) mean the caches are warm


def warm_up(fn: Callable[[], object], device: torch.device) -> None:
    """Call ``fn`` until its time settles: the first calls pay for lazy initialisation,
    kernel selection and allocator growth (a cold HiFT once timed 0.93 RTF against 0.035)."""
    previous = None
    for calls in range(1, WARMUP_MAX_CALLS + 1):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        took = time.perf_counter() - start
        settled = previous is not None and abs(took - previous) <= WARMUP_SETTLED * previous
        if calls >= WARMUP_MIN_CALLS and settled:
            return
        previous = took


def time_call(fn: Callable[[], object], device: torch.device, repeats: int) -> list[float]:
    """Seconds per call after warming up, synchronising the GPU around each."""
    warm_up(fn, device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def speech_like_audio(seconds: float, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Deterministic test signal: harmonic 'voiced' bursts with syllable-rate envelope + noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * 3.0 * t), 0, None)
    audio = 0.2 * envelope * voiced + 0.005 * rng.standard_normal(t.size)
    return audio.astype(np.float32)


def bench_encoder(
    preset: str = "real",
    seconds: float = 10.0,
    device: str = "cpu",
    repeats: int = 5,
) -> Table:
    """Front end + SenseVoice encoder + CTC head on ``seconds`` of audio, random weights."""
    dev = torch.device(device)
    cfg = VoiceEncoderConfig() if preset == "real" else VoiceEncoderConfig.tiny()
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    torch.manual_seed(0)
    model = VoiceEncoder(cfg).eval().to(dev, dtype)
    frontend = Frontend(FrontendConfig())
    audio = speech_like_audio(seconds)

    feats = torch.from_numpy(frontend(audio))[None].to(dev, dtype)
    lengths = torch.tensor([feats.shape[1]], device=dev)

    def encode() -> None:
        with torch.inference_mode():
            model(feats, lengths)

    fe_times = time_call(lambda: frontend(audio), torch.device("cpu"), repeats)
    enc_times = time_call(encode, dev, repeats)
    fe, enc = statistics.median(fe_times), statistics.median(enc_times)
    total = fe + enc
    per_10s = total * 10.0 / seconds
    if preset != "real":
        reference = "none (tiny preset)"
    elif dev.type == "cpu":
        reference = f"official {OFFICIAL_ENCODER_CPU_S_PER_10S:.2f} s / 10 s (2-core CI CPU)"
    else:
        reference = "MinMo speech-to-text ~100 ms (L20, encoder + LLM)"
    row = (
        *row_prefix(dev, preset, model, dtype),
        f"{seconds:g} s",
        f"{fe * 1000:.1f}",
        f"{enc * 1000:.1f}",
        f"{total:.3f}",
        f"{total / seconds:.4f}",
        f"{per_10s:.3f}",
        reference,
    )
    columns = (
        *PREFIX_COLUMNS,
        "audio",
        "front end ms",
        "encoder+CTC ms",
        "total s",
        "RTF",
        "s per 10 s",
        "compare with",
    )
    return Table("## Voice encoder (SenseVoiceSmall)", columns, [row])


def randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Seeded random weights (normal, std 0.02) for every parameter of ``module``."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.02)
    return module


def random_voice_lm(
    preset: str,
    device: torch.device,
    dtype: torch.dtype,
    text_vocab: int = 0,
    cosyvoice: int = 2,
):
    """A VoiceTokenLM (CosyVoice 2's or 3's) at the real (0.5B) or tiny size with seeded
    random weights, whose text embedding holds at least ``text_vocab`` ids."""
    from dataclasses import replace

    from transformers import Qwen2Config
    from transformers.modeling_utils import no_init_weights

    from minmo_core.voice.voice_lm import QWEN2_05B, QWEN2_TINY, VoiceTokenLM

    real = preset == "real"
    cfg = VoiceTokenLMConfig() if real else VoiceTokenLMConfig.tiny()
    cfg = replace(cfg, cosyvoice=cosyvoice)
    with no_init_weights():
        qwen = dict(QWEN2_05B if real else QWEN2_TINY)
        qwen["vocab_size"] = max(qwen["vocab_size"], text_vocab)
        # <|endofprompt|> is 151646 in the release's tokenizer; a tiny vocabulary's last id
        cfg = replace(cfg, endofprompt_text_id=min(cfg.endofprompt_text_id, qwen["vocab_size"] - 1))
        model = VoiceTokenLM(cfg, Qwen2Config(**qwen))
    randomise(model)
    model.llm["model"].tie_weights()  # lm_head shares embed_tokens, as in the release
    return model.to(device, dtype).eval()


RELEASES = {"cosyvoice2": 2, "cosyvoice3": 3}  # --backend names -> CosyVoice generation


def bench_voice_lm(
    preset: str = "real",
    device: str = "cpu",
    n_tokens: int = 45,
    repeats: int = 3,
    backends: tuple[str, ...] = tuple(RELEASES),
) -> Table:
    """Prefill of a 20-token text, then speech tokens one at a time with the KV cache; one
    row per release (CosyVoice 2 and 3 differ only in their heads)."""
    rows = []
    for backend in backends:
        table = _bench_voice_lm(preset, device, n_tokens, repeats, RELEASES[backend])
        rows += [(*row[:5], backend, *row[5:]) for row in table.rows]
    columns = (*table.columns[:5], "release", *table.columns[5:])
    return Table(
        "## Voice-token LM (CosyVoice 2 and 3)", columns, rows, (*PREFIX_COLUMNS[:3], "release")
    )


def _bench_voice_lm(preset: str, device: str, n_tokens: int, repeats: int, cosyvoice: int) -> Table:
    dev = torch.device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    model = random_voice_lm(preset, dev, dtype, cosyvoice=cosyvoice)
    text = torch.arange(20) % model.body.embed_tokens.num_embeddings
    speech_ids = model.cfg.speech_token_size

    def run() -> tuple[float, list[float]]:
        with torch.inference_mode():
            state = model.decoder()
            start = time.perf_counter()
            logits = state.feed(torch.cat([model.sos, model.embed_text(text), model.task_id]))
            token = int(logits[:speech_ids].argmax())
            _sync(dev)
            prefill = time.perf_counter() - start
            steps = []
            for _ in range(n_tokens):
                start = time.perf_counter()
                logits = state.feed(model.embed_speech([token]))
                token = int(logits[:speech_ids].argmax())  # .item() waits for the GPU
                steps.append(time.perf_counter() - start)
        return prefill, steps

    warm_up(run, dev)
    prefills, steps = [], []
    for _ in range(repeats):
        prefill, step = run()
        prefills.append(prefill)
        steps += step
    per_token = statistics.median(steps)
    row = (
        *row_prefix(dev, preset, model, dtype),
        f"{statistics.median(prefills) * 1000:.1f}",
        f"{per_token * 1000:.2f}",
        f"{15 * per_token * 1000:.1f}",
        f"{1 / per_token:.1f}",
        f"{MINMO_15_SPEECH_TOKENS_MS:.0f} ms (L20)" if preset == "real" else "none (tiny preset)",
    )
    columns = (
        *PREFIX_COLUMNS,
        "prefill 22 pos ms",
        "d_lm ms/token",
        "15 tokens ms",
        "tokens/s",
        "MinMo 15 tokens",
    )
    return Table("## Voice-token LM (CosyVoice 2 LM)", columns, [row])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_token2wav(
    preset: str = "real",
    device: str = "cpu",
    repeats: int = 3,
    prompt_tokens: int = 25,
    backends: tuple[str, ...] = tuple(RELEASES),
) -> Table:
    """HiFT alone on 2 s of mel, and one streaming 15-token chunk (flow + HiFT) after a
    voice prompt, with 15 tokens already played; one row per release."""
    rows = []
    for backend in backends:
        bench = _bench_token2wav if RELEASES[backend] == 2 else _bench_token2wav_v3
        table = bench(preset, device, repeats, prompt_tokens)
        rows += [(*row[:3], backend, *row[3:]) for row in table.rows]
    columns = (*table.columns[:3], "release", *table.columns[3:])
    return Table(
        "## Token2wav (flow matching + HiFT, CosyVoice 2 and 3)", columns, rows,
        ("date", "machine", "preset", "release"),
    )  # fmt: skip


def _t2w_inputs(flow, prompt_tokens: int, dev: torch.device) -> dict:
    """Random inputs of one streaming chunk after a voice prompt, shared by both releases:
    the prompt's tokens, mel and speaker embedding, a 30-token reply (15 played, 15 new)
    with the flow's look-ahead, and 2 s of mel for the vocoder alone."""
    generator = torch.Generator().manual_seed(0)
    vocab, ratio = flow.cfg.vocab_size, flow.cfg.token_mel_ratio
    prompt = torch.randint(0, vocab, (1, prompt_tokens), generator=generator)
    return {
        "prompt": prompt,
        "prompt_mel": torch.randn(1, ratio * prompt_tokens, 80, generator=generator),
        "embedding": torch.randn(1, flow.cfg.spk_embed_dim, generator=generator),
        "reply": torch.randint(0, vocab, (1, 30 + flow.cfg.pre_lookahead_len), generator=generator),
        "mel_2s": torch.randn(1, 80, 100, generator=generator).to(dev),
        "generator": generator,
    }


def _t2w_row(dev, preset, flow, vocoder, timings, reference: str) -> Table:
    """One token2wav row: (HiFT seconds for 2 s of mel, flow ms and HiFT ms per chunk)."""
    hift_2s, flow_ms, hift_ms = timings
    chunk_ms = flow_ms + hift_ms
    chunk_audio_s = 15 / 25  # 15 tokens = 0.6 s of speech
    dtype = next(flow.parameters()).dtype
    row = (
        *row_prefix(dev, preset, torch.nn.ModuleList([flow, vocoder]), dtype),
        f"{hift_2s / 2.0:.3f}",
        f"{flow_ms:.0f}",
        f"{hift_ms:.0f}",
        f"{chunk_ms:.0f}",
        f"{chunk_ms / 1000 / chunk_audio_s:.2f}",
        reference if preset == "real" else "none (tiny preset)",
    )
    return Table("", TOKEN2WAV_COLUMNS, [row])


def _time_chunk(flow, vocoder, x: dict, chunk_vocoder, dev, repeats: int) -> tuple:
    """Median seconds of HiFT on 2 s of mel, and ms of one chunk's flow and vocoder calls."""

    def chunk_flow() -> torch.Tensor:
        return flow.inference(x["reply"], x["prompt"], x["prompt_mel"], x["embedding"],
                              streaming=True, finalize=False)  # fmt: skip

    hift_2s = statistics.median(time_call(lambda: vocoder.inference(x["mel_2s"]), dev, repeats))
    flow_ms = statistics.median(time_call(chunk_flow, dev, repeats)) * 1000
    hift_ms = statistics.median(time_call(chunk_vocoder(chunk_flow), dev, repeats)) * 1000
    return hift_2s, flow_ms, hift_ms


def _bench_token2wav_v3(preset: str, device: str, repeats: int, prompt_tokens: int) -> Table:
    """CosyVoice 3: the DiT flow re-runs the group so far (the release's scheme), the causal
    vocoder runs over its streaming window (24 + 8 context frames, 30 new, 8 held back)."""
    from app.bench.stack import random_token2wav
    from minmo_core.voice.hift_causal import F0_CONTEXT, STREAM_CONTEXT_FRAMES

    dev = torch.device(device)
    t2w = random_token2wav(preset, dev, cosyvoice=3)
    flow, vocoder = t2w.flow, t2w.vocoder
    x = _t2w_inputs(flow, prompt_tokens, dev)
    hold = vocoder.cfg.f0_look_right + vocoder.cfg.conv_pre_look_right + 1
    window = torch.randn(1, 80, STREAM_CONTEXT_FRAMES + F0_CONTEXT + 30 + hold,
                         generator=x["generator"]).to(dev)  # fmt: skip

    def chunk_vocoder(_chunk_flow):
        return lambda: vocoder.inference(window, finalize=False)

    timings = _time_chunk(flow, vocoder, x, chunk_vocoder, dev, repeats)
    reference = f"chunk: MinMo {MINMO_TOKEN2WAV_CHUNK_MS:.0f} ms (L20, CosyVoice 2)"
    return _t2w_row(dev, preset, flow, vocoder, timings, reference)


def _bench_token2wav(preset: str, device: str, repeats: int, prompt_tokens: int) -> Table:
    """HiFT alone on 2 s of mel, and one streaming 15-token chunk (flow + HiFT) after a
    voice prompt, with 15 tokens already played (the release re-encodes all tokens so far)."""
    from minmo_core.config import FlowConfig, HiFTConfig
    from minmo_core.voice.flow import FlowDecoder
    from minmo_core.voice.hift import HiFTVocoder

    dev = torch.device(device)
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    real = preset == "real"
    torch.manual_seed(0)
    flow = FlowDecoder(FlowConfig() if real else FlowConfig.tiny()).to(dev, dtype).eval()
    vocoder = HiFTVocoder(HiFTConfig() if real else HiFTConfig.tiny()).remove_weight_norm()
    vocoder = vocoder.to(dev, torch.float32).eval()
    x = _t2w_inputs(flow, prompt_tokens, dev)
    ratio = flow.cfg.token_mel_ratio

    def chunk_vocoder(chunk_flow):
        chunk_mel = torch.cat([x["mel_2s"][:, :, :8], chunk_flow()[:, :, 15 * ratio :].float()],
                              dim=2)  # fmt: skip
        return lambda: vocoder.inference(chunk_mel)

    timings = _time_chunk(flow, vocoder, x, chunk_vocoder, dev, repeats)
    reference = (
        f"HiFT: official RTF {OFFICIAL_HIFT_CPU_RTF} (CI CPU); chunk: MinMo "
        f"{MINMO_TOKEN2WAV_CHUNK_MS:.0f} ms (L20)"
    )
    return _t2w_row(dev, preset, flow, vocoder, timings, reference)


TOKEN2WAV_COLUMNS = ("date", "machine", "preset", "params (flow+HiFT)", "flow dtype",
                     "HiFT RTF (2 s)", "flow ms/chunk", "HiFT ms/chunk", "d_syn x 15 ms",
                     "chunk RTF", "compare with")  # fmt: skip
