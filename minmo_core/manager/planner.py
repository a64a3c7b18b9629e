"""The memory planner: which pack, at which precision, fits this machine, and why.

An estimate is the sum of its parts, each computed from the release manifests:

- LLM weights: parameters x bytes per parameter. bfloat16 on a GPU, float32 on a CPU; the
  bitsandbytes options quantise the transformer body only (8-bit: 1 byte + ~2 % for scales;
  4-bit NF4 with double quantisation: ~4.13 bits), the embeddings and LM head stay bfloat16.
- KV cache at ``CONTEXT_TOKENS`` (4k) of context: 2 x layers x KV heads x head dim x tokens,
  in the LLM's compute precision.
- Activations: prefilling a whole 4k prompt at once, the residual stream and the MLP's two
  intermediate projections (logits are only computed for the last position).
- The speech models: SenseVoice, the voice-token LM, flow and HiFT at the precision each runs
  in (float32 on a CPU), plus their working memory.
- Overhead: the CUDA allocator, cuBLAS workspaces and the app (GPU); Python, torch, ONNX
  Runtime and the app itself (CPU).

Usable memory is 95 % of the GPU's free memory, or 80 % of the available RAM on a CPU (the
desktop keeps running). The recommendation is the largest LLM whose pack fits at the
standard precision; 8-bit and 4-bit weights are offered beside it, marked experimental until
they are measured on a GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from minmo_core.common.releases import LLMShape, Release, all_releases
from minmo_core.errors import ConfigError
from minmo_core.manager.packs import VOICE_KINDS, Pack, all_packs, pack_voice

GiB = 1024**3
CONTEXT_TOKENS = 4096
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
QUANTISED_BYTES = {"int8": 1.02, "int4": 4.13 / 8}  # per body parameter, scales included
GPU_PRECISIONS = ("bfloat16", "int8", "int4")
EXPERIMENTAL = ("int8", "int4")  # bitsandbytes on CUDA, not yet measured on a GPU
SPEECH_WORKING_GIB = 0.5  # the voice LM's cache, flow and vocoder buffers, the encoder's input
GPU_OVERHEAD_GIB = 0.6
CPU_OVERHEAD_GIB = 2.0
GPU_USABLE, CPU_USABLE = 0.95, 0.80


@dataclass(frozen=True)
class Estimate:
    pack: str
    llm: str
    device: str  # "cuda" or "cpu"
    precision: str  # the LLM's weights
    llm_weights: int  # bytes
    kv_cache: int
    activations: int
    speech: int  # the speech models' weights and working memory
    overhead: int

    @property
    def total(self) -> int:
        return self.llm_weights + self.kv_cache + self.activations + self.speech + self.overhead

    @property
    def experimental(self) -> bool:
        return self.precision in EXPERIMENTAL


def llm_weight_bytes(release: Release, precision: str) -> int:
    shape = release.llm
    if precision in DTYPE_BYTES:
        return release.parameters * DTYPE_BYTES[precision]
    embeddings = shape.vocab * shape.hidden * (1 if shape.tied else 2)
    body = release.parameters - embeddings
    return int(embeddings * 2 + body * QUANTISED_BYTES[precision])


def kv_cache_bytes(shape: LLMShape, tokens: int, dtype_bytes: int) -> int:
    return 2 * shape.layers * shape.kv_heads * shape.head_dim * tokens * dtype_bytes


def activation_bytes(shape: LLMShape, tokens: int, dtype_bytes: int) -> int:
    return tokens * (4 * shape.hidden + 2 * shape.intermediate) * dtype_bytes


def speech_bytes(releases: list[Release], device: str) -> int:
    weights = sum(
        part.parameters * (4 if device == "cpu" else DTYPE_BYTES[part.gpu_dtype])
        for release in releases
        for part in release.parts
    )
    return weights + int(SPEECH_WORKING_GIB * GiB * (2 if device == "cpu" else 1))


def estimate(pack: Pack, precision: str, device: str, voice: str | None = None) -> Estimate:
    """``voice``: a voice release to count instead of the pack's (e.g. CosyVoice 3's, whose
    flow holds 332 M values against CosyVoice 2's 113 M)."""
    releases = all_releases()
    llm = releases[pack.llm]
    compute = 4 if device == "cpu" else 2  # float32 on a CPU, bfloat16 on a GPU
    speech = [releases[name] for name in pack.releases if name != pack.llm]
    if voice is not None:
        if voice not in releases or releases[voice].kind not in VOICE_KINDS:
            raise ConfigError(f"{voice!r} is not a voice release ({', '.join(VOICE_KINDS)})")
        speech = [releases[voice] if r.kind in VOICE_KINDS else r for r in speech]
    overhead = CPU_OVERHEAD_GIB if device == "cpu" else GPU_OVERHEAD_GIB
    return Estimate(
        pack=pack.name,
        llm=llm.name,
        device=device,
        precision=precision,
        llm_weights=llm_weight_bytes(llm, precision),
        kv_cache=kv_cache_bytes(llm.llm, CONTEXT_TOKENS, compute),
        activations=activation_bytes(llm.llm, CONTEXT_TOKENS, compute),
        speech=speech_bytes(speech, device),
        overhead=int(overhead * GiB),
    )


def pack_memory_gb(pack: Pack) -> dict[str, float]:
    """The pack manifest's ``memory_gb`` table: GiB per GPU precision, and float32 on a CPU."""
    out = {p: round(estimate(pack, p, "cuda").total / GiB, 1) for p in GPU_PRECISIONS}
    out["float32_cpu"] = round(estimate(pack, "float32", "cpu").total / GiB, 1)
    return out


@dataclass(frozen=True)
class Plan:
    device: str
    memory: int  # bytes the planner was told are free (GPU) or available (RAM)
    usable: int
    choice: Estimate | None  # the recommendation (standard precision)
    experimental: Estimate | None  # a larger LLM with quantised weights, if one fits
    candidates: list[Estimate]  # every pack and precision, largest LLM first

    def reason(self) -> str:
        if self.choice is None:
            smallest = min(self.candidates, key=lambda e: e.total)
            return (
                f"nothing fits: {self.usable / GiB:.1f} GiB usable, the smallest pack "
                f"({smallest.pack}, {smallest.precision}) needs {smallest.total / GiB:.1f} GiB"
            )
        c = self.choice
        licence = all_releases()[c.llm].licence
        note = "" if licence.startswith("Apache") else f"; {c.llm} is under the {licence}"
        return (
            f"{c.pack} at {c.precision}: {c.total / GiB:.1f} GiB of {self.usable / GiB:.1f} GiB "
            f"usable (LLM {c.llm_weights / GiB:.1f} + KV cache {c.kv_cache / GiB:.2f} + "
            f"activations {c.activations / GiB:.2f} + speech models {c.speech / GiB:.1f} + "
            f"overhead {c.overhead / GiB:.1f}){note}"
        )


def plan(memory_bytes: int, device: str, voice: str | None = None) -> Plan:
    """The recommendation for ``memory_bytes`` of free GPU memory (device "cuda") or
    available RAM (device "cpu"); ``voice``: among the packs that speak with this voice
    release (where none does, the packs with it counted instead of theirs)."""
    usable = int(memory_bytes * (CPU_USABLE if device == "cpu" else GPU_USABLE))
    packs = [p for p in all_packs().values() if p.llm is not None]
    if voice is not None:
        speaking = [p for p in packs if (v := pack_voice(p)) is not None and v.name == voice]
        if speaking:
            packs, voice = speaking, None
    precisions = ("float32",) if device == "cpu" else GPU_PRECISIONS
    candidates = [estimate(p, q, device, voice) for p in packs for q in precisions]
    fitting = [e for e in candidates if e.total <= usable]
    standard = [e for e in fitting if not e.experimental]
    choice = standard[0] if standard else None  # packs come largest LLM first
    larger = [
        e
        for e in fitting
        if e.experimental and (choice is None or _llm_params(e) > _llm_params(choice))
    ]
    return Plan(device, memory_bytes, usable, choice, larger[0] if larger else None, candidates)


def _llm_params(e: Estimate) -> int:
    return all_releases()[e.llm].parameters


def available_ram() -> int:
    """Bytes of RAM available to a new process (MemAvailable on Linux)."""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def this_machine() -> tuple[int, str]:
    """(free bytes, device): the first CUDA GPU's free memory, else the available RAM."""
    import torch

    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return free, "cuda"
    return available_ram(), "cpu"


__all__ = ["Estimate", "Plan", "estimate", "pack_memory_gb", "plan", "this_machine"]


README_BUDGETS = ((0, 24), (8, None), (12, None), (16, None), (24, None), (48, None), (80, None))


def plan_table(budgets=README_BUDGETS) -> str:
    """The planner's recommendations as a Markdown table (README): GPU GiB free (0: a CPU
    with that much RAM available), the pack and precision, and the estimate by parts."""
    lines = [
        "| free memory | recommended | LLM weights | KV cache (4k) | activations | speech "
        "models | overhead | total | also possible (experimental) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for gpu_gib, ram_gib in budgets:
        device = "cpu" if gpu_gib == 0 else "cuda"
        memory = (ram_gib if device == "cpu" else gpu_gib) * GiB
        result = plan(memory, device)
        label = f"CPU, {ram_gib} GiB RAM free" if device == "cpu" else f"{gpu_gib} GiB GPU"
        c = result.choice
        extra = result.experimental
        also = f"{extra.pack} {extra.precision} ({extra.total / GiB:.1f} GiB)" if extra else "-"
        if c is None:
            lines.append(f"| {label} | nothing fits | | | | | | | {also} |")
            continue
        lines.append(
            f"| {label} | {c.pack} {c.precision} | {c.llm_weights / GiB:.1f} | "
            f"{c.kv_cache / GiB:.2f} | {c.activations / GiB:.2f} | {c.speech / GiB:.1f} | "
            f"{c.overhead / GiB:.1f} | {c.total / GiB:.1f} of {result.usable / GiB:.1f} | {also} |"
        )
    return "\n".join(lines)
