"""What every platform's PyInstaller spec shares: the app's entry point, what it must carry
that PyInstaller's import analysis cannot see, and what it must leave out.

A spec (``installers/<platform>/minmo-assistant.spec``) calls ``analysis_options()`` and
builds a one-folder bundle from it. The bundle runs ``main.py``; its ``--self-test`` imports
every module of ``app`` and ``minmo_core``, so all of them go in, found by name.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
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


def speexdsp_binaries() -> list[tuple[str, str]]:
    """SpeexDSP, the default echo canceller: the speexdsp package's extension where it is
    installed (loaded by path, app/audio/aec.py; PyInstaller adds the libspeexdsp it links),
    else the library installers/speexdsp.py builds (Windows), built now if it is missing.
    MINMO_BUNDLE_SPEEXDSP=library takes the built library even where the package is."""
    from installers import speexdsp

    speex = _package_folder("speexdsp")
    if speex is not None and os.environ.get("MINMO_BUNDLE_SPEEXDSP") != "library":
        return [(str(p), "speexdsp") for p in speex.glob("_speexdsp*")]
    library = speexdsp.NATIVE_DIR / speexdsp.library_name(speexdsp.host_target())
    if not library.exists():
        speexdsp.build(speexdsp.host_target())
    return [(str(library), "app/audio/native")]


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
    binaries += speexdsp_binaries()
    if any(folder == "speexdsp" for _, folder in binaries):
        hidden.append("speexdsp")  # found by find_spec, then its extension loaded by path
    return {
        "pathex": [str(ROOT)],
        "hookspath": [str(ROOT / "installers" / "hooks")],  # before the contributed hooks
        "datas": datas,
        "binaries": binaries,
        "hiddenimports": hidden,
        "excludes": EXCLUDES,
        "noarchive": False,
    }
