"""`minmo models import`: a hub cache snapshot verified offline by its blob names, a copied
folder verified against the hub or refused offline unless trusted, pinned files held to their
pins, and --copy."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from app.cli import main
from minmo_core.common.releases import all_releases
from minmo_core.errors import CheckpointError
from minmo_core.manager.imports import detect, import_folder
from minmo_core.manager.store import ModelStore, installed_llm, release_status, verify_installed
from tests.test_hub import closed_port

QWEN = all_releases()["Qwen2.5-0.5B-Instruct"]


def qwen_files() -> dict[str, bytes]:
    """Stand-ins for Qwen2.5-0.5B-Instruct's files: its shape in config.json (what tells the
    sizes apart), small bytes elsewhere."""
    shape = QWEN.llm
    config = {"hidden_size": shape.hidden, "num_hidden_layers": shape.layers,
              "num_key_value_heads": shape.kv_heads}  # fmt: skip
    files = {name: f"{name} of the demo".encode() * 20 for name in QWEN.used_files}
    files["config.json"] = json.dumps(config).encode()
    return files


def hub_cache(root: Path, files: dict[str, bytes], revision: str, release=QWEN) -> Path:
    """huggingface_hub's cache layout: blobs named by sha256, snapshot files linking to them."""
    repo = root / f"models--{release.repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for name, content in files.items():
        blob = repo / "blobs" / hashlib.sha256(content).hexdigest()
        blob.write_bytes(content)
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        up = Path(*[".."] * (2 + name.count("/")))
        (snapshot / name).symlink_to(up / "blobs" / blob.name)
    return repo


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")  # nobody listens


def test_a_hub_cache_snapshot_is_verified_offline_and_registered_where_it_is(
    tmp_path: Path, offline, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("MINMO_MODELS_DIR", str(tmp_path / "models"))
    repo = hub_cache(tmp_path / "hf", qwen_files(), QWEN.revision)
    assert detect(repo) is QWEN or detect(repo).name == QWEN.name
    assert main(["models", "import", str(repo)]) == 0
    out = capsys.readouterr().out
    assert "verified against the hub cache, registered at" in out
    store = ModelStore()
    snapshot = repo / "snapshots" / QWEN.revision
    assert store.folder(QWEN) == snapshot.resolve() and store.imported(QWEN)
    assert not (tmp_path / "models" / QWEN.name).exists()  # never copied unless asked
    assert set(store.locked(QWEN)) == set(QWEN.used_files)  # held to it from now on
    assert release_status(QWEN, store) == "installed" and verify_installed(QWEN, store) == []
    assert installed_llm(store).name == QWEN.name  # the default LLM now
    # a blob changed after the import: verify names it
    blob = next((repo / "blobs").iterdir())
    blob.write_bytes(blob.read_bytes()[::-1])
    assert any("another sha256" in p for p in verify_installed(QWEN, store))


def test_a_damaged_snapshot_or_another_revision_is_refused(tmp_path: Path, offline) -> None:
    store = ModelStore(tmp_path / "models")
    files = qwen_files()
    repo = hub_cache(tmp_path / "hf", files, QWEN.revision)
    blob = repo / "blobs" / hashlib.sha256(files["vocab.json"]).hexdigest()
    blob.write_bytes(b"damaged")
    with pytest.raises(CheckpointError, match=r"vocab\.json .*checked against the hub cache"):
        import_folder(repo, store)
    other = hub_cache(tmp_path / "other", files, "f" * 40)  # not the pinned commit
    with pytest.raises(CheckpointError, match=r"the hub cannot be asked .*--trust"):
        import_folder(other, store)
    assert not store.imported(QWEN)


def test_a_release_without_a_pinned_commit_imports_from_any_snapshot_and_records_it(
    tmp_path: Path, offline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CosyVoice 3 as it was before its commit was pinned (a release published after this
    version of the app is in the same place)."""
    from dataclasses import replace

    from minmo_core.common import releases as known
    from minmo_core.common.releases import ReleaseFile
    from minmo_core.engine.stack import voice_folder

    pinned = known.COSYVOICE3
    bare = {n: ReleaseFile(None, f.used) for n, f in pinned.files.items()}
    COSYVOICE3 = replace(pinned, revision="", files=bare)
    every = {**known.all_releases(), COSYVOICE3.name: COSYVOICE3}
    monkeypatch.setattr(known, "_manifests", lambda: every)
    monkeypatch.setenv("MINMO_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.delenv("MINMO_COSYVOICE3_DIR", raising=False)
    files = {name: f"{name} of the demo".encode() * 20 for name in COSYVOICE3.used_files}
    commit = "0123456789abcdef" * 2 + "01234567"
    repo = hub_cache(tmp_path / "hf", files, commit, COSYVOICE3)
    assert detect(repo).name == COSYVOICE3.name  # cosyvoice3.yaml, speech_tokenizer_v3.onnx
    imported = import_folder(repo)
    assert imported.verified_by == "hub cache" and imported.folder == repo / "snapshots" / commit
    lock = json.loads(ModelStore().lock_path.read_text(encoding="utf-8"))[COSYVOICE3.name]
    assert lock["commit"] == commit and set(lock["files"]) == set(COSYVOICE3.used_files)
    sha = lock["files"]["flow.pt"]["sha256"]
    assert sha == hashlib.sha256(files["flow.pt"]).hexdigest()  # the blob's LFS name, checked
    assert voice_folder("cosyvoice3") == repo / "snapshots" / commit  # what the window loads
    # a snapshot whose file is not its blob's content is refused, naming the file
    other = hub_cache(tmp_path / "hf2", files, "f" * 40, COSYVOICE3)
    (other / "blobs" / sha).write_bytes(b"damaged")
    with pytest.raises(CheckpointError, match=r"flow\.pt of Fun-CosyVoice3-0\.5B-2512@ffffffff"):
        import_folder(other)
    newer = {**files, "flow.pt": b"a newer flow"}
    import_folder(hub_cache(tmp_path / "hf3", newer, "e" * 40, COSYVOICE3))  # the release moved
    lock = json.loads(ModelStore().lock_path.read_text(encoding="utf-8"))[COSYVOICE3.name]
    assert lock["commit"] == "e" * 40 and lock["files"]["flow.pt"]["size"] == len(b"a newer flow")
    copied = tmp_path / "copied"  # a plain copy is held to what the lock recorded
    (copied / "CosyVoice-BlankEN").mkdir(parents=True)
    for name, content in files.items():
        (copied / name).write_bytes(content)
    with pytest.raises(CheckpointError, match=r"flow\.pt .*checked against the lock"):
        import_folder(copied)


def test_a_copied_folder_offline_needs_trust_and_copy_puts_it_in_the_models_folder(
    tmp_path: Path, offline
) -> None:
    store = ModelStore(tmp_path / "models")
    folder = tmp_path / "copy"
    folder.mkdir()
    for name, content in qwen_files().items():
        (folder / name).write_bytes(content)
    with pytest.raises(CheckpointError, match="no published sha256 and nothing recorded"):
        import_folder(folder, store)
    done = import_folder(folder, store, copy=True, trust=True)
    assert done.verified_by == "trust" and done.folder == store.root / QWEN.name
    assert (store.root / QWEN.name / "config.json").read_bytes() == (
        folder / "config.json"
    ).read_bytes()
    assert not store.imported(QWEN) and store.folder(QWEN) == store.root / QWEN.name
    # the record now holds: a later import of different bytes is refused against the lock
    (folder / "vocab.json").write_bytes(b"other")
    with pytest.raises(CheckpointError, match=r"vocab\.json .*checked against the lock"):
        import_folder(folder, store)


def test_pinned_files_are_held_to_their_pins(tmp_path: Path) -> None:
    release = all_releases()["SenseVoiceSmall"]
    folder = tmp_path / "SenseVoiceSmall"
    folder.mkdir()
    for name in release.used_files:
        (folder / name).write_bytes(b"not the real file")
    with pytest.raises(CheckpointError, match=r"is not .* of SenseVoiceSmall.*against the pins"):
        import_folder(folder, ModelStore(tmp_path / "models"))


def test_a_folder_of_nothing_known_is_named(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="does not hold one release the app knows"):
        detect(tmp_path)
