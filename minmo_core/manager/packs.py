"""Packs: the releases that make one working assistant, as data (minmo_core/data/packs).

Every pack holds SenseVoiceSmall (ears), one Qwen2.5-Instruct (the LLM) and a voice:
CosyVoice2-0.5B (MinMo's own, which aligned mode needs) or, in the ``-cv3`` packs,
Fun-CosyVoice3-0.5B-2512 (composed mode only). The end-of-turn model (Smart Turn v3.2) ships
with the app itself. The optional ``minmo-adapters`` slot names what our training pipeline
writes for aligned mode.
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path

from minmo_core.common.releases import DATA, Release, all_releases
from minmo_core.errors import CheckpointError, ConfigError


@dataclass(frozen=True)
class Pack:
    name: str
    title: str
    description: str
    releases: tuple[str, ...]  # release names, in loading order
    llm: str | None  # the release that is the chat LLM
    memory_gb: dict[str, float]  # the planner's estimate per precision, kept true by a test
    optional: bool = False  # a slot (the adapters), not a downloadable set
    source: str = "hub"  # "hub", or "training" for the adapters


def _parse(path: Path) -> Pack:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return Pack(
            name=str(data["name"]),
            title=str(data["title"]),
            description=str(data["description"]),
            releases=tuple(data.get("releases", ())),
            llm=data.get("llm"),
            memory_gb={str(k): float(v) for k, v in data.get("memory_gb", {}).items()},
            optional=bool(data.get("optional", False)),
            source=str(data.get("source", "hub")),
        )
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"pack manifest {path} is malformed ({err!r})") from err


VOICE_KINDS = ("cosyvoice2", "cosyvoice3")  # release kinds that are a pack's voice


def all_packs() -> dict[str, Pack]:
    """Every pack, largest LLM first and, for one LLM, CosyVoice 2's before CosyVoice 3's
    (MinMo's voice, the one aligned mode needs, is the planner's first choice); each names
    only releases the app knows (the manifests are read once per process)."""
    return dict(_packs())


@functools.cache
def _packs() -> dict[str, Pack]:
    known = all_releases()
    packs = [_parse(p) for p in sorted((DATA / "packs").glob("*.toml"))]
    for pack in packs:
        unknown = [r for r in pack.releases if r not in known]
        if unknown:
            raise CheckpointError(f"pack {pack.name} names unknown releases: {unknown}")

    def order(pack: Pack) -> tuple[int, int]:
        size = known[pack.llm].parameters if pack.llm else 1
        voice = pack_voice(pack)
        return -size, VOICE_KINDS.index(voice.kind) if voice is not None else 0

    return {p.name: p for p in sorted(packs, key=order)}


def pack(name: str) -> Pack:
    packs = all_packs()
    if name not in packs:
        raise ConfigError(f"no pack named {name!r}; the packs are: {', '.join(packs)}")
    return packs[name]


def pack_releases(p: Pack) -> list[Release]:
    known = all_releases()
    return [known[name] for name in p.releases]


def pack_voice(p: Pack) -> Release | None:
    """The pack's voice release (CosyVoice 2 or 3); None for the adapters' slot."""
    return next((r for r in pack_releases(p) if r.kind in VOICE_KINDS), None)


def voice_release_of(p: Pack) -> str | None:
    """The Settings value (Models → Voice release) that speaks with ``p``'s voice."""
    voice = pack_voice(p)
    return voice.kind if voice is not None else None


__all__ = ["VOICE_KINDS", "Pack", "all_packs", "pack", "pack_releases", "pack_voice",
           "voice_release_of"]  # fmt: skip
