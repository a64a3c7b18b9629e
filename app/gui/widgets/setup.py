"""The first-run setup screen: what fits this machine (the memory planner), then the pack
downloaded with progress, rate, ETA, cancel and resume, or a folder imported.

Everything that blocks (asking torch for the GPU's free memory, the network, hashing files)
runs in a worker QObject on a QThread; outcomes and the downloader's progress reach the
panel through queued signals. Progress is drawn at most 20 times a second, always ending
on the latest figures. A cancel keeps the ``.part`` files, so Resume (a download again)
fetches only the rest; every failure is one line in the panel.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from PySide6.QtCore import QObject, Qt, QThread, QTimer, Signal, Slot
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from minmo_core.errors import MinMoError, first_line
from minmo_core.manager.download import SOURCES, DownloadCancelled, Progress
from minmo_core.manager.imports import Imported
from minmo_core.manager.packs import Pack, all_packs, pack_releases
from minmo_core.manager.planner import GiB, Plan
from minmo_core.manager.store import ModelStore, release_status

SOURCE_TITLES = {"hub": "Hugging Face", "modelscope": "ModelScope"}
REDRAW_S = 0.05  # progress is drawn at most 20 times a second
READY = ("installed", "unverified")  # release_status values the app loads
QUEUED = Qt.ConnectionType.QueuedConnection


@dataclass(frozen=True)
class PackChoice:
    """One pack as the panel lists it: its download and what it needs on this machine."""

    name: str
    title: str
    download: int  # bytes, when nothing of it is there yet
    exact: bool  # False: an unrecorded LLM's weights are taken from its parameter count
    need: int  # bytes of memory at the standard precision on the planned device
    fits: str  # "fits", "too big", or the experimental precision that would fit


@dataclass(frozen=True)
class Survey:
    """The planner's answer for this machine, for the panel to show."""

    plan: Plan
    packs: list[PackChoice]  # largest LLM first
    note: str = ""  # why the machine itself could not be asked


@dataclass(frozen=True)
class ImportOutcome:
    imported: Imported
    pack: str | None  # the pack of the LLM now installed, None while there is none
    missing: list[str]  # that pack's releases still lacking


# -- the work, in worker threads ------------------------------------------------------------
def download_size(pack: Pack, store: ModelStore) -> tuple[int, bool]:
    """(bytes, exact) a pack's download fetches into an empty folder: pinned and locked
    files have known sizes; an unrecorded LLM's are its parameters in bfloat16, as the hub
    holds them (the tokenizer files are small beside them)."""
    total, exact = 0, True
    for release in pack_releases(pack):
        locked = store.locked(release)
        unknown = False
        for name in release.used_files:
            pin = release.pin(name)
            size = pin.size if pin else locked.get(name, {}).get("size")
            if size is None:
                unknown = True
            else:
                total += int(size)
        if unknown:
            total += release.parameters * 2
            exact = False
    return total, exact


def survey(memory: int | None, device: str | None, _on_progress=None) -> Survey:
    """The plan for ``memory`` bytes on ``device``; this machine answers what is None
    (``this_machine`` imports torch: a worker thread's call)."""
    from minmo_core.manager import planner

    note = ""
    if memory is None or device is None:
        try:
            found, kind = planner.this_machine()
        except Exception as err:  # a broken torch or driver: plan for the CPU
            found, kind = planner.available_ram(), "cpu"
            note = f"the GPU could not be asked ({first_line(err, 120)}), so this plans for the CPU"
        memory = found if memory is None else memory
        device = kind if device is None else device
    result = planner.plan(memory, device)
    store = ModelStore()
    choices = []
    for p in all_packs().values():
        if p.optional or p.llm is None:
            continue
        estimates = [e for e in result.candidates if e.pack == p.name]
        standard = next(e for e in estimates if not e.experimental)
        quantised = [e for e in estimates if e.experimental and e.total <= result.usable]
        if standard.total <= result.usable:
            fits = "fits"
        elif quantised:
            fits = f"too big; fits with {quantised[0].precision} weights (experimental)"
        else:
            fits = "too big"
        size, exact = download_size(p, store)
        choices.append(PackChoice(p.name, p.title, size, exact, standard.total, fits))
    return Survey(result, choices, note)


def download_pack(name: str, source: str, cancel: threading.Event, on_progress) -> list[str]:
    """Download pack ``name`` from ``source`` (a key of download.SOURCES); returns its
    releases still not installed afterwards (none: the pack is ready)."""
    from minmo_core.manager.download import download_releases
    from minmo_core.manager.packs import pack

    store = ModelStore()
    releases = pack_releases(pack(name))
    download_releases(releases, store, SOURCES[source](), on_progress=on_progress, cancel=cancel)
    return [r.name for r in releases if release_status(r, store) not in READY]


def import_release(folder: str, _on_progress=None) -> ImportOutcome:
    """Detect, verify and register the release in ``folder``; then which pack the installed
    LLM (if any) belongs to, and what that pack still lacks."""
    from minmo_core.manager.imports import import_folder
    from minmo_core.manager.store import installed_llm

    store = ModelStore()
    done = import_folder(folder, store)
    llm = installed_llm(store)
    if llm is None:
        return ImportOutcome(done, None, [])
    owners = [p for p in all_packs().values() if p.llm == llm.name]  # CosyVoice 2's first
    if not owners:
        return ImportOutcome(done, llm.name, [])

    missing = {  # (each release's status hashes its files: once per pack)
        p.name: [r.name for r in pack_releases(p) if release_status(r, store) not in READY]
        for p in owners
    }
    # the pack this machine holds whole, else the one the imports have gone furthest with
    owner = min(owners, key=lambda p: len(missing[p.name]))
    return ImportOutcome(done, owner.name, missing[owner.name])


class _Job(QObject):
    """One blocking call in a worker thread: ``work(on_progress)``; its outcome comes back
    as a signal, a failure as one line."""

    progress = Signal(object)  # download.Progress
    done = Signal(object)
    failed = Signal(str)
    cancelled = Signal()
    finished = Signal()

    def __init__(self, work: Callable[[Callable[[Progress], None]], object]) -> None:
        super().__init__()
        self.work = work

    @Slot()
    def run(self) -> None:
        try:
            self.done.emit(self.work(self.progress.emit))
        except DownloadCancelled:
            self.cancelled.emit()
        except MinMoError as err:
            self.failed.emit(first_line(err, 400))
        except Exception as err:  # anything else is a line in the panel, never a crash
            self.failed.emit(f"{type(err).__name__}: {first_line(err, 400)}")
        finally:
            self.finished.emit()


# -- the panel ------------------------------------------------------------------------------
class SetupPanel(QWidget):
    """The setup screen. ``memory_bytes`` and ``device`` ("cuda" or "cpu") plan for another
    machine; None asks this one. Emits ``installed`` with a pack's name once its download
    completes, or once an import leaves a chat LLM installed."""

    installed = Signal(str)

    def __init__(
        self,
        memory_bytes: int | None = None,
        device: str | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setAccessibleName("model setup")
        self.cancel_event = threading.Event()  # the running download's cancel
        self.survey: Survey | None = None
        self._jobs: list[tuple[QThread, _Job]] = []
        self._attempt: tuple[str, str] | None = None  # (pack, source) of the last download
        self._resumable = False
        self._busy = False
        self._latest: Progress | None = None
        self._drawn_at = float("-inf")
        self._redraw = QTimer(self)
        self._redraw.setSingleShot(True)
        self._redraw.timeout.connect(self._draw_progress)
        self._build()
        self._check(memory_bytes, device)

    def _build(self) -> None:
        column = QVBoxLayout(self)
        heading = QLabel("Set up MinMo Assistant")
        font = QFont(heading.font())
        font.setPointSizeF(font.pointSizeF() * 1.6)
        font.setBold(True)
        heading.setFont(font)
        column.addWidget(heading)
        intro = QLabel(
            "MinMo Assistant runs entirely on this computer: it listens, thinks and speaks "
            "with models that are downloaded once and checked against their published "
            "checksums. Pick a pack (the one recommended fits this machine), or import a "
            "folder of models you already have."
        )
        intro.setWordWrap(True)
        intro.setStyleSheet("color: #444; margin-bottom: 6px;")
        column.addWidget(intro)
        column.setSpacing(10)
        self.recommendation = self._label("the planner's recommendation", wrap=True)
        self.recommendation.setStyleSheet(
            "background: #f4f7fb; border: 1px solid #d5deea; border-radius: 6px; padding: 8px;"
        )
        self.recommendation.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        column.addWidget(self.recommendation)
        form = QFormLayout()
        self.packs = QComboBox()
        self.packs.setAccessibleName("model pack")
        self.sources = QComboBox()
        self.sources.setAccessibleName("download source")
        for key in SOURCES:
            self.sources.addItem(SOURCE_TITLES.get(key, key), key)
        for text, box in (("&Pack:", self.packs), ("&Source:", self.sources)):
            caption = QLabel(text)
            caption.setBuddy(box)
            form.addRow(caption, box)
        column.addLayout(form)
        row = QHBoxLayout()
        self.download_button = self._button("&Download", "download the pack", self.download)
        self.cancel_button = self._button("&Cancel", "cancel the download", self.cancel)
        self.resume_button = self._button("&Resume", "resume the download", self.resume)
        self.import_button = self._button(
            "&Import a folder…", "import a folder that holds a model", self.import_folder
        )
        for button in (self.download_button, self.cancel_button, self.resume_button):
            row.addWidget(button)
        row.addStretch(1)
        row.addWidget(self.import_button)
        column.addLayout(row)
        self.bar = QProgressBar()
        self.bar.setAccessibleName("download progress")
        self.bar.hide()
        column.addWidget(self.bar)
        details = QHBoxLayout()
        self.current = self._label("file being downloaded")
        self.rate = self._label("download rate")
        self.eta = self._label("time left")
        details.addWidget(self.current, 1)
        details.addWidget(self.rate)
        details.addWidget(self.eta)
        column.addLayout(details)
        self.status = self._label("setup status", wrap=True)
        column.addWidget(self.status)
        column.addStretch(1)
        self._show_buttons()

    def _label(self, name: str, wrap: bool = False) -> QLabel:
        label = QLabel()
        label.setTextFormat(Qt.TextFormat.PlainText)  # messages may hold "<": never markup
        label.setAccessibleName(name)
        label.setWordWrap(wrap)
        return label

    def _button(self, text: str, name: str, slot) -> QPushButton:
        button = QPushButton(text)
        button.setAccessibleName(name)
        button.clicked.connect(slot)
        return button

    def _show_buttons(self, downloading: bool = False) -> None:
        ready = self.survey is not None and self.packs.count() > 0
        self.download_button.setEnabled(ready and not self._busy)
        for widget in (self.packs, self.sources, self.import_button):
            widget.setEnabled(not self._busy)
        self.cancel_button.setVisible(downloading)
        self.cancel_button.setEnabled(downloading)
        self.resume_button.setVisible(self._resumable and not self._busy)

    # -- workers ------------------------------------------------------------------------------
    def _start(self, job: _Job) -> None:
        self._jobs = [(t, j) for t, j in self._jobs if _running(t)]
        thread = QThread(self)
        job.moveToThread(thread)
        thread.started.connect(job.run)
        job.finished.connect(thread.quit)
        job.finished.connect(job.deleteLater)
        thread.finished.connect(thread.deleteLater)
        self._jobs.append((thread, job))
        thread.start()

    def shutdown(self) -> None:
        """Cancel a running download and wait for every worker to end (the window calls
        this when it closes; the ``.part`` files stay to resume from)."""
        self.cancel_event.set()
        for thread, _job in self._jobs:
            if _running(thread):
                thread.quit()  # its loop ends as soon as the work returns
                thread.wait()
        self._jobs.clear()

    def closeEvent(self, event) -> None:
        self.shutdown()
        super().closeEvent(event)

    # -- the plan -----------------------------------------------------------------------------
    def _check(self, memory: int | None, device: str | None) -> None:
        self.recommendation.setText("Checking this machine…")
        job = _Job(partial(survey, memory, device))
        job.done.connect(self._surveyed, QUEUED)
        job.failed.connect(self._survey_failed, QUEUED)
        self._start(job)

    @Slot(object)
    def _surveyed(self, found: Survey) -> None:
        self.survey = found
        self.recommendation.setText(recommendation_text(found))
        choice = found.plan.choice
        for p in found.packs:
            mark = " · recommended" if choice is not None and p.name == choice.pack else ""
            self.packs.addItem(f"{p.title} ({p.name}): {_pack_line(p)}{mark}", p.name)
        pick = self.packs.findData(choice.pack) if choice is not None else self.packs.count() - 1
        self.packs.setCurrentIndex(max(pick, 0))
        self._show_buttons()

    @Slot(str)
    def _survey_failed(self, message: str) -> None:
        self.recommendation.setText(f"Could not plan for this machine: {message}")
        self._show_buttons()

    # -- downloads ----------------------------------------------------------------------------
    @Slot()
    def download(self) -> None:
        """Download the chosen pack from the chosen source."""
        name = self.packs.currentData()
        if name and not self._busy:
            self._download(name, self.sources.currentData())

    @Slot()
    def resume(self) -> None:
        """Download the last pack again: what its ``.part`` files hold is not fetched again."""
        if self._attempt is not None and not self._busy:
            self._download(*self._attempt)

    @Slot()
    def cancel(self) -> None:
        self.cancel_event.set()
        self.cancel_button.setEnabled(False)
        self.status.setText("Cancelling…")

    def _download(self, name: str, source: str) -> None:
        self._attempt, self._busy, self._resumable = (name, source), True, False
        cancel = self.cancel_event = threading.Event()
        self._latest = None
        self.bar.setRange(0, 0)  # busy until the first progress tells the total
        self.bar.show()
        for label in (self.current, self.rate, self.eta):
            label.clear()
        self.status.setText(f"Downloading {name} from {SOURCE_TITLES.get(source, source)}…")
        self._show_buttons(downloading=True)
        job = _Job(partial(download_pack, name, source, cancel))
        job.progress.connect(self.show_progress, QUEUED)
        job.done.connect(self._downloaded, QUEUED)
        job.failed.connect(self._download_failed, QUEUED)
        job.cancelled.connect(self._download_cancelled, QUEUED)
        self._start(job)

    @Slot(object)
    def show_progress(self, progress: Progress) -> None:
        """Show a download's progress: drawn at once when the last drawing is older than
        REDRAW_S, else when that time is up (the latest figures then)."""
        self._latest = progress
        wait = self._drawn_at + REDRAW_S - time.monotonic()
        if wait <= 0:
            self._draw_progress()
        elif not self._redraw.isActive():
            self._redraw.start(int(wait * 1000) + 1)

    @Slot()
    def _draw_progress(self) -> None:
        self._redraw.stop()
        p = self._latest
        if p is None:
            return
        self._drawn_at = time.monotonic()
        unit = 1024 if p.total >= 1 << 31 else 1  # a QProgressBar counts in 32-bit ints
        self.bar.setRange(0, max(p.total // unit, 1))
        self.bar.setValue(p.done // unit)
        self.bar.setFormat(f"%p%  ({_size(p.done)} of {_size(p.total)})")
        self.current.setText(f"{p.release}: {p.file}")
        self.rate.setText(f"{p.rate / 1e6:.1f} MB/s")
        self.eta.setText(f"{_clock(p.eta)} left" if p.eta is not None else "")

    def _download_ended(self, resumable: bool) -> None:
        self._draw_progress()  # the last figures, not the last drawn
        self._busy, self._resumable = False, resumable
        self.rate.clear()
        self.eta.clear()
        self._show_buttons()

    @Slot(object)
    def _downloaded(self, missing: list[str]) -> None:
        self._download_ended(resumable=bool(missing))
        name = self._attempt[0]
        if missing:
            self.status.setText(
                f"Download failed: {', '.join(missing)} of {name} is still incomplete"
            )
            return
        if self._latest is None:  # nothing was left to fetch
            self.bar.setRange(0, 1)
            self.bar.setValue(1)
        self.status.setText(f"Installed: {name} is ready")
        self.installed.emit(name)

    @Slot()
    def _download_cancelled(self) -> None:
        self._download_ended(resumable=True)
        kept = self._latest.done if self._latest is not None else 0
        self.status.setText(f"Cancelled: {_size(kept)} kept; Resume continues from there")

    @Slot(str)
    def _download_failed(self, message: str) -> None:
        self._download_ended(resumable=True)
        self.status.setText(f"Download failed: {message}")

    # -- imports ------------------------------------------------------------------------------
    @Slot()
    def import_folder(self) -> None:
        """Ask for a folder that already holds a release, then import it in a worker."""
        if self._busy:
            return
        folder = QFileDialog.getExistingDirectory(
            self, "Choose a folder that holds a model release"
        )
        if not folder:
            return
        self._busy = True
        self.status.setText(f"Importing {folder} (every file is checked)…")
        self._show_buttons()
        job = _Job(partial(import_release, folder))
        job.done.connect(self._imported, QUEUED)
        job.failed.connect(self._import_failed, QUEUED)
        self._start(job)

    @Slot(object)
    def _imported(self, outcome: ImportOutcome) -> None:
        self._busy = False
        self._show_buttons()
        done = outcome.imported
        text = (
            f"Imported {done.release.name}: verified against the {done.verified_by}, "
            f"registered at {done.folder}"
        )
        if outcome.pack is None:
            self.status.setText(f"{text}; a chat LLM is still needed (download or import one)")
            return
        still = f" ({', '.join(outcome.missing)} still to fetch)" if outcome.missing else ""
        self.status.setText(f"{text}. Installed: {outcome.pack}{still}")
        self.installed.emit(outcome.pack)

    @Slot(str)
    def _import_failed(self, message: str) -> None:
        self._busy = False
        self._show_buttons()
        self.status.setText(f"Import failed: {message}")


def recommendation_text(found: Survey) -> str:
    """The plan in plain words: the memory found, the device, the pack, its download and
    memory, and why."""
    result = found.plan
    where = "free GPU memory (CUDA)" if result.device == "cuda" else "available RAM (CPU)"
    lines = [
        f"This machine: {result.memory / GiB:.1f} GiB of {where}, "
        f"{result.usable / GiB:.1f} GiB usable by the models."
    ]
    if found.note:
        lines.append(f"Note: {found.note}.")
    choice = result.choice
    if choice is None:
        why = result.reason()
        lines.append(f"{why[0].upper()}{why[1:]}. Import a folder, or pick a pack anyway.")
        return "\n".join(lines)
    p = next(p for p in found.packs if p.name == choice.pack)
    lines.append(
        f"Recommended: {p.title} ({p.name}), a {_approx(p)} download that needs "
        f"{choice.total / GiB:.1f} GiB at {choice.precision}."
    )
    lines.append(f"Why: {result.reason()}.")
    extra = result.experimental
    if extra is not None:
        lines.append(
            f"Also possible: {extra.pack} with {extra.precision} weights "
            f"({extra.total / GiB:.1f} GiB), experimental."
        )
    return "\n".join(lines)


def _pack_line(p: PackChoice) -> str:
    return f"{_approx(p)} download, needs {p.need / GiB:.1f} GiB, {p.fits}"


def _approx(p: PackChoice) -> str:
    return _size(p.download) if p.exact else f"≈{_size(p.download)}"


def _size(n: float) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    if n >= 1e6:
        return f"{n / 1e6:.1f} MB"
    return f"{n / 1e3:.1f} KB"


def _clock(seconds: float) -> str:
    """m:ss (minutes beyond the hour too: 75:03)."""
    whole = max(round(seconds), 0)
    return f"{whole // 60}:{whole % 60:02d}"


def _running(thread: QThread) -> bool:
    try:
        return thread.isRunning()
    except RuntimeError:  # finished and deleted already
        return False


__all__ = ["PackChoice", "SetupPanel", "Survey", "recommendation_text", "survey"]
