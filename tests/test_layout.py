"""The layout's rules: the library never reaches into the application or Qt, and the
command line runs from every entry point."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

FORBIDDEN = ("app", "PySide6", "qasync")  # the library stays usable without the app or Qt


def forbidden_imports(package: Path, root: Path = REPO) -> list[str]:
    """``file:line module`` for every import of a forbidden top-level package, wherever it
    sits in the file (module level, inside a function, under ``if TYPE_CHECKING``)."""
    found = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute | ast.Name)
                and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                modules = [str(node.args[0].value)]
            else:
                continue
            for module in modules:
                if module.split(".")[0] in FORBIDDEN:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {module}")
    return found


def test_minmo_core_imports_neither_the_app_nor_qt() -> None:
    assert forbidden_imports(REPO / "minmo_core") == []


def test_the_import_rule_catches_an_import_inside_a_function(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "ok.py").write_text("import numpy\nfrom minmo_core.errors import MinMoError\n")
    (package / "bad.py").write_text("def f():\n    from app.cli import main\n    import PySide6\n")
    found = [line.rsplit(" ", 1)[1] for line in forbidden_imports(package, tmp_path)]
    assert found == ["app.cli", "PySide6"]


def test_minmo_core_top_level_holds_only_subpackages_config_and_errors() -> None:
    loose = sorted(p.name for p in (REPO / "minmo_core").glob("*.py"))
    assert loose == ["__init__.py", "config.py", "errors.py"]


def test_the_command_line_runs_as_a_module_and_from_main_py() -> None:
    for argv in (
        [sys.executable, "-m", "app.cli", "--help"],
        [sys.executable, "-m", "app", "--no-window"],
    ):
        done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "transcribe" in done.stdout


def test_the_window_never_imports_torch_on_the_gui_thread() -> None:
    """Importing the window's modules loads no torch: the models load in worker threads."""
    code = (
        "import sys; import app.gui.app, app.gui.window, app.gui.session, app.gui.settings; "
        "import app.gui.widgets.conversation, app.gui.widgets.state; "
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, check=True)  # fmt: skip
    assert done.stdout.strip() == "False"
