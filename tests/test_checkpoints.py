"""Checkpoints load only tensors, match their pins, and fail with messages that name the file."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from minmo_core.common.checkpoints import load_into, load_state_dict
from minmo_core.errors import CheckpointError


def test_state_dicts_load_from_torch_and_safetensors_files(tmp_path: Path) -> None:
    state = {"a.weight": torch.randn(3, 2), "b": torch.arange(4)}
    torch.save({"state_dict": state}, tmp_path / "nested.pt")
    save_file(state, str(tmp_path / "flat.safetensors"))
    for name in ("nested.pt", "flat.safetensors"):
        loaded = load_state_dict(tmp_path / name)
        assert loaded.keys() == state.keys()
        torch.testing.assert_close(loaded["a.weight"], state["a.weight"])


def test_a_truncated_torch_checkpoint_is_named(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"w": torch.randn(256, 256)}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"model\.pt is truncated or corrupt"):
        load_state_dict(path)


def test_a_truncated_safetensors_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.randn(256, 256)}, str(path))
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"model\.safetensors is truncated or corrupt"):
        load_state_dict(path)


def test_an_empty_checkpoint_is_named(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"model\.pt is empty"):
        load_state_dict(tmp_path / "model.pt")


class Payload:
    """Stands for a malicious object: unpickling it would run code."""

    def __reduce__(self) -> tuple:
        return (print, ("this must never run",))


def test_a_pickle_with_arbitrary_objects_is_never_unpickled(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2), "evil": Payload()}, path)
    with pytest.raises(CheckpointError, match=r"holds objects other than tensors; refusing"):
        load_state_dict(path)
    assert "this must never run" not in capsys.readouterr().out


def test_a_file_of_non_tensors_is_not_a_state_dict(tmp_path: Path) -> None:
    torch.save(collections.OrderedDict(w=[1, 2, 3]), tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match=r"not a state dict of tensors"):
        load_state_dict(tmp_path / "model.pt")


def test_load_into_names_missing_unexpected_and_misshapen_keys(tmp_path: Path) -> None:
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    state = dict(module.state_dict())
    state.pop("1.bias")
    state["extra"] = torch.zeros(1)
    state["0.weight"] = torch.zeros(5, 4)
    with pytest.raises(CheckpointError) as err:
        load_into(module, state, tmp_path / "m.pt")
    message = str(err.value)
    assert "1 missing (e.g. 1.bias)" in message
    assert "1 unexpected (e.g. extra)" in message
    assert "0.weight: (5, 4) in the file, (3, 4) expected" in message


def test_a_pickled_checkpoint_is_converted_once_and_read_as_safetensors_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from minmo_core.common import checkpoints

    monkeypatch.setenv("MINMO_CACHE_DIR", str(tmp_path / "cache"))
    shared = torch.randn(4, 3)
    state = {"a.weight": shared, "tied.weight": shared, "b": torch.arange(5)}
    path = tmp_path / "model.pt"
    torch.save(state, path)
    first = checkpoints.load_state_dict(path)
    (converted,) = checkpoints.safetensors_cache_dir().glob("*.safetensors")
    assert converted.stem == checkpoints_sha(path)
    calls = []
    original = checkpoints._torch_load
    monkeypatch.setattr(checkpoints, "_torch_load", lambda p: calls.append(p))
    again = checkpoints.load_state_dict(path)
    assert calls == []  # nothing unpickled the second time
    assert again.keys() == first.keys()
    assert all(torch.equal(again[k], state[k]) for k in state)
    # a damaged conversion is dropped and rebuilt from the original
    monkeypatch.setattr(checkpoints, "_torch_load", original)
    converted.write_bytes(b"garbage")
    assert torch.equal(checkpoints.load_state_dict(path)["b"], state["b"])
    assert checkpoints.load_safetensors(str(converted))["b"].tolist() == [0, 1, 2, 3, 4]
    # another file (a changed checkpoint) never reads the old conversion
    torch.save({"b": torch.zeros(2)}, path)
    assert checkpoints.load_state_dict(path)["b"].tolist() == [0.0, 0.0]
    assert len(list(checkpoints.safetensors_cache_dir().glob("*.safetensors"))) == 2


def test_the_safetensors_cache_can_be_turned_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from minmo_core.common import checkpoints

    monkeypatch.setenv("MINMO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(checkpoints.CACHE_ENV, "0")
    torch.save({"w": torch.ones(2)}, tmp_path / "m.pt")
    checkpoints.load_state_dict(tmp_path / "m.pt")
    assert not (tmp_path / "cache").exists()


def checkpoints_sha(path: Path) -> str:
    from minmo_core.common.releases import sha256_of

    return sha256_of(path)
