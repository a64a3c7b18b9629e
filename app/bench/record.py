"""Benchmark tables: printed as aligned text, recorded as rows of docs/BENCHMARKS.md.

Rows go into the checkout's docs/BENCHMARKS.md only when the program runs from a checkout
(an installed copy has no such file to keep true), or wherever ``--record PATH`` says. A
rerun replaces the rows with the same key (date, machine, preset, ...) instead of adding
duplicates.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

import app

CHECKOUT = Path(app.__file__).resolve().parents[1]  # the repository root, when run from one
BENCHMARKS_MD = CHECKOUT / "docs" / "BENCHMARKS.md"


@dataclass(frozen=True)
class Table:
    section: str  # "## ..." heading in BENCHMARKS.md
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]]
    key: tuple[str, ...] = ("date", "machine", "preset")  # a rerun with these replaces a row

    def render(self) -> str:
        widths = [max(len(c), *(len(r[i]) for r in self.rows)) for i, c in enumerate(self.columns)]
        line = "  ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=True))
        body = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in self.rows]
        return "\n".join([line, "-" * len(line), *body])

    def row_key(self, row: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(row[self.columns.index(c)] for c in self.key)


def machine_name(device_type: str = "cpu", gpu_name: str | None = None) -> str:
    """The GPU's name, or the CPU model and torch's thread count."""
    if device_type == "cuda" and gpu_name:
        return gpu_name
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads"


def running_from_checkout() -> bool:
    """True when this code is a source checkout's (not an installed copy)."""
    return (CHECKOUT / ".git").exists() and BENCHMARKS_MD.is_file()


def _cells(line: str) -> tuple[str, ...]:
    return tuple(cell.strip() for cell in line.strip().strip("|").split("|"))


def record_rows(table: Table, path: Path) -> None:
    """Put the table's rows under its section of ``path`` (created if missing), replacing
    rows whose key equals a new row's key."""
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    rows = ["| " + " | ".join(r) + " |" for r in table.rows]
    new_keys = {table.row_key(r) for r in table.rows}
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.rstrip("\n").split("\n")
    if table.section not in lines:
        lines += ["", table.section, "", header, rule]
        insert_at = len(lines)
    else:
        start = lines.index(table.section)
        end = start + 1
        while end < len(lines) and not lines[end].startswith("## "):
            end += 1
        section = lines[start:end]
        if header in section:
            kept = []
            for line in section:
                cells = _cells(line) if line.startswith("|") else ()
                if len(cells) == len(table.columns) and table.row_key(cells) in new_keys:
                    continue  # the same run again: the new row replaces it
                kept.append(line)
            lines[start:end] = kept
            end = start + len(kept)
        insert_at = end
        while lines[insert_at - 1].strip() == "":
            insert_at -= 1
        if header not in section:  # the columns changed: a new table under the section
            lines[insert_at:insert_at] = ["", header, rule]
            insert_at += 3
    lines[insert_at:insert_at] = rows
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
