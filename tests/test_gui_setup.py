"""The first-run setup panel, offscreen under pytest-qt, against the stand-in hub serving a
tiny pack (a few KB): the planner's recommendation, a download with progress that installs
the pack, a cancel that keeps the partial file and a resume that fetches only the rest, a
tampered file named in one line, the panel closed mid-download, and folder imports."""

from __future__ import annotations

import gc
import re
import threading
import time
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog

from app.gui.widgets.setup import REDRAW_S, SetupPanel
from minmo_core.manager import download, planner
from minmo_core.manager.download import DownloadCancelled, Progress
from minmo_core.manager.packs import all_packs
from minmo_core.manager.planner import GiB, plan
from minmo_core.manager.store import ModelStore, release_status
from tests.hub_server import TINY_LLM_SHAPE, FakeHub, add_pack, serving, tiny_release

TIMEOUT_MS = 60_000
PACK = "tiny"
WEIGHTS = "tiny-weights.bin"
HELD = 2000  # bytes of the weights the hub sends before it holds the rest back
EARS_FILES = {"ears.yaml": b"frontend: fbank\n", "ears.bin": bytes(range(256)) * 12}
LLM_FILES = {"tiny-config.json": b'{"hidden_size": 64}', WEIGHTS: bytes(range(250, 0, -1)) * 20}
EARS_PART = {"name": "ears", "parameters": 1000, "gpu_dtype": "float32"}
EARS = tiny_release(EARS_FILES, name="Tiny-Ears", repo="demo/Tiny-Ears", kind="sensevoice",
                    pinned=True, parameters=1000, modelscope="demo/Tiny-Ears",
                    parts=[EARS_PART])  # fmt: skip
LLM = tiny_release(LLM_FILES, llm=TINY_LLM_SHAPE, parameters=len(LLM_FILES[WEIGHTS]) // 2,
                   modelscope="demo/Tiny-Instruct")  # fmt: skip
TOTAL = sum(len(c) for c in (*EARS_FILES.values(), *LLM_FILES.values()))
# what the download fetches before the weights: the ears' files, then the LLM's config
BEFORE_WEIGHTS = TOTAL - len(LLM_FILES[WEIGHTS])


@pytest.fixture
def panels(qtbot):
    """Setup panels for a test. As in the app, no cycle collection runs while they live (a
    worker thread's collection could destroy Qt objects off the GUI thread)."""
    gc.collect()
    gc.disable()
    made = []

    def make(*args, **kwargs) -> SetupPanel:
        panel = SetupPanel(*args, **kwargs)
        qtbot.addWidget(panel)
        panel.show()
        made.append(panel)
        return panel

    yield make
    for panel in made:  # closed (workers ended) and deleted here, on the GUI thread
        panel.close()
        panel.deleteLater()
    qtbot.wait(20)
    gc.enable()
    gc.collect()


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The tiny pack known to the app and served by the stand-in hub; an empty models
    folder."""
    monkeypatch.setenv("MINMO_MODELS_DIR", str(tmp_path / "models"))
    add_pack(monkeypatch, PACK, [EARS, LLM])
    with serving(monkeypatch, {EARS.repo_id: dict(EARS_FILES), LLM.repo_id: dict(LLM_FILES)}) as s:
        yield s


def ready(make, qtbot) -> SetupPanel:
    """A panel planned for a CPU with 8 GiB free, the tiny pack chosen."""
    panel = make(8 * GiB, "cpu")
    qtbot.waitUntil(panel.download_button.isEnabled, timeout=TIMEOUT_MS)
    panel.packs.setCurrentIndex(panel.packs.findData(PACK))
    return panel


def click(qtbot, button) -> None:
    assert button.isVisible() and button.isEnabled(), button.text()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def part_file() -> Path:
    return ModelStore().staging(LLM) / f"{WEIGHTS}.part"


def installed_here() -> bool:
    store = ModelStore()
    return all(release_status(r, store) == "installed" for r in (EARS, LLM))


@pytest.mark.parametrize(("memory", "device"), [(12 * GiB, "cuda"), (16 * GiB, "cpu")])
def test_the_recommendation_is_the_planners_for_the_machine(panels, qtbot, memory, device):
    panel = panels(memory, device)
    qtbot.waitUntil(lambda: panel.survey is not None, timeout=TIMEOUT_MS)
    expected = plan(memory, device)
    text = panel.recommendation.text()
    assert f"This machine: {memory / GiB:.1f} GiB of" in text
    assert ("CUDA" if device == "cuda" else "CPU") in text
    title = all_packs()[expected.choice.pack].title
    assert f"Recommended: {title} ({expected.choice.pack}), a ≈" in text
    assert f"needs {expected.choice.total / GiB:.1f} GiB at {expected.choice.precision}" in text
    assert expected.reason() in text
    assert panel.packs.currentData() == expected.choice.pack  # preselected
    listed = {panel.packs.itemData(i): panel.packs.itemText(i) for i in range(panel.packs.count())}
    assert list(listed) == [p.name for p in all_packs().values() if not p.optional]
    for estimate in expected.candidates:
        if estimate.experimental:
            continue
        fits = estimate.total <= expected.usable
        line = listed[estimate.pack]
        assert f"needs {estimate.total / GiB:.1f} GiB, " in line and "GB download" in line
        assert line.endswith(("fits", "fits · recommended")) == fits, line


def test_this_machine_is_asked_in_a_worker_while_the_panel_says_so(panels, qtbot, monkeypatch):
    asked, answer, threads = threading.Event(), threading.Event(), []

    def this_machine() -> tuple[int, str]:
        threads.append(threading.current_thread())
        asked.set()
        answer.wait(TIMEOUT_MS / 1000)
        return 24 * GiB, "cuda"

    monkeypatch.setattr(planner, "this_machine", this_machine)
    panel = panels()
    assert panel.recommendation.text() == "Checking this machine…"
    qtbot.waitUntil(asked.is_set, timeout=TIMEOUT_MS)
    assert not panel.download_button.isEnabled()
    answer.set()
    qtbot.waitUntil(lambda: panel.survey is not None, timeout=TIMEOUT_MS)
    assert threads[0] is not threading.main_thread()
    text = panel.recommendation.text()
    assert "24.0 GiB of free GPU memory (CUDA)" in text
    assert f"({plan(24 * GiB, 'cuda').choice.pack})" in text


def test_download_shows_its_progress_and_installs_the_pack(panels, qtbot, hub: FakeHub):
    panel = ready(panels, qtbot)
    drawn: list[int] = []
    panel.bar.valueChanged.connect(drawn.append)
    with qtbot.waitSignal(panel.installed, timeout=TIMEOUT_MS) as blocker:
        click(qtbot, panel.download_button)
        assert panel.cancel_button.isVisible() and not panel.download_button.isEnabled()
    assert blocker.args == [PACK]
    assert panel.bar.maximum() == TOTAL and panel.bar.value() == TOTAL and drawn[-1] == TOTAL
    assert panel.current.text() == f"{LLM.name}: {WEIGHTS}"  # the last file fetched
    assert panel.status.text() == f"Installed: {PACK} is ready"
    assert hub.served == {n: len(c) for n, c in (EARS_FILES | LLM_FILES).items()}
    assert installed_here()
    assert not panel.cancel_button.isVisible() and not panel.resume_button.isVisible()


def test_the_source_choice_downloads_from_modelscope(panels, qtbot, hub, monkeypatch):
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", hub.url)
    panel = ready(panels, qtbot)
    panel.sources.setCurrentIndex(panel.sources.findData("modelscope"))
    assert panel.sources.currentText() == "ModelScope"
    with qtbot.waitSignal(panel.installed, timeout=TIMEOUT_MS):
        click(qtbot, panel.download_button)
    assert hub.requests and all(p.startswith("/api/v1/models/") for p in hub.requests)
    assert installed_here()


def test_cancel_keeps_the_part_file_and_resume_fetches_only_the_rest(panels, qtbot, hub):
    weights = len(LLM_FILES[WEIGHTS])
    hub.hold_after[WEIGHTS] = HELD
    panel = ready(panels, qtbot)
    installed: list[str] = []
    panel.installed.connect(installed.append)
    click(qtbot, panel.download_button)
    qtbot.waitUntil(lambda: panel.bar.value() == BEFORE_WEIGHTS + HELD, timeout=TIMEOUT_MS)
    assert panel.current.text() == f"{LLM.name}: {WEIGHTS}"
    assert re.fullmatch(r"\d+\.\d MB/s", panel.rate.text())
    assert re.fullmatch(r"\d+:\d\d left", panel.eta.text())
    click(qtbot, panel.cancel_button)  # the hub holds the rest back until now
    assert panel.status.text() == "Cancelling…"
    hub.go_on.set()
    qtbot.waitUntil(lambda: panel.status.text().startswith("Cancelled"), timeout=TIMEOUT_MS)
    kept = f"{(BEFORE_WEIGHTS + HELD) / 1e3:.1f} KB"
    assert panel.status.text() == f"Cancelled: {kept} kept; Resume continues from there"
    assert part_file().stat().st_size == HELD
    assert not installed and not installed_here()
    assert panel.resume_button.isVisible() and not panel.cancel_button.isVisible()
    qtbot.waitUntil(lambda: hub.served[WEIGHTS] == weights, timeout=TIMEOUT_MS)  # all sent
    hub.served.clear()
    with qtbot.waitSignal(panel.installed, timeout=TIMEOUT_MS):
        click(qtbot, panel.resume_button)
    assert hub.served == {WEIGHTS: weights - HELD}  # nothing fetched twice
    llm_bytes = sum(len(c) for c in LLM_FILES.values())  # the ears were installed already
    assert panel.bar.value() == panel.bar.maximum() == llm_bytes
    assert installed == [PACK] and installed_here()
    assert (ModelStore().folder(LLM) / WEIGHTS).read_bytes() == LLM_FILES[WEIGHTS]


def test_a_tampered_file_is_one_line_naming_it_and_nothing_is_installed(panels, qtbot, hub):
    hub.tamper[WEIGHTS] = LLM_FILES[WEIGHTS][::-1]  # the size it should be, other bytes
    panel = ready(panels, qtbot)
    installed: list[str] = []
    panel.installed.connect(installed.append)
    click(qtbot, panel.download_button)
    qtbot.waitUntil(lambda: panel.status.text().startswith("Download failed"), timeout=TIMEOUT_MS)
    line = panel.status.text()
    assert f"{WEIGHTS} of {LLM.name} is not the expected file" in line and "\n" not in line
    assert not installed and not installed_here() and not part_file().exists()
    assert panel.resume_button.isVisible() and panel.download_button.isEnabled()
    hub.tamper.clear()  # the mirror is fixed: Resume completes the pack
    with qtbot.waitSignal(panel.installed, timeout=TIMEOUT_MS):
        click(qtbot, panel.resume_button)
    assert installed == [PACK] and installed_here()


def test_closing_the_panel_mid_download_cancels_it_and_waits(panels, qtbot, hub, monkeypatch):
    ended: list[BaseException | None] = []
    real = download.download_releases

    def recorded(*args, **kwargs):
        try:
            result = real(*args, **kwargs)
        except BaseException as err:
            ended.append(err)
            raise
        ended.append(None)
        return result

    monkeypatch.setattr(download, "download_releases", recorded)
    hub.hold_after[WEIGHTS] = HELD
    panel = ready(panels, qtbot)
    click(qtbot, panel.download_button)
    qtbot.waitUntil(lambda: panel.bar.value() == BEFORE_WEIGHTS + HELD, timeout=TIMEOUT_MS)
    cancel = panel.cancel_event

    def let_go() -> None:  # the hub sends the rest once the close has asked to cancel
        if cancel.wait(TIMEOUT_MS / 1000):
            hub.go_on.set()

    helper = threading.Thread(target=let_go, daemon=True)
    helper.start()
    panel.close()  # returns once the worker has ended
    assert len(ended) == 1 and isinstance(ended[0], DownloadCancelled)
    assert part_file().stat().st_size == HELD and not installed_here()
    helper.join(TIMEOUT_MS / 1000)


def test_progress_is_drawn_at_most_every_redraw_interval_and_ends_on_the_latest(panels, qtbot):
    panel = panels(8 * GiB, "cpu")
    drawn: list[int] = []
    panel.bar.valueChanged.connect(drawn.append)
    start = time.monotonic()
    for done in range(1, 1001):  # as a fast download's callbacks would arrive
        panel.show_progress(Progress("Tiny-Instruct", WEIGHTS, done, 1000, 2.5e6, 65.0))
    elapsed = time.monotonic() - start
    assert len(drawn) <= 3 + elapsed / REDRAW_S
    qtbot.waitUntil(lambda: panel.bar.value() == 1000, timeout=TIMEOUT_MS)
    assert panel.rate.text() == "2.5 MB/s" and panel.eta.text() == "1:05 left"


def test_importing_a_folder_of_a_release_installs_its_llm(
    panels, qtbot, hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "Tiny-Instruct copy"
    folder.mkdir()
    for name, content in LLM_FILES.items():
        (folder / name).write_bytes(content)
    chosen = []

    def choose(*args, **kwargs) -> str:
        chosen.append(args)
        return str(folder)

    monkeypatch.setattr(QFileDialog, "getExistingDirectory", choose)
    panel = ready(panels, qtbot)
    with qtbot.waitSignal(panel.installed, timeout=TIMEOUT_MS) as blocker:
        click(qtbot, panel.import_button)
    assert chosen and blocker.args == [PACK]
    line = panel.status.text()
    assert line.startswith(f"Imported {LLM.name}: verified against the hub, registered at")
    assert line.endswith(f"Installed: {PACK} ({EARS.name} still to fetch)")
    store = ModelStore()
    assert store.imported(LLM) and store.folder(LLM) == folder.resolve()
    assert panel.download_button.isEnabled() and panel.import_button.isEnabled()


def test_importing_an_empty_folder_shows_why_in_the_panel(
    panels, qtbot, hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args, **kwargs: str(empty))
    panel = ready(panels, qtbot)
    installed: list[str] = []
    panel.installed.connect(installed.append)
    click(qtbot, panel.import_button)
    qtbot.waitUntil(lambda: panel.status.text().startswith("Import failed"), timeout=TIMEOUT_MS)
    line = panel.status.text()
    assert "does not hold one release the app knows" in line and "\n" not in line
    assert not installed and panel.import_button.isEnabled()


def test_an_import_names_the_pack_of_that_llm_the_machine_holds_most_of(
    hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two packs share the LLM (as minmo-7b and minmo-7b-cv3 do): the import names the one
    with less still to fetch, whatever the order they are listed in."""
    from app.gui.widgets.setup import import_release
    from minmo_core.manager import packs as known_packs
    from minmo_core.manager.packs import Pack

    voice = tiny_release({"voice.bin": b"v" * 64}, name="Tiny-Voice", repo="demo/Tiny-Voice",
                         kind="cosyvoice3")  # fmt: skip
    add_pack(monkeypatch, "tiny-cv3", [EARS, LLM, voice])
    both = dict(known_packs.all_packs())
    first = {"tiny-cv3": both.pop("tiny-cv3"), **both}  # the larger set listed first
    monkeypatch.setattr(known_packs, "_packs", lambda: first)
    assert isinstance(first[PACK], Pack) and list(first).index("tiny-cv3") < list(first).index(PACK)
    folder = tmp_path / "llm"
    folder.mkdir()
    for name, content in LLM_FILES.items():
        (folder / name).write_bytes(content)
    outcome = import_release(str(folder))
    assert (outcome.pack, outcome.missing) == (PACK, [EARS.name])
