"""A notice bar: one line naming what went wrong (or what to know), with an optional action
button ("Retry", "Settings…") and a close button. It never blocks the window."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QWidget


class NoticeBar(QFrame):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("notice")
        self.setStyleSheet(
            "#notice { background: #fff4e5; border: 1px solid #f0c36d; border-radius: 6px; }"
        )
        row = QHBoxLayout(self)
        row.setContentsMargins(8, 4, 4, 4)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.label.setAccessibleName("notice")
        row.addWidget(self.label, 1)
        self.action = QPushButton()
        self.action.hide()
        row.addWidget(self.action)
        close = QPushButton("✕")
        close.setFlat(True)
        close.setToolTip("Dismiss")
        close.setAccessibleName("dismiss notice")
        close.clicked.connect(self.hide)
        row.addWidget(close)
        self._callback: Callable[[], None] | None = None
        self.action.clicked.connect(self._act)
        self.hide()

    def show_text(
        self, text: str, action: str | None = None, callback: Callable[[], None] | None = None
    ) -> None:
        self.label.setText(text)
        self._callback = callback
        self.action.setVisible(action is not None)
        if action is not None:
            self.action.setText(action)
        self.show()

    def text(self) -> str:
        return self.label.text()

    def _act(self) -> None:
        callback = self._callback
        self.hide()
        if callback is not None:
            callback()
