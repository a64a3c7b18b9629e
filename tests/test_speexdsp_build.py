"""installers/speexdsp.py: SpeexDSP's library built from its pinned release with Zig's
compiler, for this machine and, cross-compiled, for Windows and macOS (what their bundles
carry, since the speexdsp package cannot be installed there)."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from app.audio import aec
from installers import speexdsp as build_speexdsp

pytest.importorskip("ziglang", reason="Zig's compiler comes with the dev extra (ziglang)")
SOURCE = build_speexdsp.cached_source()
pytestmark = pytest.mark.skipif(
    not SOURCE.exists(), reason=f"SpeexDSP's source, which make test downloads, is not in {SOURCE}"
)
# what SpeexLibrary calls
API = ("speex_echo_state_init_mc", "speex_echo_ctl", "speex_echo_cancellation",
       "speex_echo_state_destroy")  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("native")
    return {
        target: build_speexdsp.build(target, out / target, SOURCE)
        for target in ("linux-x86_64", "windows-x86_64", "macos-arm64")
    }


@pytest.mark.skipif(
    not (sys.platform == "linux" and build_speexdsp.host_target() == "linux-x86_64"),
    reason="runs the Linux x86-64 build",
)
def test_the_built_library_cancels_exactly_as_the_systems_libspeexdsp(built) -> None:
    """Same source, same floating-point build: every sample equals the distribution's
    library (Debian's libspeexdsp1), so the Windows and macOS builds, made by the same
    compiler with the same settings, are the canceller the benchmarks measured."""
    rng = np.random.default_rng(11)
    far = (0.1 * rng.standard_normal(16000 * 5)).astype(np.float32)
    path = np.zeros(600)
    path[[30, 200, 450]] = 0.5, -0.25, 0.1
    near = np.convolve(far, path)[: far.size].astype(np.float32)
    near[16000 * 3 :] += 0.05 * np.sin(np.arange(16000 * 2) * 0.05).astype(np.float32)

    def cancel(library: aec.SpeexLibrary) -> np.ndarray:
        state = library.EchoCanceller_create(160, 3200, 16000)
        out = [
            library.EchoCanceller_process(
                state, aec._pcm16(near[i : i + 160]), aec._pcm16(far[i : i + 160])
            )
            for i in range(0, near.size, 160)
        ]
        library.delete_EchoCanceller(state)
        return np.frombuffer(b"".join(out), "<i2")

    ours = cancel(aec.SpeexLibrary(str(built["linux-x86_64"])))
    system = next(p for p in aec.speex_library_candidates() if "native" not in p)
    np.testing.assert_array_equal(ours, cancel(aec.SpeexLibrary(system)))
    late = slice(16000 * 2, 16000 * 3)
    assert 10 * np.log10(np.mean(near[late] ** 2) / np.mean((ours[late] / 32768) ** 2)) > 20


def pe_tables(data: bytes) -> tuple[int, list[str], list[str]]:
    """A PE file's machine type, exported names and imported DLLs."""
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    assert data[pe : pe + 4] == b"PE\0\0"
    machine, sections, _, _, _, optional_size, _ = struct.unpack_from("<HHIIIHH", data, pe + 4)
    optional = pe + 24
    directories = optional + (112 if struct.unpack_from("<H", data, optional)[0] == 0x20B else 96)
    table = []
    for i in range(sections):
        size, address, raw_size, raw = struct.unpack_from(
            "<IIII", data, optional + optional_size + 40 * i + 8
        )
        table.append((address, max(size, raw_size), raw))

    def at(rva: int) -> int:
        return next(rva - a + raw for a, size, raw in table if a <= rva < a + size)

    def name(rva: int) -> str:
        start = at(rva)
        return data[start : data.index(b"\0", start)].decode()

    export = at(struct.unpack_from("<I", data, directories)[0])
    count, names = (
        struct.unpack_from("<I", data, export + 24)[0],
        struct.unpack_from("<I", data, export + 32)[0],
    )
    exports = [name(struct.unpack_from("<I", data, at(names) + 4 * i)[0]) for i in range(count)]
    imports, entry = [], at(struct.unpack_from("<I", data, directories + 8)[0])
    while dll := struct.unpack_from("<I", data, entry + 12)[0]:
        imports.append(name(dll))
        entry += 20
    return machine, exports, imports


def test_the_windows_dll_is_x86_64_exports_the_api_and_needs_only_windows_own_dlls(built):
    machine, exports, imports = pe_tables(built["windows-x86_64"].read_bytes())
    assert machine == 0x8664  # AMD64
    assert set(API) <= set(exports)
    assert not [e for e in exports if e.startswith(("spx_", "filterbank", "smallft"))]
    # the universal C runtime (in every Windows 10 and 11, and what Python itself needs)
    assert imports and all(
        d == "KERNEL32.dll" or d.lower().startswith("api-ms-win-crt-") for d in imports
    ), imports


def test_the_macos_library_is_a_signed_arm64_dylib_with_the_api(built):
    data = built["macos-arm64"].read_bytes()
    magic, cpu, _, kind, commands = struct.unpack_from("<IIIII", data, 0)
    assert magic == 0xFEEDFACF and cpu == 0x0100000C and kind == 6  # 64-bit arm64 dylib
    for symbol in API:
        assert b"_" + symbol.encode() + b"\0" in data
    seen, names, at = set(), {}, 32
    for _ in range(commands):
        command, size = struct.unpack_from("<II", data, at)
        seen.add(command)
        if command in (0xC, 0xD):  # LC_LOAD_DYLIB, LC_ID_DYLIB: a library's name
            start = at + struct.unpack_from("<I", data, at + 8)[0]
            names.setdefault(command, []).append(data[start : data.index(b"\0", start)])
        at += size
    assert 0x1D in seen  # LC_CODE_SIGNATURE: Apple silicon runs no unsigned code
    assert names[0xD] == [b"@rpath/libspeexdsp.dylib"]  # not the build folder
    assert names[0xC] == [b"/usr/lib/libSystem.B.dylib"]  # nothing beyond the system


def test_a_tarball_that_is_not_the_pinned_release_is_refused(tmp_path) -> None:
    fake = tmp_path / "speexdsp-1.2.1.tar.gz"
    fake.write_bytes(SOURCE.read_bytes()[:-1])  # truncated
    with pytest.raises(SystemExit, match=r"not SpeexDSP 1\.2\.1.s release: SHA-256 differs"):
        build_speexdsp.build("linux-x86_64", tmp_path / "out", fake)
    assert not (tmp_path / "out" / "libspeexdsp.so").exists()
    with pytest.raises(SystemExit, match="does not exist: give SpeexDSP"):
        build_speexdsp.build("linux-x86_64", tmp_path / "out", tmp_path / "missing.tar.gz")
