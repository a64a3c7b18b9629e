"""The voice library: cloned voices saved as folders in the data folder, listed without torch,
renamed (inside the profile too) and deleted; damaged folders are skipped and named, a crash
while saving leaves no half voice; the studio checks, clones and saves a clip."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors import safe_open

from minmo_core.common.audio import read_audio, resample
from minmo_core.errors import AudioError, ConfigError
from minmo_core.voice.library import (
    INFO,
    PROFILE,
    PROFILES,
    REFERENCE,
    NotClonedYet,
    VoiceLibrary,
    VoiceStudio,
    slugify,
    voices_dir,
)
from minmo_core.voice.voice_clone import VoiceCloner
from minmo_core.voice.voice_prompt import VoiceProfile
from tests.conftest import REPO


@pytest.fixture(scope="module")
def cloner(tiny_release_dir: Path) -> VoiceCloner:
    return VoiceCloner.from_folder(tiny_release_dir, allow_unpinned=True)


@pytest.fixture(scope="module")
def prompt24k(fixtures_dir: Path) -> np.ndarray:
    return read_audio(fixtures_dir / "audio" / "cosyvoice_zero_shot_prompt.wav", 24000)  # 3.48 s


@pytest.fixture(scope="module")
def profile(cloner: VoiceCloner, prompt24k: np.ndarray):
    def make(name: str, transcript: str = "希望你以后能够做的比我还好呦。") -> VoiceProfile:
        return cloner.clone(prompt24k, transcript, name, sample_rate=24000)

    return make


@pytest.fixture
def library(tmp_path: Path) -> VoiceLibrary:
    return VoiceLibrary(tmp_path / "voices")


def profile_name_on_disk(folder: Path) -> str:
    with safe_open(str(folder / PROFILE), framework="pt") as f:
        return f.metadata()["name"]


def test_voices_live_in_the_data_folder(monkeypatch, tmp_path: Path) -> None:
    from platformdirs import user_data_dir

    monkeypatch.setenv("MINMO_DATA_DIR", str(tmp_path))
    assert voices_dir() == tmp_path / "voices"
    assert VoiceLibrary().root == tmp_path / "voices"
    monkeypatch.delenv("MINMO_DATA_DIR")
    assert voices_dir() == Path(user_data_dir("minmo-assistant")) / "voices"


def test_add_list_load_rename_and_delete_round_trip(
    library: VoiceLibrary, profile, prompt24k: np.ndarray
) -> None:
    grandma = profile("grandma")
    library.add(grandma, prompt24k, "recorded")
    alice = library.add(profile("Alice", "hello there"), prompt24k, "imported")
    assert library.names() == ["Alice", "grandma"]  # by name, case-insensitive
    assert sorted(p.name for p in alice.folder.iterdir()) == sorted([PROFILE, REFERENCE, INFO])
    assert (alice.transcript, alice.source) == ("hello there", "imported")
    assert alice.seconds == pytest.approx(3.48, abs=0.01)
    assert dt.datetime.fromisoformat(alice.created).tzinfo is not None
    assert library.exists("GRANDMA") and not library.exists("grandpa")
    loaded = library.load("grandma")
    assert (loaded.name, loaded.transcript) == ("grandma", grandma.transcript)
    for field in ("speech_tokens", "prompt_mel", "speaker_embedding"):
        assert torch.equal(getattr(loaded, field), getattr(grandma, field))
    reference = library.reference("grandma")
    assert reference.dtype == np.float32 and reference.size == prompt24k.size
    np.testing.assert_allclose(reference, prompt24k, atol=1e-5)  # 24-bit FLAC

    renamed = library.rename("grandma", "Granny Smith")
    assert library.names() == ["Alice", "Granny Smith"] and not library.exists("grandma")
    assert renamed.folder.name == "granny-smith"
    assert profile_name_on_disk(renamed.folder) == "Granny Smith"  # inside the safetensors
    assert library.load("granny smith").name == "Granny Smith"
    assert torch.equal(library.load("Granny Smith").speech_tokens, grandma.speech_tokens)

    library.delete("Granny Smith")
    assert library.names() == ["Alice"] and not renamed.folder.exists()
    assert [p.name for p in library.root.iterdir()] == [alice.folder.name]


def test_duplicate_blank_and_long_names_are_refused(
    library: VoiceLibrary, profile, prompt24k: np.ndarray
) -> None:
    library.add(profile("Grandma"), prompt24k, "recorded")
    bob = library.add(profile("Bob"), prompt24k, "recorded")
    with pytest.raises(ConfigError, match="a voice named 'Grandma' already exists"):
        library.add(profile("GRANDMA"), prompt24k, "recorded")
    with pytest.raises(ConfigError, match="a voice named 'Grandma' already exists"):
        library.rename("Bob", "grandma ")
    with pytest.raises(ConfigError, match="a voice needs a name"):
        library.rename("Bob", "   ")
    with pytest.raises(ConfigError, match="at most 60 characters"):
        library.rename("Bob", "x" * 61)
    with pytest.raises(ConfigError, match="reserved for the app's menus"):
        library.rename("Bob", "__clone__")  # the picker's "Clone a voice…" entry
    with pytest.raises(ConfigError, match="no saved voice named 'Carol'"):
        library.rename("Carol", "Dave")
    assert library.names() == ["Bob", "Grandma"]
    assert profile_name_on_disk(bob.folder) == "Bob"
    library.rename("Bob", "BOB")  # its own name in other letters is fine
    assert library.names() == ["BOB", "Grandma"]
    library.add(profile("Grandma!"), prompt24k, "imported")  # same folder name: a new slug
    assert sorted(p.name for p in library.root.iterdir()) == ["bob", "grandma", "grandma-2"]


def test_folder_names_come_from_voice_names_in_any_script() -> None:
    names = ["Granny Smith!", "奶奶", "Élodie", "CON", "a/b\\c..", "..."]
    assert [slugify(n) for n in names] == [
        "granny-smith", "奶奶", "élodie", "con-voice", "a-b-c", "voice"
    ]  # fmt: skip


def test_a_damaged_voice_folder_is_skipped_and_reported(
    library: VoiceLibrary, profile, prompt24k: np.ndarray
) -> None:
    import shutil

    good = library.add(profile("Good"), prompt24k, "recorded")
    junk = library.root / "junk"
    junk.mkdir()
    (junk / INFO).write_text("{not json")
    truncated = library.root / "truncated"
    shutil.copytree(good.folder, truncated)
    info = json.loads((truncated / INFO).read_text())
    (truncated / INFO).write_text(json.dumps({**info, "name": "Truncated"}))
    data = (truncated / PROFILE).read_bytes()
    (truncated / PROFILE).write_bytes(data[: len(data) // 2])
    bare = library.root / "bare"
    shutil.copytree(good.folder, bare)
    (bare / INFO).write_text(json.dumps({**info, "name": "Bare"}))
    (bare / REFERENCE).unlink()
    (library.root / "notes.txt").write_text("not a voice folder")

    assert library.names() == ["Good"]
    problems = "\n".join(library.problems)
    assert len(library.problems) == 3
    assert f"{junk / INFO} is unreadable" in problems
    assert f"{truncated / PROFILE} is damaged" in problems
    assert f"voice 'Bare' in {bare} has no {REFERENCE}" in problems
    assert library.load("Good").name == "Good"  # the others still work


def test_a_failure_while_writing_leaves_no_voice(
    library: VoiceLibrary, profile, prompt24k: np.ndarray, monkeypatch
) -> None:
    def save_half_then_fail(self, path) -> None:
        Path(path).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(VoiceProfile, "save", save_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        library.add(profile("Grandma"), prompt24k, "recorded")
    assert library.list() == [] and library.problems == []
    assert list(library.root.iterdir()) == []
    monkeypatch.undo()
    library.add(profile("Grandma"), prompt24k, "recorded")
    assert library.names() == ["Grandma"]


def test_a_process_killed_while_adding_leaves_no_voice(
    library: VoiceLibrary, profile, prompt24k: np.ndarray, tmp_path: Path
) -> None:
    saved = tmp_path / "grandma.safetensors"
    profile("Grandma").save(saved)
    np.save(tmp_path / "reference.npy", prompt24k)
    child = """
import os, signal, sys
from pathlib import Path
import numpy as np
from minmo_core.voice.library import VoiceLibrary
from minmo_core.voice.voice_prompt import VoiceProfile

def dying(self, path):
    Path(path).write_bytes(Path(sys.argv[1]).read_bytes()[:500])
    os.kill(os.getpid(), signal.SIGKILL)

profile = VoiceProfile.load(sys.argv[1])
VoiceProfile.save = dying
VoiceLibrary(sys.argv[2]).add(profile, np.load(sys.argv[3]), "recorded")
"""
    args = [saved, library.root, tmp_path / "reference.npy"]
    done = subprocess.run([sys.executable, "-c", child, *map(str, args)], cwd=REPO, timeout=120)
    assert done.returncode == -9  # killed in the middle of writing the profile
    assert [p.name.endswith(".adding") for p in library.root.iterdir()] == [True]
    assert library.list() == [] and library.problems == []  # the half voice is invisible
    library.add(profile("Grandma"), prompt24k, "recorded")
    assert library.names() == ["Grandma"]


def test_the_studio_checks_clones_and_saves_a_clip(
    library: VoiceLibrary, cloner: VoiceCloner, prompt24k: np.ndarray, fixtures_dir: Path
) -> None:
    built = []
    studio = VoiceStudio(lambda: built.append(1) or cloner, None, library)
    speech, rate = studio.load_file(fixtures_dir / "audio" / "sensevoice_sample.wav")
    assert rate == 24000 and speech.size == 6 * 24000
    entry = studio.clone(speech, rate, " hello world ", "Demo", "imported")
    assert (entry.name, entry.transcript, entry.source) == ("Demo", "hello world", "imported")
    assert entry.seconds == pytest.approx(6.0)
    direct = cloner.clone(speech, "hello world", "Demo", sample_rate=rate)
    assert torch.equal(library.load("Demo").speech_tokens, direct.speech_tokens)
    studio.clone(prompt24k, 24000, "hi", "Other", "recorded")
    assert library.names() == ["Demo", "Other"] and built == [1]  # the cloner is built once
    with pytest.raises(ConfigError, match="a voice named 'Demo' already exists"):
        studio.clone(speech, rate, "hello", "demo", "imported")
    with pytest.raises(ConfigError, match="type the words spoken in the clip"):
        studio.clone(speech, rate, "  ", "Third", "imported")


def test_a_voice_is_cloned_again_from_its_recording_for_the_other_release(
    library: VoiceLibrary, cloner: VoiceCloner, prompt24k: np.ndarray, tiny_release_v3_dir: Path
) -> None:
    from minmo_core.voice.mel import prompt_mel

    VoiceStudio(lambda: cloner, None, library).clone(
        prompt24k, 24000, "hi there", "Gran", "recorded"
    )
    entry = library.entry("Gran")
    assert entry.releases == (2,) and not (entry.folder / PROFILES[3]).exists()
    with pytest.raises(NotClonedYet, match="'Gran' has not been cloned for CosyVoice 3"):
        library.load("Gran", 3)
    built = []
    v3 = VoiceCloner.from_folder(tiny_release_v3_dir, allow_unpinned=True)
    studio = VoiceStudio(lambda: built.append(1) or v3, None, library, cosyvoice=3)
    profile = studio.profile("gran")  # any case, as the picker may hold it
    assert (profile.name, profile.transcript, profile.cosyvoice) == ("Gran", "hi there", 3)
    assert library.entry("Gran").releases == (2, 3) and built == [1]
    reference = library.reference("Gran")  # what the voice keeps: its 24 kHz recording
    mel = prompt_mel(torch.from_numpy(reference), fmax=None)
    assert torch.equal(profile.prompt_mel, mel[: profile.prompt_mel.shape[0]])
    assert studio.profile("Gran").cosyvoice == 3 and built == [1]  # kept: not cloned again
    assert VoiceStudio(lambda: cloner, None, library).profile("Gran").cosyvoice == 2
    # the two profiles travel together through a rename; a damaged one is named
    library.rename("Gran", "Granny")
    entry = library.entry("Granny")
    assert {library.load("Granny", g).name for g in (2, 3)} == {"Granny"}
    (entry.folder / PROFILES[3]).write_bytes(b"junk")
    assert library.names() == [] and "damaged" in library.problems[0]
    # a studio whose cloner is another release's is refused rather than mixing them
    (entry.folder / PROFILES[3]).unlink()
    wrong = VoiceStudio(lambda: cloner, None, library, cosyvoice=3)
    with pytest.raises(ConfigError, match="cloner is CosyVoice 2's, not 3's"):
        wrong.profile("Granny")


def test_the_studio_refuses_a_silent_and_a_short_clip_with_the_check_messages(
    library: VoiceLibrary, cloner: VoiceCloner, prompt24k: np.ndarray
) -> None:
    studio = VoiceStudio(lambda: cloner, None, library)
    silent = 1e-4 * np.random.default_rng(0).standard_normal(24000 * 6).astype(np.float32)
    with pytest.raises(AudioError, match=r"reference clip is silent \(loudest -\d+ dBFS\)"):
        studio.clone(silent, 24000, "words", "Quiet", "recorded")
    with pytest.raises(AudioError, match=r"reference clip is 1\.0 s; at least 3 s of speech"):
        studio.clone(prompt24k[:24000], 24000, "words", "Short", "recorded")
    with pytest.raises(AudioError, match="reference clip is silent"):
        studio.check(silent, 24000)
    studio.check(prompt24k, 24000)  # real speech passes
    assert library.names() == [] and list(library.root.glob("*")) == []


def test_the_studio_transcribes_at_16_khz(library: VoiceLibrary, sensevoice, prompt24k) -> None:
    heard: list[np.ndarray] = []

    def transcriber(audio16k: np.ndarray) -> str:
        heard.append(audio16k)
        return sensevoice.transcribe(audio16k).text

    studio = VoiceStudio(lambda: None, transcriber, library)
    text = studio.transcribe(prompt24k, 24000)
    audio16k = resample(prompt24k, 24000, 16000)
    np.testing.assert_array_equal(heard[0], audio16k)
    assert text and text == sensevoice.transcribe(audio16k).text.strip()
    with pytest.raises(ConfigError, match="no speech-understanding model"):
        VoiceStudio(lambda: None, None, library).transcribe(prompt24k, 24000)


def test_files_of_any_format_load_and_broken_or_long_ones_are_named(
    library: VoiceLibrary, tmp_path: Path, prompt24k: np.ndarray
) -> None:
    studio = VoiceStudio(lambda: None, None, library)
    stereo = tmp_path / "stereo.flac"
    sf.write(stereo, np.stack([prompt24k, prompt24k], 1), 24000, subtype="PCM_16")
    audio, rate = studio.load_file(stereo)
    assert rate == 24000 and audio.shape == prompt24k.shape
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....not really audio")
    with pytest.raises(AudioError, match=r"broken\.wav is not a readable audio file"):
        studio.load_file(broken)
    long = tmp_path / "long.wav"
    sf.write(long, np.zeros(1000 * 660, np.int16), 1000)  # 11 minutes
    with pytest.raises(AudioError, match=r"long\.wav is 660 s long; at most 600 s"):
        studio.load_file(long)


def test_the_library_imports_and_lists_without_torch(
    library: VoiceLibrary, profile, prompt24k: np.ndarray
) -> None:
    code = "import minmo_core.voice.library, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)
    library.add(profile("Grandma"), prompt24k, "recorded")
    code = (
        "import sys; from minmo_core.voice.library import VoiceLibrary; "
        "print(VoiceLibrary(sys.argv[1]).names(), 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(library.root)], cwd=REPO,
                          capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    assert done.stdout.strip() == "['Grandma'] False"
