"""Build SpeexDSP's shared library for a platform, so every platform gets its echo canceller.

The ``speexdsp`` Python package compiles against a system libspeexdsp, which Windows does not
have, so without this the Windows app would fall back to WebRTC's AEC3, whose suppressor
mutes the first few hundred milliseconds of an interruption (docs/BENCHMARKS.md). This
script downloads SpeexDSP's release source (checked against its pinned SHA-256), and
compiles the library with Zig's C compiler from PyPI (``ziglang``: one wheel, no system
toolchain, and it cross-compiles, so the Windows and macOS libraries build from any
machine). The app loads the result with ctypes (``app/audio/aec.py``), from
``app/audio/native/`` by default, where the bundle specs pick it up.

    python -m installers.speexdsp                       # this machine's platform
    python -m installers.speexdsp --target windows-x86_64 --out build/native
    python -m installers.speexdsp --fetch-only          # the source into the cache alone

The build is SpeexDSP's own default for floating point: smallft FFT, SSE where the target
has it, the baseline instruction set of the target (the library runs on any CPU of it).
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import platformdirs

ROOT = Path(__file__).resolve().parents[1]
NATIVE_DIR = ROOT / "app" / "audio" / "native"
# the checked source, kept across `make clean` (make test fetches it for the build test)
CACHE_DIR = Path(platformdirs.user_cache_dir("minmo-assistant", appauthor=False)) / "sources"

VERSION = "1.2.1"
# the release tarball (Debian's orig tarball is the same file; its signed .dsc lists this sum)
SHA256 = "8c777343e4a6399569c72abc38a95b24db56882c83dbdb6c6424a5f4aeb54d3d"
URLS = (
    f"https://downloads.xiph.org/releases/speex/speexdsp-{VERSION}.tar.gz",
    f"https://deb.debian.org/debian/pool/main/s/speexdsp/speexdsp_{VERSION}.orig.tar.gz",
)
SOURCES = ("buffer", "fftwrap", "filterbank", "jitter", "mdf", "preprocess", "resample",
           "scal", "smallft")  # fmt: skip

# target name -> (zig target triple, library file name)
TARGETS = {
    "linux-x86_64": ("x86_64-linux-gnu.2.17", "libspeexdsp.so"),
    "linux-aarch64": ("aarch64-linux-gnu.2.17", "libspeexdsp.so"),
    "windows-x86_64": ("x86_64-windows-gnu", "speexdsp.dll"),
    "windows-arm64": ("aarch64-windows-gnu", "speexdsp.dll"),
    "macos-x86_64": ("x86_64-macos.10.15", "libspeexdsp.dylib"),
    "macos-arm64": ("aarch64-macos.11.0", "libspeexdsp.dylib"),
}


def host_target() -> str:
    """The target name of this machine."""
    system = {"win32": "windows", "darwin": "macos"}.get(sys.platform, "linux")
    machine = platform.machine().lower()
    arch = {"amd64": "x86_64", "x64": "x86_64", "arm64": "arm64", "aarch64": "arm64"}.get(
        machine, machine
    )
    if system == "linux" and arch == "arm64":
        arch = "aarch64"
    name = f"{system}-{arch}"
    if name not in TARGETS:
        raise SystemExit(f"no SpeexDSP build for {name}: one of {', '.join(TARGETS)}")
    return name


def library_name(target: str) -> str:
    return TARGETS[target][1]


def cached_source(cache: Path = CACHE_DIR) -> Path:
    """Where ``fetch_source`` keeps the release tarball."""
    return cache / f"speexdsp-{VERSION}.tar.gz"


def fetch_source(cache: Path = CACHE_DIR, tarball: Path | None = None) -> Path:
    """The release tarball, from ``tarball`` or downloaded into ``cache``, its SHA-256
    checked against the pin (a file that does not match is never used)."""
    if tarball is None:
        tarball = cached_source(cache)
        if not (tarball.exists() and _sha256(tarball) == SHA256):
            cache.mkdir(parents=True, exist_ok=True)
            errors = []
            for url in URLS:
                part = tarball.with_suffix(".part")
                try:
                    with urllib.request.urlopen(url, timeout=60) as reply, part.open("wb") as f:
                        shutil.copyfileobj(reply, f)
                except OSError as err:
                    errors.append(f"{url}: {err}")
                    continue
                if _sha256(part) == SHA256:
                    part.replace(tarball)
                    break
                errors.append(f"{url}: SHA-256 {_sha256(part)} is not the pinned {SHA256}")
                part.unlink()
            else:
                raise SystemExit("could not download SpeexDSP's source:\n  " + "\n  ".join(errors))
    if not tarball.is_file():
        raise SystemExit(f"{tarball} does not exist: give SpeexDSP {VERSION}'s release tarball")
    if _sha256(tarball) != SHA256:
        raise SystemExit(f"{tarball} is not SpeexDSP {VERSION}'s release: SHA-256 differs")
    return tarball


def config_header(target: str) -> str:
    """config.h as SpeexDSP's configure writes it for a floating-point build."""
    lines = [
        "#define FLOATING_POINT 1",
        "#define USE_SMALLFT 1",
        "#define VAR_ARRAYS 1",
        "#define HAVE_STDINT_H 1",
    ]
    if target.endswith("x86_64"):  # SSE and SSE2 are in every x86-64 CPU
        lines += ["#define USE_SSE 1", "#define USE_SSE2 1"]
    if target.startswith("windows"):
        lines.append("#define EXPORT")  # the DLL's exports are listed in SpeexDSP's .def file
    else:
        lines.append('#define EXPORT __attribute__((visibility("default")))')
    return "\n".join(lines) + "\n"


TYPES_HEADER = """#ifndef __SPEEX_TYPES_H__
#define __SPEEX_TYPES_H__
#include <stdint.h>
typedef int16_t spx_int16_t;
typedef uint16_t spx_uint16_t;
typedef int32_t spx_int32_t;
typedef uint32_t spx_uint32_t;
#endif
"""


def build(target: str, out_dir: Path = NATIVE_DIR, tarball: Path | None = None) -> Path:
    """Compile the library for ``target`` into ``out_dir``; returns its path."""
    triple, name = TARGETS[target]
    source = fetch_source(tarball=tarball)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="speexdsp-") as tmp:
        work = Path(tmp)
        with tarfile.open(source) as tar:
            if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later
                tar.extractall(work, filter="data")
            else:  # the tarball's SHA-256 was checked: it is SpeexDSP's own
                tar.extractall(work)
        src = work / f"speexdsp-{VERSION}"
        (src / "config.h").write_text(config_header(target))
        (src / "include" / "speex" / "speexdsp_config_types.h").write_text(TYPES_HEADER)
        built = work / name
        command = [
            sys.executable, "-m", "ziglang", "cc", "-target", triple, "-mcpu=baseline",
            "-shared", "-O2", "-fPIC", "-w", "-DHAVE_CONFIG_H",
            f"-I{src}", f"-I{src / 'include'}", f"-I{src / 'libspeexdsp'}",
            "-o", str(built),
            *[str(src / "libspeexdsp" / f"{s}.c") for s in SOURCES],
        ]  # fmt: skip
        if target.startswith("windows"):  # SpeexDSP's own list of the API the DLL exports
            command.append(str(src / "win32" / "libspeexdsp.def"))
        else:  # only what EXPORT marks: the API
            command.append("-fvisibility=hidden")
        if target.startswith("linux"):
            command += ["-lm", f"-Wl,-soname,{name}"]
        if target.startswith("macos"):  # (Zig's linker signs it ad hoc, as arm64 requires)
            command.append(f"-Wl,-install_name,@rpath/{name}")
        try:
            subprocess.run(command, check=True, cwd=work)
        except FileNotFoundError as err:
            raise SystemExit(f"cannot run {sys.executable}: {err}") from err
        except subprocess.CalledProcessError as err:
            raise SystemExit(
                "Zig's compiler failed (is `ziglang` installed? `pip install ziglang`)"
            ) from err
        output = out_dir / name  # the library alone, not the import library or debug info
        shutil.copyfile(built, output)
    return output


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=sorted(TARGETS), default=None)
    parser.add_argument("--out", type=Path, default=NATIVE_DIR)
    parser.add_argument("--tarball", type=Path, default=None, help="a downloaded release")
    parser.add_argument("--fetch-only", action="store_true", help="download the source alone")
    args = parser.parse_args(argv)
    if args.fetch_only:
        print(f"SpeexDSP {VERSION}'s source: {fetch_source(tarball=args.tarball)}")
        return 0
    output = build(args.target or host_target(), args.out, args.tarball)
    print(f"built {output} ({output.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
