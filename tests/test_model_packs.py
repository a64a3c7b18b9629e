"""Packs and releases as data, the memory planner, and `minmo models list | plan | verify |
remove` on a models folder made here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.cli import main
from minmo_core.common.releases import all_releases
from minmo_core.manager.packs import all_packs, pack_releases, pack_voice, voice_release_of
from minmo_core.manager.planner import GiB, pack_memory_gb, plan, plan_table
from minmo_core.manager.store import ModelStore, release_status

README = Path(__file__).resolve().parents[1] / "README.md"
COMMIT = re.compile(r"^[0-9a-f]{40}$")


def test_every_pack_is_ears_an_llm_and_a_voice_at_pinned_commits() -> None:
    packs = all_packs()
    sizes = ["7b", "3b", "1.5b", "0.5b"]  # largest LLM first; for one LLM, CosyVoice 2 first
    names = [f"minmo-{s}{v}" for s in sizes for v in ("", "-cv3")]
    assert list(packs) == [*names, "minmo-adapters"]
    for p in packs.values():
        if p.optional:
            assert p.source == "training" and not p.releases and pack_voice(p) is None
            continue
        kinds = [r.kind for r in pack_releases(p)]
        voice = "cosyvoice3" if p.name.endswith("-cv3") else "cosyvoice2"
        assert kinds == ["sensevoice", "llm", voice] and voice_release_of(p) == voice
        twin = packs[p.name.removesuffix("-cv3")]  # the same ears and LLM
        assert twin.releases[:2] == p.releases[:2] and twin.llm == p.llm
        for release in pack_releases(p):
            assert COMMIT.match(release.revision) and release.licence and release.parameters
            assert release.used_files
    releases = all_releases()
    for name in ("SenseVoiceSmall", "CosyVoice2-0.5B", "Fun-CosyVoice3-0.5B-2512"):
        assert releases[name].fully_pinned, name
    assert releases["Fun-CosyVoice3-0.5B-2512"].revision.startswith("29e01c4e")
    assert "non-commercial" in releases["Qwen2.5-3B-Instruct"].licence
    assert releases["Qwen2.5-7B-Instruct"].revision.startswith("a09a3545")


def test_the_memory_in_each_pack_manifest_is_the_planners() -> None:
    for p in all_packs().values():
        if not p.optional:
            assert p.memory_gb == pack_memory_gb(p), p.name


@pytest.mark.parametrize("gib", [4, 8, 12, 16, 24, 48, 80])
def test_the_plan_is_the_largest_llm_that_fits_at_the_standard_precision(gib: int) -> None:
    result = plan(gib * GiB, "cuda")
    standard = [e for e in result.candidates if not e.experimental]
    fitting = [e for e in standard if e.total <= result.usable]
    params = {r.name: r.parameters for r in all_releases().values()}
    if result.choice is None:
        assert not fitting and "nothing fits" in result.reason()
        return
    assert result.choice.total <= result.usable and result.choice.precision == "bfloat16"
    assert params[result.choice.llm] == max(params[e.llm] for e in fitting)
    # the estimate is the sum of its parts, each named in the reason
    c = result.choice
    assert c.total == c.llm_weights + c.kv_cache + c.activations + c.speech + c.overhead
    assert "KV cache" in result.reason() and c.pack in result.reason()
    if result.experimental is not None:
        assert result.experimental.experimental
        assert params[result.experimental.llm] > params[c.llm]


def test_more_memory_never_means_a_smaller_llm() -> None:
    params = {r.name: r.parameters for r in all_releases().values()}
    sizes = []
    for gib in range(2, 90, 2):
        choice = plan(gib * GiB, "cuda").choice
        sizes.append(params[choice.llm] if choice else 0)
    assert sizes == sorted(sizes) and sizes[-1] == params["Qwen2.5-7B-Instruct"]
    cpu = plan(24 * GiB, "cpu")
    assert cpu.choice.precision == "float32" and all(
        e.precision == "float32" for e in cpu.candidates
    )


def test_the_readme_quotes_the_planners_table() -> None:
    assert plan_table() in README.read_text(encoding="utf-8")


def sparse(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)  # the right size, no disk used


def install_sizes_only(store: ModelStore, name: str) -> None:
    """A release's files at their pinned (or locked) sizes: installed, as far as a listing
    can tell without hashing."""
    release = all_releases()[name]
    folder = store.folder(release)
    lock = {}
    for file in release.used_files:
        pin = release.pin(file)
        size = pin.size if pin else 1000
        sparse(folder / file, size)
        if pin is None:
            lock[file] = type("E", (), {"size": size, "sha256": "0" * 64, "git_sha1": None})()
    store.record(release, folder, lock)


def test_list_verify_and_remove_keep_what_another_pack_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("MINMO_MODELS_DIR", str(tmp_path))
    store = ModelStore(tmp_path)
    for name in ("SenseVoiceSmall", "CosyVoice2-0.5B", "Qwen2.5-0.5B-Instruct",
                 "Qwen2.5-1.5B-Instruct"):  # fmt: skip
        install_sizes_only(store, name)
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"Qwen2\.5-0\.5B-Instruct\s+installed", out)
    assert re.search(r"Qwen2\.5-7B-Instruct\s+missing", out)
    # the sizes are right but the bytes are not: verify hashes and says so
    assert main(["models", "verify", "minmo-0.5b"]) == 2
    assert "has another sha256" in capsys.readouterr().err
    assert main(["models", "remove", "minmo-0.5b"]) == 0
    err = capsys.readouterr().err
    assert "kept SenseVoiceSmall: another installed pack uses it" in err
    assert not (tmp_path / "Qwen2.5-0.5B-Instruct").exists()
    assert (tmp_path / "SenseVoiceSmall").is_dir()
    # a conversion of a removed checkpoint goes with it
    from minmo_core.common.checkpoints import safetensors_cache_dir
    from minmo_core.common.releases import cached_sha256

    llm_pt = tmp_path / "CosyVoice2-0.5B" / "llm.pt"
    converted = safetensors_cache_dir() / f"{cached_sha256(llm_pt)}.safetensors"
    converted.parent.mkdir(parents=True, exist_ok=True)
    converted.write_bytes(b"x" * 10)
    assert main(["models", "remove", "minmo-1.5b"]) == 0  # the last pack: everything goes
    assert not converted.exists()
    capsys.readouterr()
    for name in ("SenseVoiceSmall", "CosyVoice2-0.5B", "Qwen2.5-1.5B-Instruct"):
        assert not (tmp_path / name).exists()
        assert release_status(all_releases()[name], store) == "missing"


def test_the_plan_counts_cosyvoice_3s_larger_flow_when_it_is_the_voice(capsys) -> None:
    from minmo_core.common.releases import COSYVOICE2, COSYVOICE3
    from minmo_core.errors import ConfigError
    from minmo_core.manager.planner import DTYPE_BYTES, estimate

    def flow(release):
        return next(part for part in release.parts if part.name == "flow decoder")

    assert flow(COSYVOICE3).parameters == 332_257_120 and flow(COSYVOICE2).parameters < 1.2e8

    def weights(release, device: str) -> int:
        return sum(
            part.parameters * (4 if device == "cpu" else DTYPE_BYTES[part.gpu_dtype])
            for part in release.parts
        )

    p = all_packs()["minmo-7b"]
    for device, precision in (("cuda", "bfloat16"), ("cpu", "float32")):
        two = estimate(p, precision, device)
        three = estimate(p, precision, device, COSYVOICE3.name)
        growth = weights(COSYVOICE3, device) - weights(COSYVOICE2, device)
        assert three.speech - two.speech == growth
        assert three.speech > two.speech and three.llm_weights == two.llm_weights
    with pytest.raises(ConfigError, match="not a voice release"):
        estimate(p, "bfloat16", "cuda", "Qwen2.5-7B-Instruct")
    assert main(["models", "plan", "--memory", "24", "--voice", "cosyvoice3"]) == 0
    out = capsys.readouterr().out
    assert "with Fun-CosyVoice3-0.5B-2512 as the voice" in out
    assert "minmo-7b-cv3" in out and "minmo-7b " not in out  # only the packs that speak so
    three = plan(24 * GiB, "cuda", COSYVOICE3.name).choice
    assert three.pack == "minmo-7b-cv3" and three.speech == three_speech_7b()
    # by default every pack is a candidate, and CosyVoice 2's (MinMo's voice) is recommended
    for gib in (8, 12, 24):
        both = plan(gib * GiB, "cuda")
        assert {e.pack for e in both.candidates} >= {"minmo-7b", "minmo-7b-cv3"}
        assert not both.choice.pack.endswith("-cv3")
        cv3 = plan(gib * GiB, "cuda", COSYVOICE3.name).choice
        assert cv3.pack == both.choice.pack + "-cv3" and cv3.speech > both.choice.speech


def three_speech_7b() -> int:
    from minmo_core.common.releases import COSYVOICE3
    from minmo_core.manager.planner import estimate

    return estimate(all_packs()["minmo-7b"], "bfloat16", "cuda", COSYVOICE3.name).speech


def test_plan_and_download_errors_on_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("MINMO_MODELS_DIR", str(tmp_path))
    assert main(["models", "plan", "--memory", "12"]) == 0
    out = capsys.readouterr().out
    assert "recommended: minmo-3b at bfloat16" in out and "Qwen Research License" in out
    assert "also possible: minmo-7b with int4 weights" in out
    assert main(["models", "plan", "--memory", "0", "--ram", "16"]) == 0
    assert "recommended: minmo-1.5b at float32" in capsys.readouterr().out
    assert main(["models", "download", "minmo-adapters"]) == 2
    assert "not on the hub" in capsys.readouterr().err
    assert main(["models", "download", "minmo-9b"]) == 2
    assert "no pack named 'minmo-9b'" in capsys.readouterr().err
