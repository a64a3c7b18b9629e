"""The model stack a conversation runs on, loaded from folders (or a remote LLM server):
the chat LLM, the voice (CosyVoice 2 or 3) and the ears (SenseVoice). The command line and the
window both load through here; ``on_progress`` says which part is loading, for a progress
bar.

Folders not given are found the usual way (``minmo_core.common.paths.model_folder``): an
environment variable, else the models folder; the LLM, else the largest installed pack's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from minmo_core.common.paths import default_model_folder, model_folder
from minmo_core.common.releases import COSYVOICE2, COSYVOICE3, SENSEVOICE_SMALL
from minmo_core.errors import CheckpointError, ConfigError

COSYVOICE_FOLDER = ("MINMO_COSYVOICE_DIR", COSYVOICE2.name, "--cosyvoice")
COSYVOICE3_FOLDER = ("MINMO_COSYVOICE3_DIR", COSYVOICE3.name, "--cosyvoice")
VOICE_RELEASES = {"cosyvoice2": COSYVOICE_FOLDER, "cosyvoice3": COSYVOICE3_FOLDER}
VOICE_LMS = {"standard": "llm.pt", "rl": "llm.rl.pt"}  # CosyVoice 3's two voice LMs
SENSEVOICE_FOLDER = ("MINMO_SENSEVOICE_DIR", SENSEVOICE_SMALL.name, "--sensevoice")

Progress = Callable[[int, int, str], None]  # (step, steps, what is loading now)


@dataclass(frozen=True)
class StackSpec:
    """Where each part comes from (None: the default place)."""

    device: str = "auto"  # auto, cpu, cuda, cuda:1
    llm_dir: str | Path | None = None
    llm_url: str | None = None  # a remote OpenAI-compatible server instead of llm_dir
    llm_model: str | None = None
    llm_api_key: str | None = None
    cosyvoice: str | Path | None = None
    sensevoice: str | Path | None = None
    allow_unpinned: bool = False
    seed: int | None = None
    voice_lm: str = "standard"  # CosyVoice 3's voice LM: "standard" (llm.pt) or "rl" (llm.rl.pt)

    def __post_init__(self) -> None:
        if self.voice_lm not in VOICE_LMS:
            raise ConfigError(
                f"unknown voice LM {self.voice_lm!r}; choose one of: {', '.join(VOICE_LMS)}"
            )


@dataclass
class Stack:
    llm: object  # ChatLLM or RemoteChatLLM
    voice: object | None  # SpeechSynthesizer
    ears: object | None  # SenseVoice
    cosyvoice_dir: Path | None  # the voice's folder (its ONNX front end clones voices)


def load_stack(
    spec: StackSpec,
    llm_config=None,
    voice: bool = True,
    ears: bool = True,
    on_progress: Progress | None = None,
) -> Stack:
    """Load the parts asked for, ears first and the LLM last (the largest); a missing or
    damaged folder raises the loader's error naming it before anything large is read."""
    from minmo_core.common.devices import resolve_device
    from minmo_core.config import LLMConfig
    from minmo_core.llm.chat import DEFAULT_MODEL, LLM_DIR_ENV, ChatLLM
    from minmo_core.understanding.sensevoice import SenseVoice
    from minmo_core.voice.tts import SpeechSynthesizer

    config = llm_config or LLMConfig()
    device = resolve_device(spec.device)
    remote = spec.llm_url is not None
    llm = None
    if remote:  # asks the server what it serves: a wrong address fails before any loading
        from minmo_core.llm.remote import RemoteChatLLM, RemoteLLMSettings

        settings = RemoteLLMSettings(spec.llm_url, spec.llm_model or "", spec.llm_api_key)
        llm = RemoteChatLLM(settings, config)
    llm_dir = None if remote else llm_folder(spec.llm_dir, LLM_DIR_ENV, DEFAULT_MODEL)
    cosy = model_folder(spec.cosyvoice, *COSYVOICE_FOLDER) if voice else None
    sense = model_folder(spec.sensevoice, *SENSEVOICE_FOLDER) if ears else None
    steps = [
        ("the speech recogniser (SenseVoiceSmall)", sense is not None),
        (f"the voice ({_voice_name(cosy)})", cosy is not None),
        (f"the language model ({spec.llm_url if remote else Path(llm_dir).name})", True),
    ]
    steps = [what for what, wanted in steps if wanted]
    done = iter(range(len(steps)))

    def report(what: str) -> None:
        if on_progress is not None:
            on_progress(next(done), len(steps), what)

    sensevoice = synth = None
    if sense is not None:
        report(steps[0])
        sensevoice = SenseVoice.from_folder(sense, str(device), allow_unpinned=spec.allow_unpinned)
    if cosy is not None:
        report(steps[1 if sense is not None else 0])
        llm_file = voice_lm_file(cosy, spec.voice_lm)
        synth = SpeechSynthesizer.from_folder(
            cosy, device, spec.allow_unpinned, seed=spec.seed, llm_file=llm_file
        )
        from minmo_core.engine.speakable import warm_up

        warm_up()  # the text normaliser's grammars, before the first reply needs them
    report(steps[-1])
    if llm is None:
        llm = ChatLLM(llm_dir, config, device=str(device))
    if on_progress is not None:
        on_progress(len(steps), len(steps), "ready")
    return Stack(llm, synth, sensevoice, cosy)


def voice_lm_file(folder: Path, voice_lm: str) -> str:
    """The file of the voice LM ``voice_lm`` names (a key of VOICE_LMS): CosyVoice 3's
    RL-tuned one only where the folder is CosyVoice 3's (CosyVoice 2 has one LM)."""
    from minmo_core.common.release_config import release_generation

    if voice_lm == "rl" and release_generation(folder) == 3:
        return VOICE_LMS["rl"]
    return VOICE_LMS["standard"]


def voice_folder(release: str) -> Path | None:
    """The folder of the voice release a user picked (``"cosyvoice2"``: None, the usual
    default; ``"cosyvoice3"``: $MINMO_COSYVOICE3_DIR, else where it was imported, else the
    models folder); CheckpointError saying how to install CosyVoice 3 when it is not there."""
    if release not in VOICE_RELEASES:
        raise CheckpointError(f"unknown voice release {release!r}; choose cosyvoice2 or cosyvoice3")
    if release == "cosyvoice2":
        return None
    env_var, name, _ = COSYVOICE3_FOLDER
    folder = default_model_folder(env_var, name)
    if not folder.is_dir():
        raise CheckpointError(
            f"{name} is not installed (no folder at {folder}); download a -cv3 pack "
            "(`minmo models download minmo-7b-cv3`, or the size you use, or the first-run "
            f"screen), import a folder with `minmo models import FOLDER`, set {env_var}, or "
            "choose CosyVoice 2 in Settings → Models"
        )
    return folder


def _voice_name(folder: Path | None) -> str:
    from minmo_core.common.release_config import release_generation
    from minmo_core.common.releases import COSYVOICE2, COSYVOICE3

    if folder is None or not Path(folder).is_dir():
        return COSYVOICE2.name
    return (COSYVOICE3 if release_generation(folder) == 3 else COSYVOICE2).name


def llm_folder(given, env_var: str, default: str) -> Path:
    """The given folder, else $MINMO_LLM_DIR, else the largest installed pack's LLM, else
    the default (whose absence is named with the way to fetch one)."""
    from minmo_core.manager.store import ModelStore, installed_llm

    if given is None and not os.environ.get(env_var):
        release = installed_llm()
        if release is not None:
            return ModelStore().folder(release)
    return model_folder(given, env_var, default, "--llm")
