"""The engine's state, large and coloured, with the microphone and output levels."""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QWidget

COLOURS = {
    "idle": "#7f8c8d",
    "listening": "#27ae60",
    "user speaking": "#2980b9",
    "thinking": "#f39c12",
    "speaking": "#8e44ad",
    "interrupted": "#c0392b",
}


class StateIndicator(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        self.label = QLabel()
        self.label.setMinimumWidth(150)
        layout.addWidget(self.label)
        self.mic = self._meter("microphone level")
        self.out = self._meter("output level")
        layout.addWidget(QLabel("mic"))
        layout.addWidget(self.mic)
        layout.addWidget(QLabel("out"))
        layout.addWidget(self.out)
        self.state = ""
        self.set_state("idle")

    def _meter(self, name: str) -> QProgressBar:
        bar = QProgressBar()
        bar.setRange(0, 60)  # -60 .. 0 dBFS
        bar.setTextVisible(False)
        bar.setMaximumHeight(10)
        bar.setAccessibleName(name)
        return bar

    def set_state(self, state: str) -> None:
        self.state = state
        colour = COLOURS.get(state, "#333")
        self.label.setText(state.capitalize())
        self.label.setStyleSheet(
            f"font-size: 16pt; font-weight: bold; color: white; background: {colour};"
            "border-radius: 8px; padding: 4px 12px;"
        )
        self.label.setAccessibleName(f"assistant state: {state}")

    def set_level(self, meter: QProgressBar, dbfs: float) -> None:
        meter.setValue(int(max(0.0, min(60.0, dbfs + 60.0))))
