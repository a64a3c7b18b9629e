"""The conversation: user turns (the live partial transcript, then the final one with its
language, emotion and event tags as chips) and assistant turns streaming in, an interrupted
reply showing what was heard and, greyed after a cut marker, what was not."""

from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QScrollArea, QVBoxLayout, QWidget

QUIET_TAGS = {None, "", "neutral", "emo_unknown", "speech", "event_unk"}
CUT = "✂"


class TurnView(QFrame):
    """One side of one turn."""

    def __init__(self, role: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.role = role
        self.setObjectName(f"turn-{role}")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 6)
        who = QLabel("You" if role == "user" else "Assistant")
        who.setStyleSheet("font-weight: bold; color: #555;")
        layout.addWidget(who)
        self.text = QLabel("")
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.text.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(self.text)
        self.chips = QHBoxLayout()
        self.chips.addStretch(1)
        layout.addLayout(self.chips)
        self.plain = ""  # the text as written (the screen's), for tests and copying
        self.heard: str | None = None  # set when a reply was cut short
        background = "#eef4ff" if role == "user" else "#f6f6f6"
        self.setStyleSheet(f"#turn-{role} {{ background: {background}; border-radius: 8px; }}")

    def set_text(self, text: str, partial: bool = False) -> None:
        self.plain = text
        shown = html.escape(text)
        self.text.setText(f"<i style='color:#777'>{shown}…</i>" if partial else shown)

    def append(self, delta: str) -> None:
        self.set_text(self.plain + delta)

    def cut(self, heard: str) -> None:
        """An interrupted reply: the heard part as it was, the rest greyed after a marker."""
        self.heard = heard
        rest = self.plain[len(heard) :] if self.plain.startswith(heard) else self.plain
        self.text.setText(
            f"{html.escape(heard)} <b style='color:#c0392b'>{CUT}</b> "
            f"<span style='color:#aaa'>{html.escape(rest.lstrip())}</span>"
        )

    def set_tags(self, *tags: str | None) -> None:
        for tag in tags:
            if tag in QUIET_TAGS:
                continue
            chip = QLabel(str(tag))
            chip.setObjectName("chip")
            chip.setStyleSheet(
                "background: #dde6f7; border-radius: 6px; padding: 1px 6px; color: #334;"
            )
            self.chips.insertWidget(self.chips.count() - 1, chip)

    def tags(self) -> list[str]:
        return [
            self.chips.itemAt(i).widget().text()
            for i in range(self.chips.count())
            if self.chips.itemAt(i).widget() is not None
        ]


class ConversationView(QScrollArea):
    """Turns by id, each with its user and assistant side, newest at the bottom."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        inner = QWidget()
        self.column = QVBoxLayout(inner)
        self.column.addStretch(1)
        self.setWidget(inner)
        self.turns: dict[tuple[int, str], TurnView] = {}
        self.verticalScrollBar().rangeChanged.connect(self._follow)  # show the newest

    def _follow(self, _low: int, high: int) -> None:
        self.verticalScrollBar().setValue(high)

    def side(self, turn_id: int, role: str) -> TurnView:
        key = (turn_id, role)
        if key not in self.turns:
            view = TurnView(role)
            self.turns[key] = view
            self.column.insertWidget(self.column.count() - 1, view)
        return self.turns[key]

    def clear(self) -> None:
        for view in self.turns.values():
            view.setParent(None)
            view.deleteLater()
        self.turns.clear()
