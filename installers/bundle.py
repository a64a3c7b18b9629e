"""What every platform's PyInstaller spec shares: the app's entry point, what it must carry
that PyInstaller's import analysis cannot see, and what it must leave out.

A spec (``installers/<platform>/minmo-assistant.spec``) calls ``analysis_options()`` and
builds a one-folder bundle from it. The bundle runs ``main.py``; its ``--self-test`` imports
every module of ``app`` and ``minmo_core``, so all of them go in, found by name.
"""

from __future__ import annotations

import contextlib
import importlib.util
from importlib.metadata import PackageNotFoundError
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = "minmo-assistant"
APP_NAME = "MinMo Assistant"
ICON = ROOT / "assets" / "icon"

# not needed at run time: test and benchmark tools, notebooks, other GUI toolkits, the
# training extras' TensorBoard, the CUDA-only quantisation library
EXCLUDES = [
    "pytest", "pytestqt", "_pytest", "IPython", "jupyter", "notebook", "matplotlib",
    "tkinter", "pyroomacoustics", "tensorboard", "torch.utils.tensorboard", "bitsandbytes",
    "torchvision", "torchaudio", "PyInstaller", "pandas", "sklearn",
]  # fmt: skip


def _package_folder(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def analysis_options() -> dict:
    """Keyword arguments for the spec's ``Analysis``."""
    from PyInstaller.utils.hooks import (
        collect_data_files,
        collect_dynamic_libs,
        collect_submodules,
        copy_metadata,
    )

    hidden = collect_submodules("app") + collect_submodules("minmo_core")
    hidden = [h for h in hidden if not h.endswith("__main__")]
    datas = [
        (str(ICON / "minmo.svg"), "assets/icon"),
        *[(str(p), "assets/icon") for p in sorted(ICON.glob("minmo-*.png"))],
        (str(ROOT / "assets" / "smart-turn" / "smart-turn-v3.2-cpu.onnx"), "assets/smart-turn"),
        (str(ROOT / "assets" / "smart-turn" / "LICENSE"), "assets/smart-turn"),
        (str(ROOT / "minmo_core" / "data"), "minmo_core/data"),
        (str(ROOT / "LICENSE"), "."),
        (str(ROOT / "NOTICE"), "."),
    ]
    for package in ("transformers", "tokenizers", "huggingface-hub", "safetensors", "peft",
                    "torch", "numpy", "tqdm", "regex", "requests", "packaging", "filelock",
                    "pyyaml", "sentencepiece", "accelerate"):  # fmt: skip
        with contextlib.suppress(PackageNotFoundError):  # a package this install lacks
            datas += copy_metadata(package)  # transformers checks versions at import
    # data files read by path: SentencePiece's normalisation tables (the tiny models' and the
    # demo's vocabularies are trained at run time), wetext's FSTs (reply text verbalised)
    for package in ("sentencepiece", "wetext"):
        datas += collect_data_files(package)
    binaries = collect_dynamic_libs("livekit")  # WebRTC's AEC3 (liblivekit_ffi, ctypes)
    speex = _package_folder("speexdsp")  # not on Windows; loaded by path (app/audio/aec.py)
    if speex is not None:
        binaries += [(str(p), "speexdsp") for p in speex.glob("_speexdsp*")]
        hidden.append("speexdsp")
    return {
        "pathex": [str(ROOT)],
        "hookspath": [str(ROOT / "installers" / "hooks")],  # before the contributed hooks
        "datas": datas,
        "binaries": binaries,
        "hiddenimports": hidden,
        "excludes": EXCLUDES,
        "noarchive": False,
    }
