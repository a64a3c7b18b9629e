"""Release descriptions: one per model folder, every file pinned where known, and pins that a
same-size tamper with a restored mtime cannot fool."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from minmo_core.common import releases
from minmo_core.common.releases import (
    COSYVOICE2,
    COSYVOICE3,
    RELEASES,
    SENSEVOICE_SMALL,
    Pin,
    Release,
    ReleaseFile,
    sha256_of,
    verify_files,
    verify_release,
)
from minmo_core.errors import CheckpointError


@pytest.fixture
def release_dir(tmp_path: Path) -> tuple[Path, Release]:
    (tmp_path / "model.pt").write_bytes(b"0123456789")
    (tmp_path / "notes.txt").write_text("hello")
    release = Release(
        name="Demo",
        repo_id="demo/demo",
        revision=None,
        files={
            "model.pt": ReleaseFile(Pin(10, sha256_of(tmp_path / "model.pt"))),
            "notes.txt": ReleaseFile(None),
            "card.md": ReleaseFile(Pin(3, "0" * 64), used=False),
        },
    )
    return tmp_path, release


def test_matching_files_pass_and_unused_files_are_not_required(
    release_dir: tuple[Path, Release],
) -> None:
    folder, release = release_dir
    verify_release(folder, release)


def test_a_missing_file_is_named(release_dir: tuple[Path, Release]) -> None:
    folder, release = release_dir
    (folder / "notes.txt").unlink()
    with pytest.raises(CheckpointError, match=r"Demo model folder .* has no notes\.txt"):
        verify_release(folder, release, allow_unpinned=True)


def test_a_truncated_file_is_refused_with_its_sizes_and_the_flag(
    release_dir: tuple[Path, Release],
) -> None:
    folder, release = release_dir
    (folder / "model.pt").write_bytes(b"01234")
    with pytest.raises(
        CheckpointError, match=r"model\.pt is 5 bytes .* has 10 \(truncated.*--allow-unpinned"
    ):
        verify_release(folder, release)
    verify_release(folder, release, allow_unpinned=True)


def test_a_tampered_file_of_the_same_size_is_refused(release_dir: tuple[Path, Release]) -> None:
    folder, release = release_dir
    (folder / "model.pt").write_bytes(b"0123456780")
    with pytest.raises(CheckpointError, match=r"does not match model\.pt of the pinned Demo"):
        verify_release(folder, release)


def test_a_missing_folder_is_named(tmp_path: Path) -> None:
    release = Release("Demo", "demo/demo", None, {})
    with pytest.raises(CheckpointError, match=r"Demo model folder .*nowhere does not exist"):
        verify_release(tmp_path / "nowhere", release)


@pytest.mark.skipif(os.name == "nt", reason="Windows re-hashes on every check: no cache to fool")
def test_the_hash_cache_is_used_but_a_restored_mtime_tamper_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"good weights" * 1000)
    release = Release(
        "Demo", "demo/demo", None, {"model.pt": ReleaseFile(Pin(12000, sha256_of(model)))}
    )
    time.sleep(releases.RACY_WINDOW_NS / 1e9 + 0.2)  # older than the racy window: cacheable
    hashed = []
    real_sha256 = releases.sha256_of
    monkeypatch.setattr(releases, "sha256_of", lambda p: hashed.append(p) or real_sha256(p))
    verify_release(tmp_path, release)
    verify_release(tmp_path, release)
    assert len(hashed) == 1  # the second check trusted the cache

    before = model.stat()
    with open(model, "r+b") as f:  # same size, other bytes, then the old mtime put back
        f.write(b"evil")
    os.utime(model, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = model.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    with pytest.raises(CheckpointError, match=r"does not match model\.pt"):
        verify_release(tmp_path, release)
    assert len(hashed) == 2


def test_a_file_changed_within_the_racy_window_is_never_trusted(tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"a" * 100)
    assert releases.cached_sha256(model) == sha256_of(model)
    with open(model, "r+b") as f:  # within the same clock tick as the first hash
        f.write(b"b")
    assert releases.cached_sha256(model) == sha256_of(model)


def test_a_corrupt_cache_file_only_costs_a_rehash(tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"x" * 10)
    releases._cache_path().parent.mkdir(parents=True, exist_ok=True)
    releases._cache_path().write_text("[not, json")
    assert releases.cached_sha256(model) == sha256_of(model)


def test_each_model_folder_has_one_release_listing_every_file() -> None:
    names = [r.name for r in RELEASES.values()]
    assert names == [SENSEVOICE_SMALL.name, COSYVOICE2.name, COSYVOICE3.name]
    for release in (SENSEVOICE_SMALL, COSYVOICE2):
        assert release.revision and len(release.revision) == 40
        for name, entry in release.files.items():
            assert entry.pin is not None, f"{release.name}/{name} has no pin"
            assert len(entry.pin.sha256) == 64 and entry.pin.size > 0
    # every file a CosyVoice 2 loader reads is in the one description, pinned
    for name in ("llm.pt", "flow.pt", "hift.pt", "speech_tokenizer_v2.onnx", "campplus.onnx",
                 "cosyvoice2.yaml", "CosyVoice-BlankEN/config.json",
                 "CosyVoice-BlankEN/vocab.json", "CosyVoice-BlankEN/merges.txt"):  # fmt: skip
        assert COSYVOICE2.files[name].used


def test_cosyvoice_3_is_pinned_and_its_pins_agree_with_its_parts(tmp_path: Path) -> None:
    """Fun-CosyVoice3-0.5B-2512 at a hub commit, every file with its size and sha256. The
    pins agree with what is known otherwise: each float32 checkpoint is 4 bytes per value
    of its part (the counts the fixtures' models have) plus its container's few kB, and the
    files CosyVoice 2 ships too (speaker model, CosyVoice-BlankEN) carry CosyVoice 2's pins.
    A release without a commit is still refused before any network call."""
    from dataclasses import replace

    from minmo_core.manager.download import download_releases
    from minmo_core.manager.store import ModelStore

    assert COSYVOICE3.revision == "29e01c4e8d000f4bcd70751be16fa94bf3d85a18"
    assert COSYVOICE3.fully_pinned and all(f.pin is not None for f in COSYVOICE3.files.values())
    for name in ("llm.pt", "flow.pt", "hift.pt", "speech_tokenizer_v3.onnx", "campplus.onnx",
                 "cosyvoice3.yaml", "CosyVoice-BlankEN/config.json",
                 "CosyVoice-BlankEN/vocab.json", "CosyVoice-BlankEN/merges.txt"):  # fmt: skip
        assert COSYVOICE3.files[name].used
    assert not COSYVOICE3.files["llm.rl.pt"].used  # the RL-tuned LM is fetched on request
    assert sum(p.parameters for p in COSYVOICE3.parts) == COSYVOICE3.parameters
    parts = {p.name: p.parameters for p in COSYVOICE3.parts}
    for name, part in (("llm.pt", "voice-token LM"), ("llm.rl.pt", "voice-token LM"),
                       ("flow.pt", "flow decoder"), ("hift.pt", "HiFT vocoder")):  # fmt: skip
        assert 0 < COSYVOICE3.pin(name).size - 4 * parts[part] < 200_000, name
    shared = ["campplus.onnx", "config.json", "configuration.json"] + [
        n for n in COSYVOICE2.files if n.startswith("CosyVoice-BlankEN/")]  # fmt: skip
    assert len(shared) == 9
    for name in shared:
        assert COSYVOICE3.pin(name) == COSYVOICE2.pin(name), name

    class Unreachable:
        url = "http://127.0.0.1:9"

        def remote_files(self, release):
            raise AssertionError("no network call for an unpinned release")

    unpinned = replace(COSYVOICE3, revision="")
    with pytest.raises(CheckpointError, match="not pinned to a hub commit yet"):
        download_releases([unpinned], ModelStore(tmp_path), Unreachable())


def test_asking_for_a_file_outside_the_release_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"not a file of CosyVoice2-0\.5B"):
        verify_files(tmp_path, COSYVOICE2, ["weights.bin"])
