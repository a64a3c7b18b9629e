"""The conversation history beyond its text: each turn's audio kept as FLAC beside the file
when asked (a failing disk costs the audio, never the text), the saved conversations listed
newest first (a damaged file left out), and the history browser, offscreen under pytest-qt:
it lists them, shows one with a cut reply struck through, filters by what was said, exports
Markdown, and deletes a conversation after asking (never the one being written)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PySide6.QtCore import Qt, QUrl

from app.gui import history
from app.gui.history import (
    HistoryWriter,
    delete_conversation,
    list_conversations,
    read_history,
    to_markdown,
)
from app.gui.widgets.conversation import CUT
from app.gui.widgets.history_browser import CURRENT, HistoryBrowser
from minmo_core.engine.events import AssistantAudio, FinalTranscript, TurnEnded, UserText

TIMEOUT_MS = 10_000


@dataclass(frozen=True, kw_only=True, eq=False)
class UserAudio:
    """Stands in for the engine's UserAudio event (the writer matches it by name)."""

    turn_id: int
    audio: np.ndarray
    t: float = 0.0


def tone(seconds: float, rate: int, pitch: float = 220.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * pitch * t)).astype(np.float32)


def heard(turn: int, text: str) -> FinalTranscript:
    return FinalTranscript(turn_id=turn, text=text, language="en", emotion="happy", event=None)


def reply_audio(turn: int, pieces: list[np.ndarray]) -> list[AssistantAudio]:
    events, start = [], 0
    for piece in pieces:
        events.append(
            AssistantAudio(turn_id=turn, audio=piece, start_sample=start, text_span=(0, 0))
        )
        start += piece.size
    return events


def ended(turn: int, text: str, heard_text: str | None = None) -> TurnEnded:
    cut = heard_text is not None
    return TurnEnded(
        turn_id=turn, reply_text=text, heard_text=heard_text if cut else text, interrupted=cut
    )


def spoken_turns(writer: HistoryWriter) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Turn 1: the user's audio after their words (as the engine sends it); turn 2: before."""
    said, pieces, said_again = (
        tone(0.5, 16000),
        [tone(0.2, 24000, 300 + 50 * i) for i in range(3)],
        tone(0.25, 16000),
    )
    for event in [
        heard(1, "What's the weather like?"),
        UserAudio(turn_id=1, audio=said),
        *reply_audio(1, pieces),
        ended(1, "Sunny and warm."),
        UserAudio(turn_id=2, audio=said_again),
        heard(2, "Thanks!"),
        ended(2, "You're welcome."),  # a reply without audio
    ]:
        writer.on_event(event)
    writer.close()
    return said, pieces, said_again


def test_each_turns_audio_is_saved_as_flac_beside_the_history(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path, save_audio=True)
    said, pieces, said_again = spoken_turns(writer)
    user, reply, user2, reply2 = read_history(writer.path)
    folder = writer.path.with_suffix("")
    assert user["audio"] == f"{folder.name}/turn-0001-user.flac"
    assert reply["audio"] == f"{folder.name}/turn-0001-assistant.flac"
    assert user2["audio"] == f"{folder.name}/turn-0002-user.flac" and "audio" not in reply2
    for record, rate, samples in [
        (user, 16000, said),
        (reply, 24000, np.concatenate(pieces)),
        (user2, 16000, said_again),
    ]:
        assert record["audio_file"] == writer.path.parent / record["audio"]
        data, sr = soundfile.read(record["audio_file"], dtype="float32")
        assert sr == rate and soundfile.info(record["audio_file"]).format == "FLAC"
        assert data.shape == samples.shape
        np.testing.assert_allclose(data, samples, atol=1e-3)  # the pieces in order
    assert sorted(p.name for p in folder.iterdir()) == [
        "turn-0001-assistant.flac",
        "turn-0001-user.flac",
        "turn-0002-user.flac",
    ]
    lines = [json.loads(line) for line in writer.path.read_text().splitlines()]
    assert [line["role"] for line in lines] == [
        "user",
        "user-audio",
        "assistant",
        "user",
        "assistant",
    ]


def test_no_audio_is_saved_unless_asked(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path)
    spoken_turns(writer)
    records = read_history(writer.path)
    assert [r["text"] for r in records] == [
        "What's the weather like?",
        "Sunny and warm.",
        "Thanks!",
        "You're welcome.",
    ]
    assert not any("audio" in r for r in records)
    assert not writer.path.with_suffix("").exists()
    assert [p.name for p in tmp_path.iterdir()] == [writer.path.name]


def test_a_noise_without_words_keeps_no_audio(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path, save_audio=True)
    writer.on_event(UserAudio(turn_id=1, audio=tone(0.3, 16000)))  # no transcript follows
    writer.on_event(heard(2, "Hello?"))
    writer.on_event(UserAudio(turn_id=2, audio=tone(0.3, 16000)))
    writer.close()
    assert [p.name for p in writer.path.with_suffix("").iterdir()] == ["turn-0002-user.flac"]
    (user,) = read_history(writer.path)
    assert user["text"] == "Hello?" and user["audio"].endswith("turn-0002-user.flac")


def test_a_failing_audio_write_keeps_the_text_and_says_so_once(tmp_path: Path, monkeypatch) -> None:
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(soundfile, "write", full)
    told: list[str] = []
    writer = HistoryWriter(tmp_path, save_audio=True, on_audio_error=told.append)
    spoken_turns(writer)
    records = read_history(writer.path)
    said = [r for r in records if r["role"] != "note"]
    assert [r["text"] for r in said] == [
        "What's the weather like?",
        "Sunny and warm.",
        "Thanks!",
        "You're welcome.",
    ]
    assert not any("audio" in r for r in said)
    (note,) = [r for r in records if r["role"] == "note"]
    assert len(told) == 1 and told[0] == note["text"] == writer.audio_error
    assert "No space left on device" in told[0] and "\n" not in told[0]
    assert not list(tmp_path.rglob("*.flac*"))  # no half-written file left behind
    assert "_The conversation's audio could not be saved" in to_markdown(records)


def test_a_reply_past_the_limit_keeps_its_first_minutes_with_a_note(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(history, "AUDIO_LIMIT_S", 1)
    writer = HistoryWriter(tmp_path, save_audio=True)
    writer.on_event(UserText(turn_id=1, text="Talk for a while."))
    for event in reply_audio(1, [tone(0.4, 24000)] * 5):  # 2 s
        writer.on_event(event)
    writer.on_event(ended(1, "On and on."))
    writer.close()
    (_, reply) = read_history(writer.path)
    assert soundfile.info(reply["audio_file"]).frames == 24000
    assert reply["audio_note"] == history.AUDIO_NOTE


def write_conversation(folder: Path, stamp: str, records: list[dict], audio: bool = False) -> Path:
    path = folder / f"{stamp}.jsonl"
    if audio:
        (folder / stamp).mkdir()
        soundfile.write(folder / stamp / "turn-0001-user.flac", tone(0.1, 16000), 16000)
        records[0] = {**records[0], "audio": f"{stamp}/turn-0001-user.flac"}
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def user(turn: int, text: str) -> dict:
    return {"turn": turn, "role": "user", "text": text, "language": "en"}


def assistant(turn: int, text: str, heard_text: str | None = None) -> dict:
    cut = heard_text is not None
    return {
        "turn": turn,
        "role": "assistant",
        "text": text,
        "heard": heard_text if cut else text,
        "interrupted": cut,
    }


@pytest.fixture
def conversations(tmp_path: Path) -> dict[str, Path]:
    """Three conversations (the newest is the one being written), and files that are not."""
    folder = tmp_path / "history"
    folder.mkdir()
    made = {
        "old": write_conversation(
            folder,
            "2026-11-28T09-00-00",
            [
                user(1, "What's the weather like in Lisbon?\nAnd tomorrow?"),
                assistant(
                    1,
                    "Sunny, 24 degrees. Tomorrow clouds come in from the west.",
                    "Sunny, 24 degrees.",
                ),
                assistant(
                    1, "Sunny, 24 degrees. Tomorrow clouds come in from the west.", "Sunny, 24"
                ),  # cut again after it was saved: the same turn
                user(2, "Thanks."),
                assistant(2, "You're welcome."),
            ],
            audio=True,
        ),
        "middle": write_conversation(
            folder,
            "2026-11-29T18-30-00",
            [
                user(1, "Tell me a joke about cats."),
                assistant(1, "Cats have nine lives."),
            ],
        ),
        "current": write_conversation(
            folder,
            "2026-11-30T08-21-03",
            [
                user(1, "Set a timer for ten minutes."),
                assistant(1, "Timer set."),
            ],
        ),
    }
    (folder / "2026-11-27T10-00-00.jsonl").write_bytes(b"\x00\xff garbage \x89PNG\r\n")
    (folder / "2026-11-26T10-00-00.jsonl").write_text("")  # started, nothing said
    (folder / "2026-11-25T10-00-00.jsonl").mkdir()  # not a file at all
    (folder / "2026-11-24T10-00-00.jsonl").write_text('{"turn": 1, "role": "us')  # torn
    return made


def test_conversations_are_listed_newest_first_and_a_damaged_file_is_skipped(conversations):
    infos = list_conversations(conversations["old"].parent)
    assert [i.path for i in infos] == [conversations[k] for k in ("current", "middle", "old")]
    assert [i.title for i in infos] == [
        "Set a timer for ten minutes.",
        "Tell me a joke about cats.",
        "What's the weather like in Lisbon?",
    ]
    assert [i.turns for i in infos] == [1, 1, 2]
    assert [i.has_audio for i in infos] == [False, False, True]
    assert infos[0].started.isoformat() == "2026-11-30T08:21:03"
    assert "nine lives" in infos[1].text
    assert list_conversations(conversations["old"].parent / "missing") == []


def test_read_history_merges_a_later_cut_and_resolves_audio(conversations) -> None:
    path = conversations["old"]
    first, reply, *_ = read_history(path)
    assert first["audio_file"] == path.with_suffix("") / "turn-0001-user.flac"
    assert reply["heard"] == "Sunny, 24" and reply["interrupted"]
    assert len(read_history(path)) == 4


def test_deleting_a_conversation_removes_its_file_and_audio(conversations) -> None:
    path = conversations["old"]
    delete_conversation(path)
    assert not path.exists() and not path.with_suffix("").exists()
    assert conversations["middle"].exists()
    with pytest.raises(ValueError):
        delete_conversation(path.parent)


# -- the browser --------------------------------------------------------------------------


@pytest.fixture
def browser(qtbot):
    """History browsers for a test. As in the app, no cycle collection runs while their
    worker threads live (a worker thread's collection could destroy Qt objects)."""
    import gc

    gc.collect()
    gc.disable()
    made = []

    def make(*args, **kwargs) -> HistoryBrowser:
        b = HistoryBrowser(*args, **kwargs)
        qtbot.addWidget(b)
        made.append(b)
        b.show()
        qtbot.waitUntil(lambda: not b.busy(), timeout=TIMEOUT_MS)
        return b

    yield make
    for b in made:  # closed and deleted here, on the GUI thread
        b.close()
        b.deleteLater()
    qtbot.wait(20)
    gc.enable()
    gc.collect()


def choose(qtbot, b, row: int) -> None:
    """Moves the list's selection with the keyboard and waits for the conversation."""
    b.list.setFocus()
    while b.list.currentRow() != row:
        key = Qt.Key.Key_Down if b.list.currentRow() < row else Qt.Key.Key_Up
        qtbot.keyClick(b.list, key)
    qtbot.waitUntil(lambda: not b.busy() and b.shown_path == b.selected().path, timeout=TIMEOUT_MS)


def test_the_browser_lists_conversations_and_shows_the_chosen_one(qtbot, browser, conversations):
    b = browser(conversations["old"].parent, current=conversations["current"])
    assert b.list.count() == 3
    labels = [b.list.item(i).text() for i in range(3)]
    assert labels[0] == "Set a timer for ten minutes.\n2026-11-30 08:21 · 1 turn " + CURRENT
    assert CURRENT == "(this conversation)" and CURRENT not in labels[1] + labels[2]
    assert "2026-11-28 09:00 · 2 turns · audio" in labels[2]
    assert b.shown_path == conversations["current"]  # the current one is shown first
    assert "Set a timer for ten minutes." in b.view.toPlainText()
    choose(qtbot, b, 2)
    text = b.view.toPlainText()
    assert "You" in text and "What's the weather like in Lisbon?\nAnd tomorrow?" in text
    assert f"Sunny, 24 {CUT} degrees. Tomorrow clouds come in from the west." in text
    assert "line-through" in b.view.toHtml()  # the unheard part is struck through
    assert "You're welcome." in text and "▶ Play" in text


def test_a_recording_plays_through_the_given_player(qtbot, browser, conversations) -> None:
    played: list[Path] = []
    b = browser(conversations["old"].parent, player=played.append)
    choose(qtbot, b, 2)
    b.view.anchorClicked.emit(QUrl("audio:0"))
    assert played == [conversations["old"].with_suffix("") / "turn-0001-user.flac"]
    played[0].unlink()
    b.view.anchorClicked.emit(QUrl("audio:0"))
    assert len(played) == 1 and "missing" in b.status.text()


def test_the_search_box_filters_the_list(qtbot, browser, conversations) -> None:
    b = browser(conversations["old"].parent)
    qtbot.keyClicks(b.search, "clouds WEST")  # words anywhere in it, any case
    assert [i.path for i in b.infos(visible_only=True)] == [conversations["old"]]
    qtbot.waitUntil(
        lambda: not b.busy() and b.shown_path == conversations["old"], timeout=TIMEOUT_MS
    )
    b.search.clear()
    qtbot.keyClicks(b.search, "no such words")
    assert b.infos(visible_only=True) == [] and b.selected() is None
    assert not b.export_button.isEnabled() and not b.delete_button.isEnabled()
    b.search.clear()
    assert len(b.infos(visible_only=True)) == 3


def test_export_writes_the_markdown_where_asked(
    qtbot, browser, conversations, tmp_path, monkeypatch
):
    from PySide6.QtWidgets import QFileDialog

    b = browser(conversations["old"].parent)
    choose(qtbot, b, 1)
    monkeypatch.setattr(
        QFileDialog, "getSaveFileName", lambda *a, **k: (str(tmp_path / "cats"), "")
    )
    with qtbot.waitSignal(b.exported, timeout=TIMEOUT_MS):
        qtbot.mouseClick(b.export_button, Qt.MouseButton.LeftButton)
    target = tmp_path / "cats.md"
    assert target.read_text() == to_markdown(
        read_history(conversations["middle"]), "Conversation of 2026-11-29 18:30"
    )
    assert "**You:** Tell me a joke about cats. _(en)_" in target.read_text()
    assert b.status.text() == f"Exported to {target}"


def test_delete_asks_first_and_then_removes_the_files(qtbot, browser, conversations, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    b = browser(conversations["old"].parent, current=conversations["current"])
    choose(qtbot, b, 2)
    asked: list[str] = []
    answer = QMessageBox.StandardButton.No

    def question(parent, title, text, *args):
        asked.append(text)
        return answer

    monkeypatch.setattr(QMessageBox, "question", question)
    qtbot.mouseClick(b.delete_button, Qt.MouseButton.LeftButton)
    assert "What's the weather like in Lisbon?" in asked[0] and "recordings" in asked[0]
    assert conversations["old"].exists() and b.list.count() == 3  # said no
    answer = QMessageBox.StandardButton.Yes
    with qtbot.waitSignal(b.deleted, timeout=TIMEOUT_MS):
        qtbot.mouseClick(b.delete_button, Qt.MouseButton.LeftButton)
    assert not conversations["old"].exists() and not conversations["old"].with_suffix("").exists()
    assert [i.path for i in b.infos()] == [conversations["current"], conversations["middle"]]
    assert len(asked) == 2 and "Deleted" in b.status.text()
    qtbot.waitUntil(lambda: not b.busy(), timeout=TIMEOUT_MS)
    assert b.shown_path == b.selected().path == conversations["middle"]


def test_the_current_conversation_cannot_be_deleted(qtbot, browser, conversations, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    def question(*args):
        raise AssertionError("nothing to confirm")

    monkeypatch.setattr(QMessageBox, "question", question)
    b = browser(conversations["old"].parent, current=conversations["current"])
    assert b.selected().path == conversations["current"]
    assert not b.delete_button.isEnabled()
    b.delete()
    assert "cannot be deleted" in b.status.text()
    qtbot.waitUntil(lambda: not b.busy(), timeout=TIMEOUT_MS)
    assert conversations["current"].exists() and b.list.count() == 3
    choose(qtbot, b, 1)
    assert b.delete_button.isEnabled()


def test_a_failed_delete_is_one_line_and_the_conversation_stays(
    qtbot, browser, conversations, monkeypatch
) -> None:
    from PySide6.QtWidgets import QMessageBox

    from app.gui.widgets import history_browser

    def refused(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(history_browser, "delete_conversation", refused)
    monkeypatch.setattr(QMessageBox, "question", lambda *a: QMessageBox.StandardButton.Yes)
    b = browser(conversations["old"].parent)
    choose(qtbot, b, 1)
    qtbot.mouseClick(b.delete_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not b.busy(), timeout=TIMEOUT_MS)
    message = b.status.text()
    assert message.startswith("2026-11-29T18-30-00.jsonl could not be deleted: PermissionError")
    assert "\n" not in message and b.list.count() == 3


def test_open_folder_hands_the_history_folder_to_the_desktop(browser, conversations, monkeypatch):
    from PySide6.QtGui import QDesktopServices

    opened: list[QUrl] = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url) or True)
    b = browser(conversations["old"].parent)
    b.folder_button.click()
    assert [u.toLocalFile() for u in opened] == [str(conversations["old"].parent)]


def test_an_empty_history_says_so(browser, tmp_path: Path) -> None:
    b = browser(tmp_path / "nothing yet")
    assert b.list.count() == 0 and "No saved conversations yet" in b.status.text()
    assert not b.export_button.isEnabled() and not b.delete_button.isEnabled()
