"""Entry point of the desktop app (``minmo-assistant`` / ``python main.py`` / ``make run``).

It checks the device the models would run on (``MINMO_DEVICE``, which ``make run
DEVICE=cuda`` sets), says what is installed or which pack to fetch, and opens the window
(``app/gui``); without a display it says so in one line and points to ``minmo converse``.
``--no-window`` prints the command line's help instead; ``--self-test`` checks the install
headless (``app.self_test``) and exits 0 when it works.
"""

from __future__ import annotations

import os
import sys

from app.cli import DEBUG_ENV, build_parser, describe
from minmo_core.errors import MinMoError

ABOUT = (
    "MinMo Assistant: the window opens on a display; everything also works from the `minmo` "
    "command line (.venv/bin/minmo):\n"
)


def device_line() -> str:
    """Where the models will run, or MinMoError when the asked-for device is missing."""
    import torch

    from minmo_core.common.devices import resolve_device

    device = resolve_device(os.environ.get("MINMO_DEVICE") or "auto")
    if device.type == "cuda":
        return f"Models run on the GPU: {torch.cuda.get_device_name(device)}."
    return "Models run on the CPU (make run DEVICE=cuda for the GPU)."


def models_line() -> str:
    """What is installed, or which pack to fetch for this machine and how."""
    from minmo_core.manager.planner import plan, this_machine
    from minmo_core.manager.store import ModelStore, installed_llm

    llm = installed_llm()
    if llm is not None:
        return f"Installed LLM: {llm.name} (`minmo models list` shows the rest)."
    memory, device = this_machine()
    result = plan(memory, device)
    where = f"No models in {ModelStore().root} yet."
    if result.choice is None:
        return f"{where} {result.reason()}"
    return (
        f"{where} For this machine: {result.reason()}.\n"
        f"Fetch them with: .venv/bin/minmo models download {result.choice.pack}"
    )


def main() -> int:
    if "--self-test" in sys.argv[1:]:
        from app.self_test import run_checks

        debug = "--debug" in sys.argv[1:] or os.environ.get(DEBUG_ENV, "") not in ("", "0")
        return run_checks(debug=debug)
    try:
        line = device_line()
    except MinMoError as err:
        print(f"minmo-assistant: error: {describe(err)}", file=sys.stderr)
        return 2
    print(line)
    try:
        print(models_line())
    except MinMoError as err:  # a damaged lock or registry must not stop the app starting
        print(f"models: {describe(err)}")
    if "--no-window" in sys.argv[1:]:
        print(ABOUT)
        build_parser().print_help()
        return 0
    from app.gui.app import run

    sys.stdout.flush()
    quit_after = os.environ.get("MINMO_QUIT_AFTER_MS")  # smoke checks: open, then close
    return run(quit_after_ms=int(quit_after) if quit_after else None)


if __name__ == "__main__":
    sys.exit(main())
