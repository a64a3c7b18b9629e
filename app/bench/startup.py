"""``minmo bench startup``: cold start, process start → models ready, with the official
``.pt`` checkpoints read by ``torch.load`` against read from the safetensors cache.

The models are written first at their real sizes with seeded random weights, in the official
layouts (speed does not depend on the values): SenseVoiceSmall (``model.pt`` as the release
pickles it, ``config.yaml``, ``am.mvn``; a 256-piece vocabulary, so its CTC head is 512 x 256
instead of 512 x 25055: 12.7M of 234M parameters fewer), CosyVoice2-0.5B (``llm.pt``,
``flow.pt``, ``hift.pt`` with the release's ``generator.`` prefix and weight-norm keys,
``CosyVoice-BlankEN/``) and a Qwen2.5-Instruct shape (bfloat16 safetensors, as released).
Then fresh processes load all three, each mode twice with the second counted (the operating
system's page cache warm, as on a second start of the app):

- torch.load: the cache turned off (``MINMO_SAFETENSORS_CACHE=0``), the app before this change;
- first start: an empty cache, so the start hashes and converts each ``.pt`` once;
- safetensors cache: later starts.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from app.bench.models import randomise
from app.bench.record import Table, machine_name

CHILD = """
import sys, time, json
t0 = time.perf_counter()
import torch
from minmo_core.understanding.sensevoice import SenseVoice
from minmo_core.voice.tts import SpeechSynthesizer
from minmo_core.llm.chat import ChatLLM
t1 = time.perf_counter()
sense, cosy, llm = sys.argv[1:4]
SenseVoice.from_folder(sense, allow_unpinned=True)
t2 = time.perf_counter()
SpeechSynthesizer.from_folder(cosy, "cpu", True)
t3 = time.perf_counter()
ChatLLM(llm, device="cpu")
t4 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "sensevoice": t2 - t1, "cosyvoice": t3 - t2,
                  "llm": t4 - t3}))
"""


def write_sensevoice(folder: Path) -> Path:
    from app.bench.stack import train_vocabulary
    from minmo_core.config import VoiceEncoderConfig
    from minmo_core.understanding.sensevoice import BPE_MODEL
    from minmo_core.understanding.voice_encoder import VoiceEncoder

    folder.mkdir(parents=True, exist_ok=True)
    cfg = VoiceEncoderConfig(vocab_size=256)
    config = {
        "model": "SenseVoiceSmall",
        "input_size": cfg.input_size,
        "vocab_size": cfg.vocab_size,
        "encoder": "SenseVoiceEncoderSmall",
        "encoder_conf": {"output_size": cfg.d_model, "attention_heads": cfg.n_heads,
                         "linear_units": cfg.d_ffn, "num_blocks": cfg.n_blocks,
                         "tp_blocks": cfg.tp_blocks, "kernel_size": cfg.kernel_size,
                         "sanm_shfit": cfg.sanm_shift},
        "frontend": "WavFrontend",
        "frontend_conf": {"fs": 16000, "window": "hamming", "n_mels": 80, "frame_length": 25,
                          "frame_shift": 10, "lfr_m": 7, "lfr_n": 6},
    }  # fmt: skip
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    zeros, ones = " ".join(["0"] * cfg.input_size), " ".join(["1"] * cfg.input_size)
    (folder / "am.mvn").write_text(
        f"<Nnet>\n<AddShift> {cfg.input_size} {cfg.input_size}\n<LearnRateCoef> 0 [ {zeros} ]\n"
        f"<Rescale> {cfg.input_size} {cfg.input_size}\n<LearnRateCoef> 0 [ {ones} ]\n</Nnet>\n"
    )
    (folder / BPE_MODEL).write_bytes(train_vocabulary(cfg.vocab_size))
    torch.save(randomise(VoiceEncoder(cfg)).state_dict(), folder / "model.pt")
    return folder


def write_cosyvoice(folder: Path) -> Path:
    from transformers import Qwen2Config

    from app.bench.chat_model import write_chat_tokenizer
    from minmo_core.config import FlowConfig, HiFTConfig, VoiceTokenLMConfig
    from minmo_core.voice.flow import FlowDecoder
    from minmo_core.voice.hift import HiFTVocoder
    from minmo_core.voice.voice_lm import BLANK_EN, QWEN2_05B, VoiceTokenLM

    blank = folder / BLANK_EN
    write_chat_tokenizer(blank)
    (blank / "config.json").write_text(json.dumps({"model_type": "qwen2", **QWEN2_05B}))
    lm = VoiceTokenLM(VoiceTokenLMConfig(), Qwen2Config(**QWEN2_05B))
    torch.save(randomise(lm).state_dict(), folder / "llm.pt")
    torch.save(randomise(FlowDecoder(FlowConfig())).state_dict(), folder / "flow.pt")
    hift = randomise(HiFTVocoder(HiFTConfig())).state_dict()
    torch.save({f"generator.{k}": v for k, v in hift.items()}, folder / "hift.pt")
    return folder


def write_llm(folder: Path, size: str) -> Path:
    """A Qwen2.5-Instruct-shaped folder: tokenizer files, config, bfloat16 safetensors."""
    from app.bench.chat_model import random_chat_llm

    llm = random_chat_llm(size, torch.device("cpu"), torch.bfloat16, folder, None)
    llm.model.save_pretrained(folder, safe_serialization=True)
    return folder


def _start(folders: list[Path], env: dict[str, str]) -> dict[str, float]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *map(str, folders)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"the start failed: {done.stderr.strip().splitlines()[-1:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["total"] = wall
    return figures


def bench_startup(llm_size: str = "0.5b") -> Table:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folders = [
            write_sensevoice(root / "SenseVoiceSmall"),
            write_cosyvoice(root / "CosyVoice2-0.5B"),
            write_llm(root / "llm", llm_size),
        ]
        pt_bytes = sum(p.stat().st_size for p in root.rglob("*.pt"))
        cache = root / "cache"
        base = {**os.environ, "MINMO_CACHE_DIR": str(cache)}
        modes = [
            ("torch.load (no cache)", {**base, "MINMO_SAFETENSORS_CACHE": "0"}, True),
            ("first start (hash + convert)", base, False),
            ("safetensors cache", base, True),
        ]
        rows = []
        for name, env, repeat in modes:
            figures = _start(folders, env)
            if repeat:  # the second start of the mode counts: page cache warm
                figures = _start(folders, env)
            rows.append(
                (
                    dt.date.today().isoformat(),
                    machine_name("cpu"),
                    f"real (Qwen2.5-{llm_size.upper()} shape)",
                    name,
                    f"{pt_bytes / 1e9:.2f} GB",
                    f"{figures['imports']:.2f}",
                    f"{figures['sensevoice']:.2f}",
                    f"{figures['cosyvoice']:.2f}",
                    f"{figures['llm']:.2f}",
                    f"{figures['total']:.2f}",
                )
            )
    columns = ("date", "machine", "preset", "checkpoints read by", ".pt files", "imports s",
               "SenseVoice s", "CosyVoice 2 s", "LLM s", "process start to ready s")  # fmt: skip
    return Table("## Cold start (process start to models ready)", columns, rows,
                 ("date", "machine", "preset", "checkpoints read by"))  # fmt: skip


__all__ = ["bench_startup"]
