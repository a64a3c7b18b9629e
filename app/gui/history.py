"""Every conversation saved as it happens: one JSON line per finished user utterance and per
finished reply, appended and flushed to disk by a writer thread (the GUI thread never waits
on the disk). A kill mid-turn loses at most the turn in flight; a half-written last line is
skipped by the reader. Markdown export for sharing, a listing for the history browser.

    <data folder>/history/2026-11-30T08-21-03.jsonl
    {"turn": 1, "role": "user", "text": "...", "language": "en", "emotion": "happy", "t": ...}
    {"turn": 1, "role": "assistant", "text": "...", "heard": "...", "interrupted": false, ...}

With ``save_audio`` each turn's audio is kept too, as FLAC in a folder named like the file:

    <data folder>/history/2026-11-30T08-21-03/turn-0001-user.flac       (16 kHz)
    <data folder>/history/2026-11-30T08-21-03/turn-0001-assistant.flac  (24 kHz)

and the records point at it (``"audio": "2026-11-30T08-21-03/turn-0001-assistant.flac"``).
The user's audio comes after their record, so it is a small record of its own
(``{"turn": 1, "role": "user-audio", "audio": ...}``) that the reader attaches to it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from platformdirs import user_data_dir

USER_RATE = 16_000  # the user's utterance (UserAudio)
REPLY_RATE = 24_000  # the spoken reply (AssistantAudio)
AUDIO_LIMIT_S = 600  # a turn's audio past 10 minutes is dropped: memory stays bounded
AUDIO_NOTE = f"only the first {AUDIO_LIMIT_S // 60} minutes of audio were kept"
_STAMP = "%Y-%m-%dT%H-%M-%S"
_NAME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d)(?:-(\d+))?")


def history_dir() -> Path:
    root = os.environ.get("MINMO_DATA_DIR") or user_data_dir("minmo-assistant")
    return Path(root) / "history"


@dataclass
class _Audio:
    """Samples on their way to the writer thread: a user's utterance or a piece of a reply."""

    turn: int
    role: str  # "user" or "assistant"
    samples: np.ndarray
    clipped: bool = False  # samples past the limit were dropped


class HistoryWriter:
    """Appends records to one conversation's file from a thread of its own; with
    ``save_audio``, that thread also encodes and writes each turn's audio.

    ``on_audio_error`` is called once, from the writer thread, with a one-line message when
    audio cannot be written (a full disk): the text history carries on regardless.
    """

    def __init__(
        self,
        folder: Path | None = None,
        save_audio: bool = False,
        on_audio_error: Callable[[str], object] | None = None,
    ) -> None:
        folder = folder or history_dir()
        folder.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now().strftime(_STAMP)
        self.path = folder / f"{stamp}.jsonl"
        n = 1
        while self.path.exists():
            n += 1
            self.path = folder / f"{stamp}-{n}.jsonl"
        self.audio_dir = self.path.with_suffix("")
        self.save_audio = save_audio
        self.audio_error: str | None = None  # the first audio write failure, if any
        self._on_audio_error = on_audio_error
        self._reply_samples: dict[int, int] = {}  # GUI thread: each open reply's samples
        self._user_audio: dict[int, _Audio] = {}  # writer thread: audio before its record
        self._reply_audio: dict[int, list[_Audio]] = {}  # writer thread: until TurnEnded
        self._user_turns: set[int] = set()  # writer thread: turns whose user record is out
        self._notes: list[dict] = []  # writer thread: records to append after the current one
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="minmo-history", daemon=True)
        self._thread.start()

    def record(self, **fields) -> None:
        self._queue.put({**fields, "t": time.time()})

    def on_event(self, event) -> None:
        """The engine events worth keeping (called on the GUI thread: only queues)."""
        name = type(event).__name__
        if name == "UserText":
            self.record(turn=event.turn_id, role="user", text=event.text, typed=True)
        elif name == "FinalTranscript" and event.text:
            self.record(turn=event.turn_id, role="user", text=event.text,
                        language=event.language, emotion=event.emotion,
                        event=event.event)  # fmt: skip
        elif name == "TurnEnded":
            self._reply_samples.pop(event.turn_id, None)
            self.record(turn=event.turn_id, role="assistant", text=event.reply_text,
                        heard=event.heard_text, interrupted=event.interrupted)  # fmt: skip
        elif name == "UserAudio" and self.save_audio:
            self._queue_user_audio(event.turn_id, event.audio)
        elif name == "AssistantAudio" and self.save_audio:
            self._queue_reply_audio(event.turn_id, event.audio)

    def _queue_user_audio(self, turn: int, audio: np.ndarray) -> None:
        samples = np.asarray(audio, dtype=np.float32).reshape(-1)
        limit = AUDIO_LIMIT_S * USER_RATE
        self._queue.put(_Audio(turn, "user", samples[:limit].copy(), samples.size > limit))

    def _queue_reply_audio(self, turn: int, audio: np.ndarray) -> None:
        """A copy of the piece, until the reply reaches the limit (then one note, no more)."""
        if turn not in self._reply_samples:  # replies that never ended are forgotten
            for old in [t for t in self._reply_samples if t < turn - 1]:
                del self._reply_samples[old]
        samples = np.asarray(audio, dtype=np.float32).reshape(-1)
        limit = AUDIO_LIMIT_S * REPLY_RATE
        queued = self._reply_samples.get(turn, 0)
        self._reply_samples[turn] = queued + samples.size
        if queued < limit:
            kept = samples[: limit - queued].copy()
            self._queue.put(_Audio(turn, "assistant", kept, queued + samples.size > limit))

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    # -- the writer thread ----------------------------------------------------------------
    def _run(self) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            while (item := self._queue.get()) is not None:
                record = self._take_audio(item) if isinstance(item, _Audio) else self._add(item)
                for line in ([record] if record else []) + self._notes:
                    f.write(json.dumps(line, ensure_ascii=False) + "\n")
                self._notes.clear()
                f.flush()
                os.fsync(f.fileno())

    def _add(self, record: dict) -> dict:
        """A text record, with the audio of its turn written beside it when there is some."""
        turn, role = record.get("turn"), record.get("role")
        if role == "user":
            self._user_turns.add(turn)
            pending = self._user_audio.pop(turn, None)
            self._user_audio.clear()  # an older turn's audio without words: not kept
            if pending is not None:
                record.update(self._save(turn, "user", [pending], USER_RATE))
        elif role == "assistant":
            pieces = self._reply_audio.pop(turn, None)
            for old in [t for t in self._reply_audio if t < turn]:
                del self._reply_audio[old]
            if pieces:
                record.update(self._save(turn, "assistant", pieces, REPLY_RATE))
        return record

    def _take_audio(self, audio: _Audio) -> dict | None:
        """Audio on its own: a record for user audio after its text, else held for it."""
        if audio.role == "assistant":
            self._reply_audio.setdefault(audio.turn, []).append(audio)
            for old in [t for t in self._reply_audio if t < audio.turn - 1]:
                del self._reply_audio[old]
            return None
        if audio.turn not in self._user_turns:
            self._user_audio = {audio.turn: audio}
            return None
        saved = self._save(audio.turn, "user", [audio], USER_RATE)
        if not saved:
            return None
        return {"turn": audio.turn, "role": "user-audio", **saved, "t": time.time()}

    def _save(self, turn: int, role: str, pieces: list[_Audio], rate: int) -> dict:
        """Writes one FLAC file: the record's ``audio`` fields, or none when it failed."""
        name = f"turn-{turn:04d}-{role}.flac"
        target = self.audio_dir / name
        part = target.with_name(name + ".part")  # a kill mid-write leaves no torn .flac
        if not any(p.samples.size for p in pieces):
            return {}
        try:
            import soundfile

            samples = np.clip(np.concatenate([p.samples for p in pieces]), -1.0, 1.0)
            self.audio_dir.mkdir(parents=True, exist_ok=True)
            soundfile.write(part, samples, rate, format="FLAC", subtype="PCM_16")
            part.replace(target)
        except Exception as err:  # a full disk, a missing codec: the text carries on
            self._audio_failed(turn, err)
            with contextlib.suppress(OSError):
                part.unlink(missing_ok=True)
            return {}
        saved = {"audio": f"{self.audio_dir.name}/{name}"}
        if any(p.clipped for p in pieces):
            saved["audio_note"] = AUDIO_NOTE
        return saved

    def _audio_failed(self, turn: int, err: Exception) -> None:
        if self.audio_error is not None:
            return  # said once
        from minmo_core.errors import first_line

        self.audio_error = (
            f"The conversation's audio could not be saved ({type(err).__name__}: "
            f"{first_line(err, 200)}); the text is still saved."
        )
        self._notes.append({"turn": turn, "role": "note", "text": self.audio_error,
                            "t": time.time()})  # fmt: skip
        if self._on_audio_error is not None:
            self._on_audio_error(self.audio_error)


# -- reading ----------------------------------------------------------------------------------
def read_history(path: Path) -> list[dict]:
    """The records of a conversation file; a damaged line (a kill mid-write) is skipped.

    A user's audio record is attached to their entry, a reply cut after it was saved (a
    second record of the turn) updates the first, and a record with audio gets
    ``audio_file``: the file's absolute path.
    """
    path = Path(path)
    records: list[dict] = []
    entries: dict[tuple, dict] = {}  # (turn, role) -> its entry, for the records that follow
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or not isinstance(record.get("role"), str):
            continue
        for key in ("text", "heard"):
            if key in record and not isinstance(record[key], str):
                record[key] = "" if record[key] is None else str(record[key])
        if isinstance(record.get("audio"), str):
            record["audio_file"] = path.parent / record["audio"]
        role, turn = record["role"], record.get("turn")
        earlier = entries.get((turn, "user" if role == "user-audio" else role))
        if role == "user-audio":
            if earlier is not None:
                earlier.update({k: v for k, v in record.items() if k.startswith("audio")})
            continue
        if role == "assistant" and earlier is not None and turn is not None:
            earlier.update(record)  # the cut came after the reply was saved
            continue
        if role in ("user", "assistant") and turn is not None:
            entries[(turn, role)] = record
        records.append(record)
    return records


@dataclass(frozen=True)
class ConversationInfo:
    """One saved conversation, as the history browser lists it."""

    path: Path
    started: dt.datetime
    turns: int
    title: str  # the user's first line
    has_audio: bool
    text: str = ""  # everything said in it, lower-cased, for searching


def conversation_info(path: Path, records: list[dict]) -> ConversationInfo | None:
    """The listing's entry for a file's records; None when it holds no turn at all."""
    said = [r for r in records if r["role"] in ("user", "assistant")]
    if not said:
        return None
    first = next((r["text"] for r in said if r["role"] == "user" and r.get("text")), "")
    title = first.strip().splitlines()[0] if first.strip() else "(no words)"
    if len(title) > 80:
        title = title[:79] + "…"
    match = _NAME.fullmatch(path.stem)
    if match:
        started = dt.datetime.strptime(match[1], _STAMP)
    else:
        started = dt.datetime.fromtimestamp(path.stat().st_mtime)
    return ConversationInfo(
        path=path,
        started=started,
        turns=len({r.get("turn", f"#{i}") for i, r in enumerate(said)}),
        title=title,
        has_audio=any("audio" in r for r in said),
        text="\n".join(r.get("text", "") for r in said).lower(),
    )


def list_conversations(folder: Path | None = None) -> list[ConversationInfo]:
    """The saved conversations, newest first; a file that cannot be read is left out."""
    folder = folder or history_dir()
    infos = []
    for path in folder.glob("*.jsonl"):
        try:
            info = conversation_info(path, read_history(path))
        except (OSError, ValueError):  # unreadable, a folder, gone meanwhile
            continue
        if info is not None:
            infos.append(info)

    def newest(info: ConversationInfo) -> tuple:
        match = _NAME.fullmatch(info.path.stem)
        return info.started, int(match[2] or 1) if match else 0, info.path.name

    return sorted(infos, key=newest, reverse=True)


def delete_conversation(path: Path) -> None:
    """Removes a conversation's file and its audio folder (OSError when it cannot)."""
    path = Path(path)
    if path.suffix != ".jsonl":
        raise ValueError(f"not a conversation file: {path}")
    audio = path.with_suffix("")
    if audio.is_dir():
        shutil.rmtree(audio)  # first: a failure leaves the conversation listed, to try again
    path.unlink(missing_ok=True)


def to_markdown(records: list[dict], title: str = "Conversation") -> str:
    lines = [f"# {title}", ""]
    for r in records:
        if r["role"] == "user":
            tags = [r.get(k) for k in ("language", "emotion", "event")]
            tags = [t for t in tags if t and t not in ("neutral", "speech", "emo_unknown")]
            note = f" _({', '.join(tags)})_" if tags else ""
            lines += [f"**You:** {r.get('text', '')}{note}", ""]
        elif r["role"] == "assistant":
            if r.get("interrupted"):
                heard = r.get("heard", "")
                rest = r.get("text", "")[len(heard) :].strip()
                text = f"{heard} ✂ ~~{rest}~~" if rest else f"{heard} ✂"
            else:
                text = r.get("text", "")
            lines += [f"**Assistant:** {text}", ""]
        elif r["role"] == "note":
            lines += [f"_{r.get('text', '')}_", ""]
    return "\n".join(lines)
