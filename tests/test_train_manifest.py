"""Training manifests: good lines read into examples, every kind of bad line is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from minmo_core.errors import ConfigError
from minmo_core.train.manifest import ManifestError, read_manifest, validate_manifest

GOOD = {
    "audio": "clips/a.wav", "duration": 2.5, "transcript": "what time is it",
    "language": "en", "task": "qa", "response": "It is three o'clock.",
    "response_speech_tokens": [1, 2, 3],
}  # fmt: skip
DUPLEX = {
    "audio": "clips/a.wav", "duration": 6.0, "transcript": "", "language": "en",
    "task": "duplex", "turns": [{"t": 2.0, "label": "speak"}, {"t": 4.5, "label": "stop"}],
}  # fmt: skip


def write(tmp_path: Path, *lines: object) -> Path:
    (tmp_path / "clips").mkdir(exist_ok=True)
    (tmp_path / "clips" / "a.wav").write_bytes(b"RIFF")
    path = tmp_path / "train.jsonl"
    text = [line if isinstance(line, str) else json.dumps(line) for line in lines]
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    return path


def test_good_lines_become_examples_with_the_audio_beside_the_manifest(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD, "", DUPLEX)
    first, second = read_manifest(path)
    assert first.audio == tmp_path / "clips" / "a.wav" and first.duration == 2.5
    assert first.response_speech_tokens == (1, 2, 3) and first.turns == ()
    assert [(t.t, t.label) for t in second.turns] == [(2.0, "speak"), (4.5, "stop")]
    assert validate_manifest(path) == 2


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ("{not json", "not JSON"),
        ([1, 2], "a JSON object"),
        ({**GOOD, "audio": 3}, '"audio" must be a string'),
        ({**GOOD, "duration": "long"}, '"duration" must be a number'),
        ({**GOOD, "duration": True}, '"duration" must be a number'),
        ({**GOOD, "duration": 0}, "outside (0, 3600]"),
        ({**GOOD, "duration": 7200}, "outside (0, 3600]"),
        ({k: v for k, v in GOOD.items() if k != "transcript"}, '"transcript" must be a string'),
        ({**GOOD, "language": ""}, "not a language code"),
        ({**GOOD, "task": "dance"}, '"task" \'dance\' is not one of'),
        ({k: v for k, v in GOOD.items() if k != "response"}, 'a "qa" example needs a "response"'),
        ({**GOOD, "response_speech_tokens": [1, -2]}, "non-negative integers"),
        ({**GOOD, "speaker": "x"}, "unknown field 'speaker'"),
        ({**DUPLEX, "turns": []}, 'a "duplex" example needs "turns"'),
        ({**DUPLEX, "turns": [{"t": 9.0, "label": "speak"}]}, "turns[0]: t = 9.0 s lies outside"),
        ({**DUPLEX, "turns": [{"t": 3, "label": "speak"}, {"t": 1, "label": "stop"}]},
         "turns[1]: t = 1 s comes before"),
        ({**DUPLEX, "turns": [{"t": 1, "label": "wait"}]}, "\"label\" 'wait' is not one of"),
        ({**DUPLEX, "turns": [{"time": 1, "label": "stop"}]}, 'each turn is {"t"'),
        ({**GOOD, "audio": "clips/missing.wav"}, "missing.wav does not exist"),
    ],
)  # fmt: skip
def test_a_bad_line_is_refused_by_number_and_field(tmp_path: Path, line, named: str) -> None:
    path = write(tmp_path, GOOD, line, GOOD)
    with pytest.raises(ManifestError) as caught:
        validate_manifest(path)
    message = str(caught.value)
    assert message.startswith(f"{path} line 2") and named in message, message
    assert isinstance(caught.value, ConfigError)  # the CLI shows it as one line


def test_audio_need_not_exist_when_not_checked(tmp_path: Path) -> None:
    path = write(tmp_path, {**GOOD, "audio": "elsewhere/b.wav"})
    (example,) = read_manifest(path, check_audio=False)
    assert example.audio == tmp_path / "elsewhere" / "b.wav"


def test_a_missing_manifest_is_named(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"cannot read the manifest .*nope\.jsonl"):
        validate_manifest(tmp_path / "nope.jsonl")
