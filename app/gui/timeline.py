"""What the duplex timeline draws, built from engine and audio events (no Qt): the user's
speech as the VAD heard it, the assistant's speech as it was played, the turn-taking
decisions, the barge-ins, and each turn's latency from the end of the user's speech to the
first audio, refined by the engine's stage timings when the turn ends.

Times are seconds on ``time.monotonic()``. Engine events carry it (``t``); the audio path's
events carry the stream clock, which need not share its origin, so they are placed at the
moment they arrive (``now``), a few milliseconds late at most; a VAD end is placed
``duration`` after its start.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

OUTPUT_RATE = 24000  # the assistant's audio (AssistantAudio)


@dataclass
class Span:
    start: float
    end: float | None = None  # None: still going
    turn_id: int = 0

    def until(self, now: float) -> float:
        return now if self.end is None else self.end


@dataclass(frozen=True)
class Marker:
    t: float
    kind: str  # "decision", "barge-in", "false barge-in", "cut", "stop"
    label: str
    turn_id: int = 0


@dataclass
class Gap:
    """A turn's latency: from the end of the user's speech (or a typed message) to the
    first audio of the reply."""

    turn_id: int
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class TurnStages:
    """A finished turn's stage timings (TurnTimings), for the click-through."""

    turn_id: int
    timings: object  # minmo_core.engine.events.TurnTimings
    interrupted: bool = False

    def lines(self) -> list[str]:
        t = self.timings

        def at(value: float | None) -> str:
            return "—" if value is None else f"{value * 1000:.0f} ms"

        def per(value: float | None) -> str:
            return "—" if value is None else f"{value * 1000:.1f} ms"

        spoken = bool(t.policy)
        start = "end of speech" if spoken else "message sent"
        cut = ", interrupted" if self.interrupted else ""
        lines = [f"Turn {self.turn_id} ({t.mode} mode{cut})"]
        if spoken:
            lines.append(f"{start} → turn taken ({t.policy}): {at(t.policy_wait_s)}")
            lines.append(f"{start} → transcript: {at(t.transcribe_s)}")
        lines += [
            f"{start} → first token: {at(t.first_text_s)}",
            f"{start} → first speech token: {at(t.first_speech_token_s)}",
            f"{start} → first audio: {at(t.first_audio_s)}",
            f"d_llm {per(t.d_llm_s)} · d_lm {per(t.d_lm_s)} · d_syn {per(t.d_syn_s)} per token",
            f"{t.llm_tokens} text tokens, {t.speech_tokens} speech tokens, "
            f"{t.total_s:.2f} s in all",
        ]
        if spoken:
            misses = getattr(t, "speculation_misses", 0)
            missed = f"{misses} miss{'es' if misses != 1 else ''} (the user went on)"
            if t.speculative:
                verdict = "hit (the reply began at the pause)"
                lines.append(f"speculation: {verdict}" + (f", after {missed}" if misses else ""))
            else:
                lines.append(f"speculation: {missed}" if misses else "speculation: none")
        return lines


@dataclass
class TimelineModel:
    """The timeline's contents, fed every event in order with the time it arrived."""

    horizon_s: float = 600.0  # older things are forgotten (a long conversation stays small)
    user: list[Span] = field(default_factory=list)
    assistant: list[Span] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    gaps: dict[int, Gap] = field(default_factory=dict)
    stages: dict[int, TurnStages] = field(default_factory=dict)
    _said_until: dict[int, float] = field(default_factory=dict)  # turn -> end of its audio
    _user_end: float | None = None  # the end of the user's latest speech (or typed message)
    _user_turn_end: dict[int, float] = field(default_factory=dict)
    _held_at: float | None = None
    _ended: set[int] = field(default_factory=set)  # turns whose reply was cut: never played
    _replying: int = 0  # the latest turn the assistant spoke or began to speak in

    def feed(self, event: object, now: float) -> bool:
        """Take one event; True when something visible changed."""
        name = type(event).__name__
        handler = getattr(self, f"_on_{name}", None)
        if handler is None:
            return False
        handler(event, now)
        self._forget(now)
        return True

    # -- the user's side ------------------------------------------------------------------
    def _on_SpeechStarted(self, event, now: float) -> None:
        if self.user and self.user[-1].end is None:
            return
        self.user.append(Span(now))

    def _on_SpeechEnded(self, event, now: float) -> None:
        if not self.user or self.user[-1].end is not None:
            self.user.append(Span(now - event.duration))
        span = self.user[-1]
        span.end = max(span.start, min(now, span.start + event.duration))
        self._user_end = span.end

    def _on_UserSpeechStarted(self, event, now: float) -> None:
        if self.user and self.user[-1].end is None:
            self.user[-1].turn_id = event.turn_id

    def _on_FinalTranscript(self, event, now: float) -> None:
        for span in reversed(self.user):  # the speech this transcript ended
            if span.end is not None and span.turn_id in (0, event.turn_id):
                span.turn_id = event.turn_id
                break
        if self._user_end is not None:
            self._user_turn_end.setdefault(event.turn_id, self._user_end)

    def _on_UserText(self, event, now: float) -> None:
        self._user_turn_end[event.turn_id] = event.t
        self.markers.append(Marker(event.t, "typed", "typed", event.turn_id))

    def _on_StateChanged(self, event, now: float) -> None:
        if str(event.state) == "speaking":
            self._replying = max(self._replying, event.turn_id)
        if str(event.state) == "thinking":
            self.markers.append(Marker(now, "decision", "turn taken", event.turn_id))

    # -- the assistant's side --------------------------------------------------------------
    def _on_AssistantAudio(self, event, now: float) -> None:
        self._replying = max(self._replying, event.turn_id)  # held or not
        if self._held_at is not None or event.audio.size == 0 or event.turn_id in self._ended:
            return
        turn = event.turn_id
        seconds = event.audio.size / OUTPUT_RATE
        last = self.assistant[-1] if self.assistant else None
        if last is not None and last.turn_id == turn and last.end is not None and last.end >= now:
            last.end += seconds  # queued behind what is still playing
        else:
            start = max(now, last.end) if last is not None and last.end is not None else now
            self.assistant.append(Span(start, start + seconds, turn))
        if turn not in self.gaps:
            begin = self._user_turn_end.get(turn, self._user_end)
            if begin is not None and begin <= now:
                self.gaps[turn] = Gap(turn, begin, now)

    def _cut(self, now: float, turn: int | None = None) -> None:
        if turn is not None:
            self._ended.add(turn)
        for span in self.assistant:
            if span.end is not None and span.end > now:
                span.end = max(span.start, now)

    def _on_BargeIn(self, event, now: float) -> None:
        self._held_at = now
        self._cut(now)
        self.markers.append(Marker(now, "barge-in", "barge-in", self._turn()))

    def _on_FalseBargeIn(self, event, now: float) -> None:
        self._held_at = None
        self.markers.append(Marker(now, "false barge-in", "false: resumed", self._turn()))

    def _on_BargeInConfirmed(self, event, now: float) -> None:
        self._held_at = None
        self._cut(now, self._turn())
        self.markers.append(Marker(now, "cut", "cut", self._turn()))

    def _on_StopSpeaking(self, event, now: float) -> None:
        self._cut(now, event.turn_id)
        self.markers.append(Marker(now, "stop", f"stop ({event.reason})", event.turn_id))

    def _on_TurnEnded(self, event, now: float) -> None:
        if event.interrupted:
            self._held_at = None
            turn = event.turn_id
            self._cut(now, turn)
            # a barge-in can reach the window before the reply's first audio and state
            # events (they cross threads): its markers then name no turn (0), and audio
            # queued before it was drawn after it. Now the turn is known: the markers are
            # its, and its reply stopped at the barge-in.
            self.markers = [
                replace(m, turn_id=turn) if m.turn_id == 0 and m.kind in ("barge-in", "cut")
                else m
                for m in self.markers
            ]  # fmt: skip
            barged = [m.t for m in self.markers if m.kind == "barge-in" and m.turn_id == turn]
            if barged:
                stopped = max(t for t in barged if t <= now) if min(barged) <= now else now
                self.assistant = [
                    s for s in self.assistant if not (s.turn_id == turn and s.start >= stopped)
                ]
                for span in self.assistant:
                    if span.turn_id == turn and span.end is not None and span.end > stopped:
                        span.end = max(span.start, stopped)
            if not any(m.kind in ("cut", "stop") and m.turn_id == turn for m in self.markers):
                self.markers.append(Marker(now, "cut", "cut", turn))
        stages = self.stages.get(event.turn_id)
        if stages is not None:
            stages.interrupted = event.interrupted

    def _on_TurnTimings(self, event, now: float) -> None:
        """The engine's own account: the decision and first audio at their true times."""
        turn = event.turn_id
        ended = self.stages.get(turn)
        self.stages[turn] = TurnStages(turn, event, ended.interrupted if ended else False)
        start = event.t - event.total_s
        if event.policy:
            decided = start + event.policy_wait_s
            self.markers = [
                m for m in self.markers if not (m.kind == "decision" and m.turn_id == turn)
            ]
            label = f"turn taken: {event.policy}"
            self.markers.append(Marker(decided, "decision", label, turn))
        if event.first_audio_s is not None:
            self.gaps[turn] = Gap(turn, start, start + event.first_audio_s)

    def _turn(self) -> int:
        """The turn a barge-in cuts: the latest the assistant spoke in, even when its audio
        events reach the window only after the barge-in (they cross threads)."""
        shown = self.assistant[-1].turn_id if self.assistant else 0
        return max(shown, self._replying)

    # -- reading ---------------------------------------------------------------------------
    def turn_at(self, t: float, slack: float = 0.15) -> int | None:
        """The turn whose reply or latency gap is under time ``t`` (for a click)."""
        for gap in self.gaps.values():
            if gap.start - slack <= t <= gap.end + slack:
                return gap.turn_id
        for span in reversed(self.assistant):
            if span.end is not None and span.start - slack <= t <= span.end + slack:
                return span.turn_id
        return None

    def _forget(self, now: float) -> None:
        old = now - self.horizon_s
        if len(self.user) > 64 and self.user[0].until(now) < old:
            self.user = [s for s in self.user if s.until(now) >= old]
        if len(self.assistant) > 64 and self.assistant[0].until(now) < old:
            self.assistant = [s for s in self.assistant if s.until(now) >= old]
        if len(self.markers) > 256 and self.markers[0].t < old:
            self.markers = [m for m in self.markers if m.t >= old]
        if len(self._ended) > 64:
            self._ended = set(sorted(self._ended)[-32:])
        if len(self._user_turn_end) > 64:
            keep = sorted(self._user_turn_end)[-32:]
            self._user_turn_end = {turn: self._user_turn_end[turn] for turn in keep}
        if len(self.gaps) > 64:
            for turn in [k for k, g in self.gaps.items() if g.end < old]:
                self.gaps.pop(turn, None)
                self.stages.pop(turn, None)
