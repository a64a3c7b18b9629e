"""The style side panel: how the assistant speaks (emotion, dialect, speaking rate,
role-play persona, volume) and with whose voice. A change applies from the next reply.

The menus come from ``minmo_core.voice.styles.choices()``; entries the loaded CosyVoice
release (2 or 3: :meth:`StylePanel.set_backend`) was not trained on are marked experimental.
The voice picker is filled by the window (the default voice, the library's voices, and
"Clone a voice…").
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

from minmo_core.voice.styles import END_OF_PROMPT, VoiceStyle, choices, render_instruction

SLOTS = (("emotion", "&Emotion"), ("dialect", "&Dialect"), ("rate", "Speaking &rate"),
         ("persona", "&Persona"), ("volume", "Vol&ume"))  # fmt: skip


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
        for slot, label in SLOTS:
            menu = QComboBox()
            menu.setAccessibleName(slot)
            menu.addItem("As it likes", None)
            for choice in choices()[slot]:
                menu.addItem(choice.en, choice.value)
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
        self.cosyvoice = 2
        self.set_backend(2)

    def set_backend(self, cosyvoice: int | None) -> None:
        """Mark the entries the ``cosyvoice`` release (2 or 3; None keeps the last) was not
        trained on as experimental; every entry stays selectable on both."""
        if cosyvoice not in (2, 3):
            return
        self.cosyvoice = cosyvoice
        menus = choices(cosyvoice)
        for slot, menu in self.menus.items():
            for row, choice in enumerate(menus[slot], start=1):
                text = f"{choice.en} (experimental)" if choice.experimental else choice.en
                menu.setItemText(row, text)
                # the words the voice model is given, for those who read them
                words = choice.zh if cosyvoice == 2 else _cv3_words(slot, choice.value)
                menu.setItemData(row, words, Qt.ItemDataRole.ToolTipRole)

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


def _cv3_words(slot: str, value: str) -> str:
    """CosyVoice 3's sentence for one menu value (without <|endofprompt|>); "" for normal."""
    text = render_instruction(VoiceStyle.parse(**{slot: value}), cosyvoice=3)
    return text.removesuffix(END_OF_PROMPT)
