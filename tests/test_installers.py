"""The installers' inputs: what every platform's PyInstaller spec bundles, the Linux menu
entry and package metadata, the Windows installer script and the macOS app's privacy text.
(tests/test_bundle.py builds the Linux bundle and runs its self-test.)"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INSTALLERS = REPO / "installers"


def test_the_bundle_carries_every_module_asset_and_library_loaded_by_path() -> None:
    pytest.importorskip("PyInstaller", reason="the dist extra: pip install -e '.[dist]'")
    from installers.bundle import EXCLUDES, analysis_options

    options = analysis_options()
    hidden = set(options["hiddenimports"])
    assert {"app.self_test", "app.gui.window", "minmo_core.engine.engine"} <= hidden
    assert not any(h.endswith("__main__") for h in hidden)
    for source, _ in options["datas"] + options["binaries"]:
        assert Path(source).exists(), source
    targets = {(Path(s).name, d) for s, d in options["datas"]}
    assert ("smart-turn-v3.2-cpu.onnx", "assets/smart-turn") in targets
    assert ("minmo-256.png", "assets/icon") in targets and ("data", "minmo_core/data") in targets
    names = {Path(s).name for s, _ in options["datas"]}
    assert "nmt_nfkc.bin" in names  # SentencePiece trains the tiny models' vocabularies
    assert "tagger.fst" in names  # wetext verbalises the replies
    libraries = [Path(s).name for s, _ in options["binaries"]]
    assert any(name.startswith("liblivekit_ffi") for name in libraries)  # WebRTC's AEC3
    assert any(name.startswith("_speexdsp") for name in libraries)  # (not on Windows)
    assert "pytest" in EXCLUDES and "app" not in EXCLUDES
    assert (Path(options["hookspath"][0]) / "hook-webrtcvad.py").is_file()


@pytest.mark.parametrize("platform", ["linux", "windows", "macos"])
def test_each_platform_has_a_spec_that_builds_from_the_shared_options(platform: str) -> None:
    spec = (INSTALLERS / platform / "minmo-assistant.spec").read_text()
    compile(spec, "minmo-assistant.spec", "exec")  # valid Python
    assert "analysis_options()" in spec and "COLLECT(" in spec
    if platform == "windows":
        assert spec.count("EXE(") == 2 and "console=False" in spec and "minmo.ico" in spec
    if platform == "macos":
        assert "BUNDLE(" in spec and "minmo.icns" in spec
        assert re.search(r'"NSMicrophoneUsageDescription": \(\s*"MinMo Assistant listens', spec)


def test_the_linux_menu_entry_and_package_say_what_freedesktop_and_dpkg_need() -> None:
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str  # keys are case-sensitive
    entry.read(INSTALLERS / "linux" / "minmo-assistant.desktop")
    desktop = entry["Desktop Entry"]
    assert desktop["Type"] == "Application" and desktop["Exec"] == "minmo-assistant"
    assert desktop["Icon"] == "minmo-assistant" and desktop["Categories"].endswith(";")
    control = (INSTALLERS / "linux" / "control.in").read_text()
    for field in ("Package", "Version", "Architecture", "Depends", "Maintainer", "Description"):
        assert re.search(rf"^{field}: \S", control, re.M), field
    assert "libportaudio2" in control  # sounddevice loads the system's PortAudio


def test_the_windows_installer_installs_the_bundle_folder_per_user() -> None:
    script = (INSTALLERS / "windows" / "minmo-assistant.iss").read_text()
    assert r'#define BundleDir "..\..\dist\minmo-assistant"' in script
    assert "PrivilegesRequired=lowest" in script and "minmo.ico" in script
    version = re.search(r'^version = "(.+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert f'#define AppVersion "{version.group(1)}"' in script  # kept in step


def test_without_the_speexdsp_package_the_bundle_carries_the_built_library(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Windows: no speexdsp package, so the spec builds libspeexdsp (once) and bundles it
    where app/audio/aec.py looks for it."""
    from installers import bundle, speexdsp

    built = []

    def build(target: str) -> Path:
        built.append(target)
        library = tmp_path / speexdsp.library_name(target)
        library.write_bytes(b"\x7fELF")
        return library

    monkeypatch.setattr(speexdsp, "NATIVE_DIR", tmp_path)
    monkeypatch.setattr(speexdsp, "build", build)
    monkeypatch.setattr(bundle, "_package_folder", lambda name: None)
    name = speexdsp.library_name(speexdsp.host_target())
    assert bundle.speexdsp_binaries() == [(str(tmp_path / name), "app/audio/native")]
    assert bundle.speexdsp_binaries() == [(str(tmp_path / name), "app/audio/native")]
    assert built == [speexdsp.host_target()]  # built when missing, then reused
    monkeypatch.undo()
    monkeypatch.setenv("MINMO_BUNDLE_SPEEXDSP", "library")
    monkeypatch.setattr(speexdsp, "NATIVE_DIR", tmp_path)
    assert bundle.speexdsp_binaries() == [(str(tmp_path / name), "app/audio/native")]
