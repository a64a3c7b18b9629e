"""The style side panel: how the assistant speaks (emotion, dialect, speaking rate,
role-play persona) and with whose voice. A change applies from the next reply.

The menus come from ``minmo_core.voice.styles.choices()``; entries the CosyVoice 2 release
was not trained on are marked experimental. The voice picker is filled by the window (the
default voice, the library's voices, and "Clone a voice…").
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from minmo_core.voice.styles import choices

SLOTS = (("emotion", "&Emotion"), ("dialect", "&Dialect"), ("rate", "Speaking &rate"),
         ("persona", "&Persona"))  # fmt: skip


class StylePanel(QWidget):
    """Emits ``changed`` with the style's names (None: unset) when a menu changes."""

    changed = Signal(dict)
    manage_voices = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("style-panel")
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        box = QGroupBox("How it speaks")
        form = QFormLayout(box)
        self.menus: dict[str, QComboBox] = {}
        menu_choices = choices()
        for slot, label in SLOTS:
            menu = QComboBox()
            menu.setAccessibleName(slot)
            menu.addItem("As it likes", None)
            for choice in menu_choices[slot]:
                text = f"{choice.en} (experimental)" if choice.experimental else choice.en
                menu.addItem(text, choice.value)
                # the words the voice model is given, for those who read them
                menu.setItemData(menu.count() - 1, choice.zh, Qt.ItemDataRole.ToolTipRole)
            menu.currentIndexChanged.connect(self._emit)
            caption = QLabel(label)
            caption.setBuddy(menu)
            form.addRow(caption, menu)
            self.menus[slot] = menu
        self.voice = QComboBox()
        self.voice.setAccessibleName("voice")
        self.voice.addItem("Default voice", None)
        self.voice.currentIndexChanged.connect(self._emit)
        caption = QLabel("&Voice")
        caption.setBuddy(self.voice)
        form.addRow(caption, self.voice)
        self.manage = QPushButton("&Manage voices…")
        self.manage.clicked.connect(self.manage_voices)
        form.addRow(self.manage)
        self.note = QLabel("Changes apply from the next reply.")
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: #777;")
        form.addRow(self.note)
        column.addWidget(box)
        column.addStretch(1)
        self._quiet = False

    def values(self) -> dict:
        out = {slot: menu.currentData() for slot, menu in self.menus.items()}
        out["voice"] = self.voice.currentData()
        return out

    def set_values(self, values: dict) -> None:
        """Select the named entries without emitting ``changed`` (unknown names: unset)."""
        self._quiet = True
        try:
            for slot, menu in self.menus.items():
                index = menu.findData(values.get(slot))
                menu.setCurrentIndex(max(0, index))
        finally:
            self._quiet = False

    def _emit(self, _index: int) -> None:
        if not self._quiet:
            self.changed.emit(self.values())
