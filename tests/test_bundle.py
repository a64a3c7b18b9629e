"""The Linux bundle: PyInstaller builds it from installers/linux/minmo-assistant.spec, and
its self-test passes from the bundle folder with an empty environment (no virtual
environment, no Python on the path), under the size floor. (`make dist` does the same and
also wraps it in the tarball and the .deb.)"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SIZE_FLOOR = 1.5e9  # bytes, with the CPU build of torch


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux bundle builds on Linux")
def test_the_linux_bundle_builds_and_passes_its_self_test_without_the_venv(tmp_path: Path):
    pytest.importorskip("PyInstaller", reason="the dist extra: pip install -e '.[dist]'")
    spec = REPO / "installers" / "linux" / "minmo-assistant.spec"
    dist, work = tmp_path / "dist", tmp_path / "build"
    try:
        built = subprocess.run(
            [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
             "--distpath", str(dist), "--workpath", str(work), str(spec)],
            cwd=REPO, capture_output=True, text=True, timeout=1500,
        )  # fmt: skip
        assert built.returncode == 0, built.stderr[-3000:]
        bundle = dist / "minmo-assistant"
        env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
               "QT_QPA_PLATFORM": "offscreen"}  # fmt: skip
        done = subprocess.run([str(bundle / "minmo-assistant"), "--self-test"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr[-3000:]
        assert "self-test passed" in done.stdout
        assert "ok   window and spoken turn: heard " in done.stdout
        assert "echo canceller SpeexDSP (" in done.stdout
        files = [f for f in bundle.rglob("*") if f.is_file() and not f.is_symlink()]
        size = sum(f.stat().st_size for f in files)  # (its symlinks point inside it)
        print(f"bundle: {size / 1e9:.2f} GB")
        assert size < SIZE_FLOOR
    finally:
        shutil.rmtree(dist, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
