"""Every conversation saved as it happens: one JSON line per finished user utterance and per
finished reply, appended and flushed to disk by a writer thread (the GUI thread never waits
on the disk). A kill mid-turn loses at most the turn in flight; a half-written last line is
skipped by the reader. Markdown export for sharing.

    <data folder>/history/2026-11-30T08-21-03.jsonl
    {"turn": 1, "role": "user", "text": "...", "language": "en", "emotion": "happy", "t": ...}
    {"turn": 1, "role": "assistant", "text": "...", "heard": "...", "interrupted": false, ...}
"""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import threading
import time
from pathlib import Path

from platformdirs import user_data_dir


def history_dir() -> Path:
    root = os.environ.get("MINMO_DATA_DIR") or user_data_dir("minmo-assistant")
    return Path(root) / "history"


class HistoryWriter:
    """Appends records to one conversation's file from a thread of its own."""

    def __init__(self, folder: Path | None = None) -> None:
        folder = folder or history_dir()
        folder.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now().strftime("%Y-%m-%dT%H-%M-%S")
        self.path = folder / f"{stamp}.jsonl"
        n = 1
        while self.path.exists():
            n += 1
            self.path = folder / f"{stamp}-{n}.jsonl"
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
            self.record(turn=event.turn_id, role="assistant", text=event.reply_text,
                        heard=event.heard_text, interrupted=event.interrupted)  # fmt: skip

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            while (record := self._queue.get()) is not None:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())


def read_history(path: Path) -> list[dict]:
    """The records of a conversation file; a damaged line (a kill mid-write) is skipped."""
    records = []
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "role" in record:
            records.append(record)
    return records


def to_markdown(records: list[dict], title: str = "Conversation") -> str:
    lines = [f"# {title}", ""]
    for r in records:
        if r["role"] == "user":
            tags = [r.get(k) for k in ("language", "emotion", "event")]
            tags = [t for t in tags if t and t not in ("neutral", "speech", "emo_unknown")]
            note = f" _({', '.join(tags)})_" if tags else ""
            lines += [f"**You:** {r.get('text', '')}{note}", ""]
        else:
            if r.get("interrupted"):
                heard = r.get("heard", "")
                rest = r.get("text", "")[len(heard) :].strip()
                text = f"{heard} ✂ ~~{rest}~~" if rest else f"{heard} ✂"
            else:
                text = r.get("text", "")
            lines += [f"**Assistant:** {text}", ""]
    return "\n".join(lines)
