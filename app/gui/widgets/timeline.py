"""The duplex timeline: two lanes scrolling in real time, the user above and the assistant
below, with the VAD's speech spans, the turn-taking decisions, barge-ins, and each turn's
latency drawn as a gap. Clicking a turn shows its stage timings below the lanes.

It paints what ``TimelineModel`` holds; ``feed`` is called on the GUI thread for every event.
Repaints are coalesced to the frame timer (at most 30 a second), so a burst of events costs
one paint.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from PySide6.QtCore import QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QPainter, QPen
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from app.gui.timeline import TimelineModel

USER = QColor("#2980b9")
ASSISTANT = QColor("#8e44ad")
GAP = QColor("#f39c12")
MARKER_COLOURS = {
    "decision": QColor("#27ae60"),
    "typed": QColor("#27ae60"),
    "barge-in": QColor("#e67e22"),
    "false barge-in": QColor("#7f8c8d"),
    "cut": QColor("#c0392b"),
    "stop": QColor("#c0392b"),
}
LEFT = 78  # the lane names' column, in pixels


class TimelineCanvas(QWidget):
    """The lanes themselves."""

    turn_clicked = Signal(int)

    def __init__(self, model: TimelineModel, clock: Callable[[], float], parent=None) -> None:
        super().__init__(parent)
        self.model, self.clock = model, clock
        self.window_s = 20.0  # seconds across the lanes; the wheel zooms 5..120 s
        self.selected: int | None = None
        self.setMinimumHeight(128)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAccessibleName("duplex timeline")
        self.setToolTip("Click a turn for its stage timings; the wheel zooms")
        self._dirty = True
        self._frame = QTimer(self)
        self._frame.timeout.connect(self._tick)
        self._frame.start(33)

    def mark_dirty(self) -> None:
        self._dirty = True

    def _live(self) -> bool:
        """Something is moving: a span still open or audio still to play."""
        now = self.clock()
        m = self.model
        return bool(
            (m.user and m.user[-1].end is None)
            or (m.assistant and (m.assistant[-1].end or 0) > now - self.window_s)
            or (m.markers and m.markers[-1].t > now - self.window_s)
        )

    def _tick(self) -> None:
        if (self._dirty or self._live()) and self.isVisible():
            self._dirty = False
            self.update()

    # -- geometry ---------------------------------------------------------------------------
    def x_of(self, t: float, now: float) -> float:
        width = max(1, self.width() - LEFT - 8)
        return LEFT + width * (1 - (now - t) / self.window_s)

    def t_of(self, x: float, now: float) -> float:
        width = max(1, self.width() - LEFT - 8)
        return now - (1 - (x - LEFT) / width) * self.window_s

    def lanes(self) -> tuple[QRectF, QRectF]:
        h = self.height()
        lane = max(18.0, (h - 44) / 2)
        user = QRectF(LEFT, 8, self.width() - LEFT - 8, lane)
        assistant = QRectF(LEFT, h - 22 - lane, self.width() - LEFT - 8, lane)
        return user, assistant

    # -- painting ---------------------------------------------------------------------------
    def paintEvent(self, _event) -> None:
        now = self.clock()
        m = self.model
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), QColor("#fbfbfd"))
        user, assistant = self.lanes()
        small = QFont(self.font())
        small.setPointSizeF(max(7.0, small.pointSizeF() * 0.85))
        p.setFont(small)
        for rect, name in ((user, "You"), (assistant, "Assistant")):
            p.fillRect(rect, QColor("#f0f2f6"))
            p.setPen(QColor("#444"))
            p.drawText(QRectF(6, rect.top(), LEFT - 10, rect.height()),
                       Qt.AlignmentFlag.AlignVCenter, name)  # fmt: skip
        # the seconds ruler
        p.setPen(QPen(QColor("#ccc"), 1))
        step = 1 if self.window_s <= 20 else 5 if self.window_s <= 60 else 10
        second = int(now) - int(now) % step
        while self.x_of(second, now) > LEFT:
            x = self.x_of(second, now)
            p.drawLine(int(x), int(user.top()), int(x), int(assistant.bottom()))
            second -= step
        p.setPen(QColor("#888"))
        p.drawText(QRectF(LEFT, self.height() - 18, 200, 16), Qt.AlignmentFlag.AlignLeft,
                   f"{self.window_s:.0f} s")  # fmt: skip
        left = now - self.window_s
        # latency gaps between the lanes, their seconds written inside
        band_top, band_h = user.bottom() + 2, assistant.top() - user.bottom() - 4
        for gap in m.gaps.values():
            if gap.end < left:
                continue
            x0, x1 = self.x_of(gap.start, now), self.x_of(gap.end, now)
            band = QRectF(x0, band_top, max(2.0, x1 - x0), band_h)
            colour = QColor(GAP)
            colour.setAlpha(90 if gap.turn_id != self.selected else 170)
            p.fillRect(band, colour)
            p.setPen(QColor("#7a4500"))
            label = f"{gap.seconds:.2f} s"
            inside = p.fontMetrics().horizontalAdvance(label) + 4 < x1 - x0
            at = x0 + 2 if inside else x1 + 3  # a narrow gap: its seconds just after it
            p.drawText(QRectF(at, band_top, 80, band_h), Qt.AlignmentFlag.AlignVCenter, label)
        # speech spans
        for spans, rect, colour in ((m.user, user, USER), (m.assistant, assistant, ASSISTANT)):
            for span in spans:
                end = span.until(now)
                if end < left:
                    continue
                x0, x1 = self.x_of(span.start, now), self.x_of(min(end, now), now)
                if x1 <= x0:
                    continue
                box = QRectF(x0, rect.top() + 3, x1 - x0, rect.height() - 6)
                fill = QColor(colour)
                if span.turn_id and span.turn_id == self.selected:
                    fill = fill.darker(130)
                p.setPen(Qt.PenStyle.NoPen)
                p.setBrush(fill)
                p.drawRoundedRect(box, 4, 4)
        # decisions (labelled at the top of the user's lane) and barge-ins (at the bottom of
        # the assistant's), each label on the first line where it overlaps no other
        metrics = p.fontMetrics()
        line_h = metrics.height()
        taken: dict[float, float] = {}  # a line's y -> where its last label ends
        shown = [mk for mk in sorted(m.markers, key=lambda mk: mk.t) if mk.t >= left]
        for marker in shown:  # the lines first, so that no line crosses a label
            x = self.x_of(marker.t, now)
            p.setPen(QPen(MARKER_COLOURS.get(marker.kind, QColor("#333")), 2))
            p.drawLine(int(x), int(user.top()), int(x), int(assistant.bottom()))
        for marker in shown:
            x = self.x_of(marker.t, now)
            p.setPen(MARKER_COLOURS.get(marker.kind, QColor("#333")))
            decision = marker.kind in ("decision", "typed")
            lines = (
                [user.top() + 1 + i * line_h for i in range(2)]
                if decision
                else [assistant.bottom() - line_h * (i + 1) for i in range(2)]
            )
            width = metrics.horizontalAdvance(marker.label) + 6
            y = next((y for y in lines if taken.get(y, -1e9) < x), None)
            if y is None:
                continue  # no room: the line says it, the click tells the rest
            taken[y] = x + width
            backdrop = QRectF(x + 2, y, width, line_h)
            p.fillRect(backdrop, QColor(251, 251, 253, 220))
            p.drawText(backdrop.adjusted(2, 0, 0, 0), Qt.AlignmentFlag.AlignLeft,
                       marker.label)  # fmt: skip
        p.end()

    # -- input ------------------------------------------------------------------------------
    def mousePressEvent(self, event) -> None:
        t = self.t_of(event.position().x(), self.clock())
        turn = self.model.turn_at(t)
        if turn is not None:
            self.select(turn)

    def select(self, turn: int) -> None:
        self.selected = turn
        self.mark_dirty()
        self.turn_clicked.emit(turn)

    def wheelEvent(self, event) -> None:
        factor = 0.8 if event.angleDelta().y() > 0 else 1.25
        self.window_s = min(120.0, max(5.0, self.window_s * factor))
        self.mark_dirty()

    def keyPressEvent(self, event) -> None:  # keyboard: +/- zoom, Left/Right pick a turn
        key = event.key()
        turns = sorted(self.model.gaps)
        if key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.window_s = max(5.0, self.window_s * 0.8)
        elif key == Qt.Key.Key_Minus:
            self.window_s = min(120.0, self.window_s * 1.25)
        elif key in (Qt.Key.Key_Left, Qt.Key.Key_Right) and turns:
            current = turns.index(self.selected) if self.selected in turns else len(turns)
            step = -1 if key == Qt.Key.Key_Left else 1
            self.select(turns[max(0, min(len(turns) - 1, current + step))])
        else:
            super().keyPressEvent(event)
            return
        self.mark_dirty()


class DuplexTimeline(QWidget):
    """The lanes and, below them, the clicked turn's stage timings."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, parent=None) -> None:
        super().__init__(parent)
        self.model = TimelineModel()
        self.clock = clock
        self.canvas = TimelineCanvas(self.model, clock)
        self.details = QLabel("Click a turn on the timeline for its stage timings.")
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details.setStyleSheet("color: #333; padding: 2px 4px;")
        self.details.setAccessibleName("stage timings of the selected turn")
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.canvas, 1)
        column.addWidget(self.details)
        self.canvas.turn_clicked.connect(self.show_turn)

    def feed(self, event: object) -> None:
        if self.model.feed(event, self.clock()):
            self.canvas.mark_dirty()
            if type(event).__name__ == "TurnTimings" and event.turn_id == self.canvas.selected:
                self.show_turn(event.turn_id)

    def show_turn(self, turn: int) -> None:
        stages = self.model.stages.get(turn)
        gap = self.model.gaps.get(turn)
        if stages is None:
            latency = f": {gap.seconds:.2f} s to the first audio" if gap else ""
            self.details.setText(f"Turn {turn}{latency} (stage timings when it ends)")
            return
        self.details.setText("   ·   ".join(stages.lines()))
