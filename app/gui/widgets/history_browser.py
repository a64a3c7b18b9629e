"""The history browser: the saved conversations, newest first, on the left (a search box
filters them by what was said), the chosen one on the right as it went (a reply cut short
shows what was heard and, struck through after the cut marker, what was not), and buttons to
export it to Markdown, delete it, or open the history folder.

Listing, reading, exporting and deleting run in short worker threads: the GUI thread only
shows their results, which come back through queued signals.
"""

from __future__ import annotations

import functools
import html
import itertools
from collections.abc import Callable
from pathlib import Path

import shiboken6
from PySide6.QtCore import QObject, Qt, QThread, QUrl, Signal, Slot
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from app.gui.history import (
    ConversationInfo,
    delete_conversation,
    history_dir,
    list_conversations,
    read_history,
    to_markdown,
)
from app.gui.widgets.conversation import CUT, QUIET_TAGS

Player = Callable[[Path], object]  # plays a turn's recording (a FLAC file)
CURRENT = "(this conversation)"


def open_with_system(path: Path) -> bool:
    """The desktop's own player for a recording (nothing plays on the GUI thread)."""
    return QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))


def _export(records: list[dict], title: str, target: Path) -> Path:
    target.write_text(to_markdown(records, title), encoding="utf-8")
    return target


def _delete(path: Path) -> Path:
    delete_conversation(path)
    return path


def _read(path: Path) -> tuple[Path, list[dict]]:
    return path, read_history(path)


class _Job(QObject):
    """One piece of disk work, run in a worker thread of its own."""

    done = Signal(object)
    failed = Signal(str)
    finished = Signal()

    def __init__(self, work: Callable[[], object], what: str) -> None:
        super().__init__()
        self.work, self.what = work, what

    @Slot()
    def run(self) -> None:
        from minmo_core.errors import first_line

        try:
            result = self.work()
        except Exception as err:  # any failure is a line in the dialog
            self.failed.emit(f"{self.what}: {type(err).__name__}: {first_line(err, 200)}")
        else:
            self.done.emit(result)
        finally:
            self.finished.emit()


def render(records: list[dict], audio: list[Path]) -> str:
    """A conversation as HTML; each recording becomes an ``audio:N`` link (N: its index in
    ``audio``, which this fills)."""
    parts = []
    for r in records:
        role, text = r["role"], r.get("text", "")
        if role == "note":
            parts.append(f"<p style='color:#777'><i>{html.escape(text)}</i></p>")
            continue
        if role not in ("user", "assistant"):
            continue
        who = "You" if role == "user" else "Assistant"
        tags = [str(r.get(k)) for k in ("language", "emotion", "event")]
        tags = [t for t in tags if t not in QUIET_TAGS and t != "None"]
        chips = f" <span style='color:#557'>({html.escape(', '.join(tags))})</span>" if tags else ""
        if role == "assistant" and r.get("interrupted"):
            heard = r.get("heard", "")
            rest = text[len(heard) :] if text.startswith(heard) else text
            body = (
                f"{_lines(heard)} <b style='color:#c0392b'>{CUT}</b> "
                f"<s style='color:#aaa'>{_lines(rest.lstrip())}</s>"
            )
        else:
            body = _lines(text) if text else "<i style='color:#777'>(no words)</i>"
        play = ""
        if isinstance(r.get("audio_file"), Path):
            play = f" <a href='audio:{len(audio)}'>▶ Play</a>"
            audio.append(r["audio_file"])
            if r.get("audio_note"):
                play += f" <i style='color:#777'>({html.escape(str(r['audio_note']))})</i>"
        background = "#eef4ff" if role == "user" else "#f6f6f6"
        parts.append(
            f"<table width='100%' cellpadding='6' style='background:{background}'><tr><td>"
            f"<b style='color:#555'>{who}</b>{chips}{play}<br>{body}</td></tr></table>"
        )
    return "".join(parts) or "<p style='color:#777'>Nothing was said.</p>"


def _lines(text: str) -> str:
    return html.escape(text).replace("\n", "<br>")


class HistoryBrowser(QDialog):
    """The saved conversations. ``current``: the conversation being written now (marked,
    and not deletable); ``player`` plays a turn's recording (the desktop's player by
    default)."""

    listed = Signal()  # the list was filled
    shown = Signal(object)  # a conversation's path, once its turns are on the right
    exported = Signal(object)  # the Markdown file written
    deleted = Signal(object)  # the conversation's path, after its files were removed

    def __init__(
        self,
        folder: Path | None = None,
        current: Path | None = None,
        parent: QWidget | None = None,
        player: Player | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Conversation history")
        self.resize(900, 600)
        self.folder = Path(folder or history_dir())
        self.current = Path(current).resolve() if current else None
        self.player = player or open_with_system
        self.records: list[dict] = []  # the shown conversation's
        self.shown_path: Path | None = None
        self.audio: list[Path] = []  # the shown conversation's recordings, by link number
        self._jobs: list[tuple[_Job, QThread]] = []  # kept until Qt deletes them
        self._running = 0
        self._build()
        self.refresh()

    def _build(self) -> None:
        self.search = QLineEdit()
        self.search.setPlaceholderText("Filter by what was said")
        self.search.setAccessibleName("Search conversations")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self.filter)
        search_label = QLabel("&Search:")
        search_label.setBuddy(self.search)
        self.list = QListWidget()
        self.list.setAccessibleName("Saved conversations")
        self.list.setWordWrap(True)
        self.list.setSpacing(3)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.currentItemChanged.connect(self._selected)
        self.view = QTextBrowser()
        self.view.setAccessibleName("The selected conversation")
        self.view.setOpenLinks(False)
        self.view.anchorClicked.connect(self._play)
        self.status = QLabel()
        self.status.setAccessibleName("History status")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.export_button = QPushButton("&Export to Markdown…")
        self.export_button.clicked.connect(self.export)
        self.delete_button = QPushButton("&Delete")
        self.delete_button.clicked.connect(self.delete)
        self.folder_button = QPushButton("Open &folder")
        self.folder_button.clicked.connect(self.open_folder)
        closing = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        closing.rejected.connect(self.reject)
        for button in (self.export_button, self.delete_button, self.folder_button):
            button.setAccessibleName(button.text().replace("&", ""))
            button.setAutoDefault(False)
        self.export_button.setEnabled(False)
        self.delete_button.setEnabled(False)

        left = QWidget()
        column = QVBoxLayout(left)
        column.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(search_label)
        row.addWidget(self.search, 1)
        column.addLayout(row)
        column.addWidget(self.list, 1)
        split = QSplitter()
        split.addWidget(left)
        split.addWidget(self.view)
        split.setSizes([300, 600])
        buttons = QHBoxLayout()
        for button in (self.export_button, self.delete_button, self.folder_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(closing)
        layout = QVBoxLayout(self)
        layout.addWidget(split, 1)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        order = [
            self.search,
            self.list,
            self.view,
            self.export_button,
            self.delete_button,
            self.folder_button,
            closing,
        ]
        for first, second in itertools.pairwise(order):
            self.setTabOrder(first, second)

    # -- the worker threads ---------------------------------------------------------------
    def _start(self, work: Callable[[], object], what: str, done: Callable[[object], None]):
        self._jobs = [(j, t) for j, t in self._jobs if shiboken6.isValid(t)]  # the finished go
        thread = QThread(self)
        job = _Job(work, what)
        job.moveToThread(thread)
        thread.started.connect(job.run)
        job.done.connect(done)
        job.failed.connect(self.say)
        job.finished.connect(self._job_finished)
        job.finished.connect(thread.quit)
        job.finished.connect(job.deleteLater)
        thread.finished.connect(thread.deleteLater)
        self._jobs.append((job, thread))
        self._running += 1
        thread.start()

    @Slot()
    def _job_finished(self) -> None:
        self._running -= 1

    def busy(self) -> bool:
        """Some disk work is still under way (or its result is on its way)."""
        return self._running > 0

    def _stop(self) -> None:
        """Waits for the worker threads: none may outlive the dialog."""
        for _job, thread in self._jobs:
            if shiboken6.isValid(thread):
                thread.quit()
                thread.wait(5000)

    def done(self, result: int) -> None:
        self._stop()
        super().done(result)

    def closeEvent(self, event) -> None:
        self._stop()
        super().closeEvent(event)

    # -- the list -------------------------------------------------------------------------
    @Slot()
    def refresh(self) -> None:
        """Lists the folder again (in a worker thread)."""
        self.say("Reading the history…")
        self._start(
            functools.partial(list_conversations, self.folder),
            "The history could not be listed",
            self._listed,
        )

    @Slot(object)
    def _listed(self, infos: list[ConversationInfo]) -> None:
        self.list.clear()
        chosen = None
        for info in infos:
            item = QListWidgetItem(self._label(info))
            item.setData(Qt.ItemDataRole.UserRole, info)
            item.setToolTip(str(info.path))
            self.list.addItem(item)
            if self._is_current(info.path):
                chosen = item
        self.say("" if infos else f"No saved conversations yet (in {self.folder}).")
        self.filter()
        if chosen is not None and not chosen.isHidden():
            self.list.setCurrentItem(chosen)
        else:
            self._select_first_visible()
        self.listed.emit()

    def _label(self, info: ConversationInfo) -> str:
        turns = f"{info.turns} turn{'' if info.turns == 1 else 's'}"
        audio = " · audio" if info.has_audio else ""
        mark = f" {CURRENT}" if self._is_current(info.path) else ""
        return f"{info.title}\n{info.started:%Y-%m-%d %H:%M} · {turns}{audio}{mark}"

    def _is_current(self, path: Path) -> bool:
        return self.current is not None and path.resolve() == self.current

    def infos(self, visible_only: bool = False) -> list[ConversationInfo]:
        """The listed conversations, top to bottom."""
        items = [self.list.item(i) for i in range(self.list.count())]
        return [
            item.data(Qt.ItemDataRole.UserRole)
            for item in items
            if not (visible_only and item.isHidden())
        ]

    def selected(self) -> ConversationInfo | None:
        item = self.list.currentItem()
        if item is None or item.isHidden():
            return None
        return item.data(Qt.ItemDataRole.UserRole)

    @Slot()
    def filter(self) -> None:
        """Hides the conversations that do not contain the search box's words."""
        words = self.search.text().lower().split()
        for i in range(self.list.count()):
            item = self.list.item(i)
            info: ConversationInfo = item.data(Qt.ItemDataRole.UserRole)
            found = f"{info.title.lower()}\n{info.text}"
            item.setHidden(not all(word in found for word in words))
        current = self.list.currentItem()
        if current is None or current.isHidden():
            self._select_first_visible()

    def _select_first_visible(self) -> None:
        for i in range(self.list.count()):
            if not self.list.item(i).isHidden():
                self.list.setCurrentRow(i)
                return
        self.list.setCurrentItem(None)
        self._show_nothing()

    # -- the selected conversation --------------------------------------------------------
    @Slot()
    def _selected(self) -> None:
        info = self.selected()
        self.delete_button.setEnabled(info is not None and not self._is_current(info.path))
        self.export_button.setEnabled(False)
        if info is None:
            self._show_nothing()
            return
        self.view.setHtml("<p style='color:#777'>Loading…</p>")
        self._start(
            functools.partial(_read, info.path), f"{info.path.name} could not be read", self._loaded
        )

    def _show_nothing(self) -> None:
        self.records, self.shown_path, self.audio = [], None, []
        self.view.clear()
        self.export_button.setEnabled(False)
        self.delete_button.setEnabled(False)

    @Slot(object)
    def _loaded(self, result: tuple[Path, list[dict]]) -> None:
        path, records = result
        info = self.selected()
        if info is None or info.path != path:
            return  # another conversation was chosen meanwhile
        self.records, self.shown_path, self.audio = records, path, []
        self.view.setHtml(render(records, self.audio))
        self.export_button.setEnabled(True)
        self.shown.emit(path)

    @Slot(QUrl)
    def _play(self, url: QUrl) -> None:
        if url.scheme() != "audio" or not url.path().isdigit():
            return
        index = int(url.path())
        if index >= len(self.audio):
            return
        path = self.audio[index]
        if not path.is_file():
            self.say(f"The recording {path.name} is missing.")
            return
        try:
            played = self.player(path)
        except Exception as err:  # a broken player is a line, not a crash
            self.say(f"{path.name} could not be played: {type(err).__name__}: {err}")
            return
        if played is False:
            self.say(f"No program could play {path.name}.")

    # -- the buttons ----------------------------------------------------------------------
    @Slot()
    def export(self) -> None:
        info = self.selected()
        if info is None or info.path != self.shown_path:
            return
        suggested = str(Path.home() / f"{info.path.stem}.md")
        name, _ = QFileDialog.getSaveFileName(
            self, "Export to Markdown", suggested, "Markdown (*.md);;All files (*)"
        )
        if not name:
            return
        target = Path(name)
        if not target.suffix:
            target = target.with_suffix(".md")
        title = f"Conversation of {info.started:%Y-%m-%d %H:%M}"
        self._start(
            functools.partial(_export, self.records, title, target),
            f"The conversation could not be exported to {target}",
            self._exported,
        )

    @Slot(object)
    def _exported(self, target: Path) -> None:
        self.say(f"Exported to {target}")
        self.exported.emit(target)

    @Slot()
    def delete(self) -> None:
        info = self.selected()
        if info is None:
            return
        if self._is_current(info.path):
            self.say("This conversation is still being saved: it cannot be deleted.")
            return
        audio = " and its recordings" if info.has_audio else ""
        answer = QMessageBox.question(
            self,
            "Delete conversation",
            f"Delete the conversation “{info.title}” of {info.started:%Y-%m-%d %H:%M}{audio}? "
            "This cannot be undone.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        if answer != QMessageBox.StandardButton.Yes:
            return
        self.delete_button.setEnabled(False)
        self._start(
            functools.partial(_delete, info.path),
            f"{info.path.name} could not be deleted",
            self._deleted,
        )

    @Slot(object)
    def _deleted(self, path: Path) -> None:
        for i in range(self.list.count()):
            item = self.list.item(i)
            if item.data(Qt.ItemDataRole.UserRole).path == path:
                self.list.takeItem(i)  # the next one is selected and shown
                break
        self.say(f"Deleted {path.name}.")
        self.deleted.emit(path)

    @Slot()
    def open_folder(self) -> None:
        if not self.folder.is_dir():
            self.say(f"There is no history folder yet ({self.folder}).")
        elif not QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.folder))):
            self.say(f"The folder {self.folder} could not be opened.")

    @Slot(str)
    def say(self, message: str) -> None:
        """One line under the list: what happened, or what failed."""
        self.status.setText(message)
