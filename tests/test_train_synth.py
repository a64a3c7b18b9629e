"""Synthetic training data: voices, items, valid manifests and sample-exact turn labels."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from minmo_core.common.audio import frame_levels_dbfs
from minmo_core.errors import MissingDependencyError
from minmo_core.train.manifest import validate_manifest
from minmo_core.train.synth import (
    SAMPLE_RATE,
    Voice,
    command_items,
    render,
    voice_pool,
    write_dialogues,
    write_utterances,
)

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not installed (sudo apt-get install espeak-ng)",
)
WORDS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty",
)  # fmt: skip
SILENT_DB = 60.0  # a frame this far below the clip's loudest is silence
SPEECH_DB = 50.0  # a frame within this of the clip's loudest is speech (the trim's rule)
SEED = 5


@pytest.fixture(scope="module", autouse=True)
def _synth_cache(tmp_path_factory: pytest.TempPathFactory):
    """espeak renders go to a cache of this module's own, not the user's temp folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINMO_SYNTH_CACHE", str(tmp_path_factory.mktemp("synth-cache")))
        yield


@pytest.fixture(scope="module")
def voices() -> tuple[Voice, ...]:
    return voice_pool(0)[0]


@pytest.fixture(scope="module")
def episodes(tmp_path_factory: pytest.TempPathFactory, voices: tuple[Voice, ...]) -> dict:
    """The same eight episodes dry, in a room, and in a room with noise: {kind: manifest}."""
    folder = tmp_path_factory.mktemp("dialogues")
    return {
        "dry": write_dialogues(folder, "dry", 8, voices, SEED),
        "room": write_dialogues(folder, "room", 8, voices, SEED, room=True),
        "noisy": write_dialogues(folder, "noisy", 8, voices, SEED, room=True, snr_db=(20, 30)),
    }


def rows(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]


def audio(manifest: Path, row: dict) -> np.ndarray:
    x, rate = sf.read(manifest.parent / row["audio"], dtype="float32")
    assert rate == SAMPLE_RATE and x.ndim == 1
    return x


def loudest(x: np.ndarray, start: int = 0, end: int | None = None) -> float:
    """The level of the loudest 10 ms frame of x[start:end] in dBFS (-200 when all zero)."""
    part = x[start:end]
    return float(frame_levels_dbfs(part, SAMPLE_RATE).max()) if part.size else -200.0


def active_db(x: np.ndarray) -> float:
    """RMS level over the 10 ms frames within 40 dB of the loudest, in dBFS."""
    levels = frame_levels_dbfs(x, SAMPLE_RATE)
    active = levels[levels > levels.max() - 40]
    return float(10 * np.log10(np.mean(10 ** (active / 10))))


def onset_ms(x: np.ndarray) -> int:
    """The first 1 ms frame within SPEECH_DB of the loudest 1 ms frame."""
    levels = frame_levels_dbfs(x, 1000)  # 16-sample frames at 16 kHz
    return int(np.flatnonzero(levels > levels.max() - SPEECH_DB)[0])


def kind(row: dict) -> str:
    labels = [turn["label"] for turn in row["turns"]]
    if labels == ["speak"]:
        return "finished"
    if labels == ["listen"]:
        return "back-channel"
    if labels == ["stop"]:
        return "interruption"
    assert labels[-1] == "speak" and set(labels[:-1]) == {"listen"}, labels
    return "hesitation"


def sample(t: float) -> int:
    return round(t * SAMPLE_RATE)


def test_voice_pool_holds_out_accent_variant_pairs_that_training_never_uses() -> None:
    train, held = voice_pool(0)
    assert len(train) >= 24 and len(held) >= 8

    def pairs(voices: tuple[Voice, ...]) -> set[tuple[str, str]]:
        return {tuple(v.name.split("+")) for v in voices}

    assert not pairs(train) & pairs(held)
    assert {a for a, _ in pairs(held)} <= {a for a, _ in pairs(train)}  # unseen pairs only
    assert {v for _, v in pairs(held)} <= {v for _, v in pairs(train)}
    everyone = train + held
    assert len({v.key for v in everyone}) == len(everyone)
    assert all(v.key == f"{v.name}/s{v.speed}/p{v.pitch}" for v in everyone)
    assert all(130 <= v.speed <= 190 and 30 <= v.pitch <= 70 for v in everyone)
    assert not any("whisper" in v.name for v in everyone)
    assert voice_pool(0) == (train, held) and voice_pool(1) != (train, held)


def test_command_items_answer_sums_correctly_and_mix_asr_with_qa() -> None:
    items = command_items(np.random.default_rng(0), 600)
    assert items == command_items(np.random.default_rng(0), 600)
    sums = digits = 0
    for item in items:
        assert re.fullmatch(r"[a-z]+( [a-z]+)*", item.transcript), item
        if item.task == "asr":
            assert item.instruction == "Repeat exactly what was said."
            assert item.response == item.transcript
            words = item.transcript.split()
            if all(w in WORDS[:10] for w in words):
                digits += 1
                assert 2 <= len(words) <= 4
            continue
        assert item.task == "qa" and item.instruction is None
        assert re.fullmatch(r"[a-z]+", item.response), item
        sum_question = re.fullmatch(r"(what|how much) is (\w+) (plus|minus) (\w+)", item.transcript)
        if sum_question:
            sums += 1
            a, b = WORDS.index(sum_question[2]), WORDS.index(sum_question[4])
            result = a + b if sum_question[3] == "plus" else a - b
            assert 0 <= result <= 20 and WORDS.index(item.response) == result, item
    asr = sum(item.task == "asr" for item in items) / len(items)
    assert 0.4 < asr < 0.6 and sums > 100 and digits > 100
    transcripts = {item.transcript for item in items}
    assert "what color is the sky" in transcripts and any("alarm" in t for t in transcripts)


@needs_espeak
def test_render_trims_silence_sets_the_active_level_and_caches_per_voice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("MINMO_SYNTH_CACHE", str(cache))
    voice = Voice("en-gb+f2", 150, 40)
    x = render("the cache keeps this sentence", voice)
    assert x.dtype == np.float32 and x.ndim == 1 and 1.0 < x.size / SAMPLE_RATE < 4.0
    levels = frame_levels_dbfs(x, SAMPLE_RATE)
    assert levels[0] > levels.max() - SPEECH_DB and levels[-1] > levels.max() - SPEECH_DB
    assert active_db(x) == pytest.approx(-26.0, abs=0.1)
    (raw,) = cache.iterdir()  # espeak's own file, with its silences
    assert sf.info(raw).duration > x.size / SAMPLE_RATE + 0.05
    assert np.array_equal(render("the cache keeps this sentence", voice), x)
    higher = render("the cache keeps this sentence", Voice("en-gb+f2", 150, 60))
    assert len(list(cache.iterdir())) == 2 and not np.array_equal(higher[: x.size], x)


@needs_espeak
def test_utterance_manifest_is_valid_and_its_durations_are_the_files(
    tmp_path: Path, voices: tuple[Voice, ...]
) -> None:
    items = command_items(np.random.default_rng(1), 8)
    manifest = write_utterances(tmp_path, "utt", items, voices, seed=3)
    assert manifest == tmp_path / "utt.jsonl" and validate_manifest(manifest) == 8
    for i, (row, item) in enumerate(zip(rows(manifest), items, strict=True)):
        assert row["audio"] == f"utt/{i:05d}.wav" and row["language"] == "en"
        assert (row["task"], row["transcript"], row["response"]) == (
            item.task, item.transcript, item.response,
        )  # fmt: skip
        assert row.get("instruction") == item.instruction
        info = sf.info(tmp_path / row["audio"])
        assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
        assert info.frames / SAMPLE_RATE == row["duration"]
        x = audio(manifest, row)
        top = loudest(x)
        assert loudest(x, 0, sample(0.1)) < top - SILENT_DB  # 0.1-0.3 s of silence each side
        assert loudest(x, x.size - sample(0.1)) < top - SILENT_DB


@needs_espeak
def test_same_seed_writes_identical_bytes_and_another_seed_does_not(
    tmp_path: Path, voices: tuple[Voice, ...]
) -> None:
    items = command_items(np.random.default_rng(2), 4)

    def write(folder: str, seed: int) -> list[bytes]:
        root = tmp_path / folder
        files = [
            write_utterances(root, "utt", items, voices, seed),
            write_dialogues(root, "dlg", 4, voices, seed, room=True, snr_db=(10, 20)),
        ]
        wavs = sorted(root.rglob("*.wav"))
        assert len(wavs) == 8
        return [f.read_bytes() for f in files + wavs]

    first = write("a", 7)
    assert write("b", 7) == first
    other = write("c", 8)
    assert other[0] != first[0] and other[1] != first[1]


@needs_espeak
def test_dialogue_manifest_is_valid_with_every_kind_starting_after_a_short_silence(
    episodes: dict,
) -> None:
    manifest = episodes["dry"]
    assert validate_manifest(manifest) == 8
    found = [kind(row) for row in rows(manifest)]
    assert sorted(found) == sorted(["finished", "hesitation", "back-channel", "interruption"] * 2)
    for row in rows(manifest):
        assert row["task"] == "duplex" and "response" not in row and row["transcript"]
        x = audio(manifest, row)
        assert x.size / SAMPLE_RATE == row["duration"]
        levels = frame_levels_dbfs(x, SAMPLE_RATE)
        onset = int(np.flatnonzero(levels > levels.max() - SPEECH_DB)[0])  # first speech frame
        assert 0.1 <= onset / 100 <= 0.3 and not x[: sample(0.1)].any()


@needs_espeak
def test_turns_end_where_speech_ends_and_silence_follows(episodes: dict) -> None:
    manifest = episodes["dry"]
    ends = [row for row in rows(manifest) if kind(row) in ("finished", "hesitation")]
    assert len(ends) == 4
    for row in ends:
        x, speak = audio(manifest, row), row["turns"][-1]
        top, at = loudest(x), sample(speak["t"])
        assert not x[at:].any() and loudest(x, at) < top - SILENT_DB
        assert loudest(x, at - sample(0.1), at) > top - SPEECH_DB
        assert loudest(x, at - sample(0.01), at) > top - SILENT_DB  # speaking to the end
        assert 1.5 <= row["duration"] - speak["t"] <= 2.5 + 1 / SAMPLE_RATE
        for listen in row["turns"][:-1]:  # a hesitation's pauses: silent, then speech again
            at = sample(listen["t"])
            assert loudest(x, at - sample(0.1), at) > top - SPEECH_DB
            assert loudest(x, at - sample(0.01), at) > top - SILENT_DB
            assert loudest(x, at, at + sample(0.2)) < top - SILENT_DB
            assert loudest(x, at, at + sample(1.6)) > top - SPEECH_DB
        if kind(row) == "hesitation":
            first_pause = sample(row["turns"][0]["t"])
            resumes = first_pause + int(np.flatnonzero(x[first_pause:])[0])
            assert 0.5 <= (resumes - first_pause) / SAMPLE_RATE <= 1.5 + 0.01


@needs_espeak
def test_back_channels_and_interruptions_start_speaking_at_their_label(episodes: dict) -> None:
    manifest = episodes["dry"]
    onsets = [row for row in rows(manifest) if kind(row) in ("back-channel", "interruption")]
    assert len(onsets) == 4
    for row in onsets:
        x, (turn,) = audio(manifest, row), row["turns"]
        at = sample(turn["t"])
        assert 0.1 <= turn["t"] <= 0.3 and not x[:at].any()
        assert loudest(x, at, at + sample(0.01)) > loudest(x) - SPEECH_DB
        after = (x.size - np.flatnonzero(x)[-1]) / SAMPLE_RATE
        lo, hi = (1.5, 2.0) if kind(row) == "back-channel" else (1.0, 1.5)
        assert lo <= after <= hi + 0.01


@needs_espeak
def test_room_reverberates_but_keeps_speech_onsets_on_their_labels(episodes: dict) -> None:
    dry, room = episodes["dry"], episodes["room"]
    assert validate_manifest(room) == 8
    for a, b in zip(rows(dry), rows(room), strict=True):
        assert {**a, "audio": ""} == {**b, "audio": ""}  # same words, durations and labels
        x, y = audio(dry, a), audio(room, b)
        assert y.size == x.size and not np.allclose(x, y, atol=1e-3)
        assert active_db(y) == pytest.approx(active_db(x), abs=1.0)  # as loud as the dry speech
        top = loudest(y)
        if kind(a) in ("back-channel", "interruption"):
            at = sample(a["turns"][0]["t"])
            assert loudest(y, 0, at - sample(0.003)) < top - SILENT_DB  # nothing comes early
            assert loudest(y, at, at + sample(0.01)) > top - SPEECH_DB  # speech within 10 ms
            # to the millisecond: the direct path's 4-30 ms delay is taken out (what is left
            # early is the fractional-delay filter's 2.5 ms of pre-ringing)
            assert -5 <= onset_ms(y) - onset_ms(x) <= 3
        else:
            at = sample(a["turns"][-1]["t"])
            assert loudest(y, at, at + sample(0.05)) > top - SILENT_DB  # the reverberant tail
            assert not x[at:].any()


@needs_espeak
def test_noise_is_pink_at_an_snr_drawn_from_the_range(episodes: dict) -> None:
    room, noisy = episodes["room"], episodes["noisy"]
    assert validate_manifest(noisy) == 8
    snrs = []
    for a, b in zip(rows(room), rows(noisy), strict=True):
        assert {**a, "audio": ""} == {**b, "audio": ""}
        speech = audio(room, a)
        noise = audio(noisy, b) - speech  # the same room: only the noise differs
        snrs.append(active_db(speech) - 10 * np.log10(np.mean(noise.astype(np.float64) ** 2)))
        power = np.abs(np.fft.rfft(noise)) ** 2
        f = np.fft.rfftfreq(noise.size, 1 / SAMPLE_RATE)
        low, high = (power[(f >= lo) & (f < 2 * lo)].mean() for lo in (100, 1600))
        assert 10 < low / high < 25  # 1/f: 16 times the power per Hz four octaves down
    assert all(19.9 < snr < 30.1 for snr in snrs) and np.ptp(snrs) > 1


def test_missing_espeak_is_named_with_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    voice = Voice("en-us+m3", 160, 45)
    with pytest.raises(MissingDependencyError, match="sudo apt-get install espeak-ng"):
        render("hello there", voice)
    with pytest.raises(MissingDependencyError, match="espeak-ng"):
        write_dialogues(tmp_path / "out", "dlg", 4, [voice], 0)
    assert not (tmp_path / "out").exists()


@needs_espeak
def test_a_room_without_pyroomacoustics_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, voices: tuple[Voice, ...]
) -> None:
    monkeypatch.setitem(sys.modules, "pyroomacoustics", None)  # import fails
    items = command_items(np.random.default_rng(3), 2)
    with pytest.raises(MissingDependencyError, match="pip install pyroomacoustics"):
        write_utterances(tmp_path / "room", "utt", items, voices, 0, room=True)
    assert not (tmp_path / "room").exists()
    manifest = write_utterances(tmp_path / "dry", "utt", items, voices, 0, snr_db=(10, 10))
    assert validate_manifest(manifest) == 2
