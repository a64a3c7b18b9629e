"""``minmo-assistant --self-test``: what a bundle runs to prove it works, headless."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_the_self_test_passes_and_leaves_the_users_files_alone(tmp_path: Path) -> None:
    config, data = tmp_path / "config", tmp_path / "data"
    config.mkdir()
    settings = config / "settings.json"
    settings.write_text(json.dumps({"turn_policy": "silence"}))
    env = dict(os.environ, MINMO_CONFIG_DIR=str(config), MINMO_DATA_DIR=str(data),
               QT_QPA_PLATFORM="offscreen")  # fmt: skip
    done = subprocess.run([sys.executable, "main.py", "--self-test"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("ok   imports: ") and " modules" in lines[0]
    turn = next(line for line in lines if line.startswith("ok   window and spoken turn: "))
    assert "heard " in turn and " 0 words" not in turn and "played 0.0 s" not in turn
    assert "echo canceller SpeexDSP (" in turn  # the default, and where it came from
    assert lines[-1].startswith("self-test passed in ")
    assert json.loads(settings.read_text()) == {"turn_policy": "silence"}  # untouched
    assert not data.exists()  # the turn's history went to a temporary folder


def test_a_failing_step_is_named_and_exits_1(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from app import self_test

    for name in ("MINMO_CONFIG_DIR", "MINMO_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name))  # restored afterwards

    def no_speakers() -> str:
        raise RuntimeError("the reply was never played on the (fake) speakers")

    monkeypatch.setattr(self_test, "spoken_turn", no_speakers)
    said: list[str] = []
    assert self_test.run_checks(said.append) == 1
    assert said[0].startswith("ok   imports: ")
    assert said[-2:] == [
        "FAIL window and spoken turn: RuntimeError: the reply was never played on the (fake) "
        "speakers",
        "(run again with --debug for the traceback)",
    ]


def test_every_module_imports_or_names_its_missing_extra(monkeypatch) -> None:
    """A module whose optional extra is missing is listed with the reason, not failed."""
    from app import self_test

    imported, optional = self_test.import_everything()
    assert imported > 100 and optional == []  # the dev install has every extra
    monkeypatch.setitem(sys.modules, "pyroomacoustics", None)
    monkeypatch.delitem(sys.modules, "app.bench.simulation", raising=False)
    monkeypatch.delitem(sys.modules, "app.bench.audio", raising=False)
    _, optional = self_test.import_everything()
    assert any(o.startswith("app.bench.simulation (the room simulation needs pyroomacoustics")
               for o in optional), optional  # fmt: skip
