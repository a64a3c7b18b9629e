"""ConversationEngine: owns the models, runs turns in its own worker thread, reports events.

    commands (any thread)             worker thread                       events (callback,
    send_text / interrupt /  ──queue──► one turn at a time: history ─► LLM  called on the
    reset / set_settings /             ─► voice LM ─► token2wav            worker thread)
    shutdown

``interrupt`` does not wait in the queue: it sets a flag that the running reply checks
before every LLM token and speech chunk, so generation stops within one chunk. The history
then keeps only the text the user heard (``played_samples`` of the turn's audio, cut at a
word boundary) and marks the turn interrupted. A failing turn becomes an ``EngineError``
event; history and settings stay as they were before it.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from minmo_core.engine.events import (
    AssistantAudio,
    EngineError,
    EngineEvent,
    EngineState,
    FinalTranscript,
    PartialTranscript,
    StateChanged,
    StopSpeaking,
    TurnEnded,
    TurnTimings,
    UserAudio,
    UserSpeechStarted,
    UserText,
    now,
)
from minmo_core.engine.listener import Listener
from minmo_core.engine.reply import (
    AlignedTurn,
    ReplyOutcome,
    VoiceSettings,
    heard_text,
    run_reply,
)
from minmo_core.engine.turns import DuplexPolicy, SilencePolicy, SmartTurnPolicy, TurnPolicy
from minmo_core.errors import ConfigError, MinMoError, first_line, is_out_of_memory
from minmo_core.llm.adapters import MinMoAdapters
from minmo_core.llm.chat import SPEECH_PLACEHOLDER, ChatLLM
from minmo_core.understanding.sensevoice import SenseVoice
from minmo_core.understanding.transcript import RichTranscript
from minmo_core.voice.styles import END_OF_PROMPT, instruction_is_empty, render_instruction
from minmo_core.voice.tts import SpeechSynthesizer

PARTIAL_MAX_S = 10.0  # a partial transcript reads at most this much of the latest audio
QUIET_EMOTIONS = ("neutral", "emo_unknown")
QUIET_EVENTS = ("speech", "event_unk")

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful voice assistant. Answer briefly, in plain spoken sentences."
)


@dataclass(frozen=True)
class EngineSettings:
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    voice: VoiceSettings = field(default_factory=VoiceSettings)
    speak: bool = True  # False: text replies only
    context_tokens: int = 4096  # prompt budget: the oldest turns go first, never the system
    seed: int | None = None  # sampling seed for the LLM and the voice (repeatable replies)
    language: str = "auto"  # what the user speaks, for the transcriber ("auto": detect)
    speculate: bool = True  # start the reply at the pause, before the policy confirms


@dataclass(frozen=True)
class Turn:
    """One exchange as the history keeps it."""

    turn_id: int
    user: str
    reply: str  # what the LLM wrote
    heard: str  # what the user heard of it (the history's assistant message)
    interrupted: bool


def user_message(transcript: RichTranscript) -> str:
    """The LLM's user message for a spoken turn: the words, and SenseVoice's tags as context
    where they say something (the user's emotion, a sound around them)."""
    notes = []
    if transcript.emotion and transcript.emotion not in QUIET_EMOTIONS:
        notes.append(f"the user sounds {transcript.emotion}")
    if transcript.event and transcript.event not in QUIET_EVENTS:
        notes.append(f"{transcript.event} in the background")
    return f"{transcript.text} ({'; '.join(notes)})" if notes else transcript.text


class _Speculation:
    """A reply started at a pause: its events wait until the policy commits the turn, and
    vanish if the user goes on speaking."""

    def __init__(self, turn_id: int) -> None:
        self.turn_id = turn_id
        self.buffer: list[EngineEvent] = []
        self.committed = False
        self.waited = 0.0  # the silence the policy waited (audio clock)
        self.cancelled = False
        self.decided = threading.Event()

    def is_set(self) -> bool:  # the reply's stop flag
        return self.cancelled


class _AnyOf:
    """A stop flag raised by any of its flags."""

    def __init__(self, *flags) -> None:
        self.flags = flags

    def is_set(self) -> bool:
        return any(f.is_set() for f in self.flags)


SPECULATION_WAIT_S = 30.0  # a finished speculative reply waits this long for the verdict
PAUSE_LIMIT_S = 5.0  # a tentative barge-in neither confirmed nor found false: it was real
OUTPUT_RATE = 24000


class ConversationEngine:
    """Typed and spoken turns over one model stack, in a worker thread.

    Events come from the worker, or, for the start of the user's speech, from the thread
    that reports it; they are delivered one at a time, in order.
    """

    def __init__(
        self,
        llm: ChatLLM,
        voice: SpeechSynthesizer | None,
        on_event: Callable[[EngineEvent], None],
        settings: EngineSettings | None = None,
        sensevoice: SenseVoice | None = None,
        policy: TurnPolicy | None = None,
        adapters: MinMoAdapters | None = None,
    ) -> None:
        self.llm = llm
        self.voice = voice
        self.sensevoice = sensevoice
        self.on_event = on_event
        self.settings = settings or EngineSettings()
        self.adapters = adapters
        if adapters is not None:
            self._fit(adapters)
        if policy is None:  # the learned predictor, else Smart Turn; without ears, silence
            if adapters is not None and adapters.duplex is not None and sensevoice is not None:
                policy = DuplexPolicy(sensevoice, llm, adapters)
            elif sensevoice is not None:
                policy = SmartTurnPolicy()
            else:
                policy = SilencePolicy()
        self.policy = policy
        self.listener = Listener(
            self.policy,
            self._heard_start,
            self._heard_partial,
            self._heard_turn,
            on_pause=self._heard_pause,
            on_resume=self._heard_resume,
        )
        self._emit_lock = threading.Lock()
        self._spec: _Speculation | None = None  # the speculative reply waiting for a verdict
        self._out: Callable[[EngineEvent], None] = self._emit  # the running command's output
        self._partial: tuple[int, object] | None = None  # the latest partial request
        self._speaking_turn = 0  # the turn id of the utterance being heard
        self.turns: list[Turn] = []
        self._commands: queue.Queue = queue.Queue()
        self._interrupt = threading.Event()
        self._played: int | None = None  # samples of the current turn heard, when told
        self._turn_ids = itertools.count(1)
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._current = 0
        self._last_spans: tuple[int, list, int] = (0, [], 0)  # the last reply's audio map
        self._replying = 0  # the turn whose reply is being made or was made last
        self._paused = threading.Event()  # a tentative barge-in holds the reply
        self._paused_played = 0
        self._held_s = 0.0  # the reply's time held by tentative barge-ins
        self._hearing_s = 0.0  # the current spoken turn's transcription (and projection)
        self._deferred: tuple | None = None  # a turn heard during a tentative barge-in
        self._hold_lock = threading.RLock()
        self._last_typed = 0  # the latest typed turn handed out
        self._stop_upto = 0  # typed turns up to this one were stopped before they started
        self._in_reply = False
        self._stopping = False  # shutdown: queued turns are dropped, a running one stops
        self._audio_until = 0.0  # when the audio made so far ends, if played as it came
        self._judging_stop = False
        self._spec_misses = 0  # speculative replies dropped in the utterance being heard
        self._misses: dict[int, int] = {}  # turn -> its dropped speculations, once taken

    @property
    def mode(self) -> str:
        """ "aligned" with MinMo's adapters (speech embeddings into the LLM, semantic vectors
        into the voice LM), else "composed" (transcript in, reply text out)."""
        return "aligned" if self.adapters is not None else "composed"

    def _fit(self, adapters: MinMoAdapters) -> None:
        if not hasattr(self.llm, "hidden_states") or not hasattr(self.llm, "embed"):
            raise ConfigError("aligned mode needs the local Qwen2.5-Instruct LLM, not a remote one")
        speaks = adapters.output_projector is not None or adapters.voice_lm is not None
        if self.sensevoice is None or (self.voice is None and speaks):
            raise ConfigError("aligned mode needs the voice encoder and the voice decoder")
        if speaks and getattr(self.voice, "cosyvoice", 2) != 2:
            raise ConfigError(
                "aligned mode speaks through CosyVoice 2 (MinMo's output projector is trained "
                "against its voice LM); choose a CosyVoice 2 voice pack, or talk in composed "
                "mode with CosyVoice 3"
            )
        adapters.check_fits(
            self.llm.hidden_size,
            self.sensevoice.encoder.cfg.d_model,
            self.voice.tokens.lm.sos.shape[-1] if self.voice is not None else None,
        )
        adapters.to(self.llm.device, self.llm.dtype)
        if adapters.lora is not None and getattr(self.llm, "adapter", None) is None:
            self.llm.load_lora(adapters.lora)
        voice_lm = self.voice.tokens.lm if self.voice is not None else None
        adapters.load_tuned_weights(self.sensevoice.encoder, voice_lm)

    # -- commands, from any thread -----------------------------------------------------
    def start(self) -> ConversationEngine:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="minmo-engine", daemon=True)
            self._thread.start()
        return self

    def send_text(self, text: str) -> int:
        """Queue a typed message; returns its turn id."""
        if not text.strip():
            raise ConfigError("nothing to send: the message is empty")
        turn_id = next(self._turn_ids)
        self._last_typed = turn_id
        self._idle.clear()
        self._commands.put(("text", turn_id, text.strip()))
        return turn_id

    def send_audio(self, audio) -> int:
        """Queue a whole spoken utterance, (N,) float32 at 16 kHz (a recording); returns its
        turn id. Live microphone input goes through ``speech_started`` / ``push_frame``."""
        self._need_ears()
        turn_id = next(self._turn_ids)
        self._idle.clear()
        self._commands.put(("speech", turn_id, audio, now()))
        return turn_id

    # -- the user's voice, from the audio thread ------------------------------------------
    def speech_started(self, t: float) -> None:
        """The VAD heard speech start at ``t`` (the audio clock)."""
        self._need_ears()
        self.listener.speech_started(t)

    def speech_ended(self, t: float) -> None:
        self.listener.speech_ended(t)

    def push_frame(self, frame, t: float) -> None:
        """An echo-cancelled 16 kHz frame (float32) captured at ``t`` (the audio clock)."""
        self.listener.push_frame(frame, t)

    @property
    def replying(self) -> bool:
        """A reply is being made (its audio may play on after it is done)."""
        return self._in_reply

    def _need_ears(self) -> None:
        if self.sensevoice is None:
            raise ConfigError("spoken turns need the speech recogniser (SenseVoiceSmall)")

    def _heard_start(self, t: float) -> None:
        self._spec_misses = 0
        self._speaking_turn = next(self._turn_ids)
        self._current = self._speaking_turn
        self._emit(UserSpeechStarted(turn_id=self._speaking_turn, at=t))
        self._emit(StateChanged(turn_id=self._speaking_turn, state=EngineState.USER_SPEAKING))

    def _heard_partial(self, audio) -> None:
        self._partial = (self._speaking_turn, audio)
        self._idle.clear()
        self._commands.put(("partial",))
        judge = getattr(self.policy, "stop_speaking", None)
        if judge is not None and now() < self._audio_until and not self._judging_stop:
            self._judging_stop = True  # one judgement at a time, off the audio thread
            threading.Thread(
                target=self._judge_stop, args=(judge, audio.copy()), daemon=True
            ).start()

    def _judge_stop(self, judge, audio) -> None:
        """MinMo's predictor hears the user over the assistant: "stop speaking" stops it."""
        try:
            stop = judge(audio)
        except Exception:
            stop = False  # a failing judge leaves the floor to the audio path's detector
        finally:
            self._judging_stop = False
        if stop and now() < self._audio_until:
            turn = self._replying
            self.interrupt()
            self._emit(StopSpeaking(turn_id=turn, reason=f"{self.policy.name} predictor"))

    def _heard_pause(self, audio) -> None:
        """The VAD saw a pause: start the reply now, held back until the policy decides."""
        if not self.settings.speculate or self.sensevoice is None or self._paused.is_set():
            return  # (during a tentative barge-in nothing starts before its verdict)
        spec = _Speculation(self._speaking_turn)
        with self._emit_lock:
            self._spec = spec
        self._partial = None
        self._idle.clear()
        self._commands.put(("speculate", spec, audio, now()))

    def _heard_resume(self) -> None:
        """The user went on: the speculative reply is dropped, unheard and unrecorded."""
        with self._emit_lock:
            spec, self._spec = self._spec, None
            if spec is not None:
                spec.cancelled = True
                spec.buffer.clear()
                spec.decided.set()
                self._spec_misses += 1

    def _heard_turn(self, audio, silence_s: float) -> None:
        self._partial = None
        self._misses[self._speaking_turn] = self._spec_misses
        with self._hold_lock:
            if self._paused.is_set():  # a turn only if the barge-in proves real
                self._deferred = (self._speaking_turn, audio, now() - silence_s, silence_s)
                return
        with self._emit_lock:
            spec, self._spec = self._spec, None
            if spec is not None and not spec.cancelled:
                for event in spec.buffer:  # what was held back, in order, then live
                    self.on_event(event)
                spec.buffer.clear()
                spec.committed, spec.waited = True, silence_s
                spec.decided.set()
                return
        self._idle.clear()
        self._commands.put(("speech", self._speaking_turn, audio, now() - silence_s, silence_s))

    def interrupt(self, played_samples: int | None = None) -> None:
        """Stop the reply now. ``played_samples``: how much of the turn's audio was heard
        (None: all the audio produced so far, or what was heard at a tentative ``pause``).

        Playback outlasts generation: when the reply was already fully made, the history's
        last turn is cut to what was heard instead, and a second ``TurnEnded`` (interrupted)
        says so."""
        with self._hold_lock:
            if played_samples is None and self._paused.is_set():
                played_samples = self._paused_played
            if not self._in_reply:  # a typed message not started yet is stopped too
                self._stop_upto = self._last_typed
            self._played = played_samples
            self._interrupt.set()
            self._paused.clear()
            deferred, self._deferred = self._deferred, None
        if played_samples is not None:
            self._idle.clear()
            self._commands.put(("cut", self._replying, played_samples))
        if deferred is not None:  # the speech that barged in was a turn: answer it
            self._idle.clear()
            self._commands.put(("speech", *deferred))

    def pause(self, played_samples: int) -> None:
        """A tentative barge-in: hold the reply before its next chunk, history untouched,
        until ``resume`` (it was false: carry on) or ``interrupt`` (it was real). Held longer
        than PAUSE_LIMIT_S, it counts as real."""
        with self._hold_lock:
            self._paused_played = played_samples
            self._paused.set()

    def resume(self) -> None:
        """The barge-in was false: the held reply goes on where it stopped, and what the
        user's side heard meanwhile (a cough, a word to someone else) is not a turn."""
        with self._hold_lock:
            self._deferred = None
            self._paused.clear()

    def _hold(self) -> None:
        """Called by the reply before each chunk: wait while a barge-in is tentative."""
        if not self._paused.is_set():
            return
        started = now()
        while self._paused.is_set() and not self._interrupt.is_set():
            if now() - started > PAUSE_LIMIT_S:
                self.interrupt(self._paused_played)
                break
            time.sleep(0.005)
        self._held_s += now() - started

    def reset(self) -> None:
        """Forget the conversation (settings stay)."""
        self._idle.clear()
        self._commands.put(("reset",))

    def set_policy(self, policy: TurnPolicy) -> None:
        """Change the turn-taking policy; the next pause is judged by the new one (TurnTimings
        name the policy that took each turn)."""
        self.policy = policy
        self.listener.policy = policy

    def set_settings(self, settings: EngineSettings) -> None:
        self._idle.clear()
        self._commands.put(("settings", settings))

    def update_settings(self, change: Callable[[EngineSettings], EngineSettings]) -> None:
        """Apply ``change`` to the settings as they are when the engine gets to it: changes
        made one after another (a prompt, then a style) all land, none undoes another."""
        self._idle.clear()
        self._commands.put(("update", change))

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every queued command is done; False on timeout."""
        return self._idle.wait(timeout)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop the current reply and the worker; returns when the thread has ended. Turns
        still queued (a turn heard just before) are dropped, not answered."""
        with self._hold_lock:
            self._stopping = True
            self._interrupt.set()
        self._commands.put(("stop",))
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError("the engine's worker did not stop")
            self._thread = None

    def messages(self, user: str | None = None) -> list[dict[str, str]]:
        """The prompt for the next turn: system prompt, history (what was heard), user."""
        out = [{"role": "system", "content": self._system_prompt()}]
        for turn in self.turns:
            out += [
                {"role": "user", "content": turn.user},
                {"role": "assistant", "content": turn.heard},
            ]
        if user is not None:
            out.append({"role": "user", "content": user})
        return out

    def _system_prompt(self) -> str:
        """The system prompt; in aligned mode the voice style is the LLM's to follow (its
        vectors, not an instruction, drive the voice LM), so it is asked for here."""
        prompt = self.settings.system_prompt
        voice = self.settings.voice
        if self.adapters is None or instruction_is_empty(voice.style):
            return prompt
        asked = render_instruction(voice.style, voice.wording).removesuffix(END_OF_PROMPT)
        return f"{prompt} {asked}".strip()

    # -- the worker ----------------------------------------------------------------------
    def _emit(self, event: EngineEvent) -> None:
        with self._emit_lock:
            self.on_event(event)

    def _held(self, spec: _Speculation) -> Callable[[EngineEvent], None]:
        def emit(event: EngineEvent) -> None:
            with self._emit_lock:
                if spec.cancelled:
                    return
                if not spec.committed:
                    spec.buffer.append(event)
                    return
                self.on_event(event)

        return emit

    def _state(
        self, state: EngineState, t: float | None = None, turn_id: int | None = None
    ) -> None:
        """A state of ``turn_id``; None: the turn in hand. A reply names its own turn: the
        user may have begun the next one meanwhile (a barge-in does), which moves the turn
        in hand on."""
        turn = self._current if turn_id is None else turn_id
        self._out(StateChanged(turn_id=turn, state=state, t=now() if t is None else t))

    def _run(self) -> None:
        while True:
            command = self._commands.get()
            kind = command[0]
            if kind == "stop":
                self._idle.set()
                return
            if self._stopping:
                continue  # shutting down: what was queued before "stop" is dropped
            if kind == "text":
                self._text_turn(command[1], command[2])
            elif kind == "speech":
                self._speech_turn(*command[1:])
            elif kind == "speculate":
                spec = command[1]
                self._out = self._held(spec)
                try:
                    self._speech_turn(spec.turn_id, command[2], command[3], spec=spec)
                finally:
                    self._out = self._emit
            elif kind == "partial":
                self._partial_transcript()
            elif kind == "reset":
                self.turns = []
                self.llm.reset_cache()
                self.listener.reset()
            elif kind == "cut":
                self._cut_last_turn(command[1], command[2])
            elif kind == "settings":
                self.settings = command[1]
            elif kind == "update":
                self.settings = command[1](self.settings)
            if self._commands.empty():
                self._idle.set()

    def _text_turn(self, turn_id: int, text: str) -> None:
        self._current = turn_id
        started = now()
        self._emit(UserText(turn_id=turn_id, text=text))
        try:
            aligned = self._aligned_text(text) if self.adapters is not None else None
        except Exception as err:
            self._recover(turn_id, err)
            return
        self._reply(turn_id, text, started, aligned=aligned)

    def _partial_transcript(self) -> None:
        request, self._partial = self._partial, None
        if request is None:
            return  # the turn ended first, or a newer request already ran
        turn_id, audio = request
        tail = audio[-int(PARTIAL_MAX_S * 16000) :]  # bounded cost, however long they talk
        try:
            text = self.sensevoice.transcribe(tail, self.settings.language, True).text
        except MinMoError:
            return  # too short or silent so far: nothing to show yet
        if text:
            self._emit(PartialTranscript(turn_id=turn_id, text=text))

    def _speech_turn(
        self,
        turn_id: int,
        audio,
        started: float,
        waited: float = 0.0,
        spec: _Speculation | None = None,
    ) -> None:
        self._current = turn_id
        aligned = None
        self._hearing_s = 0.0
        tick = now()
        try:
            audio = audio[-30 * 16000 :]
            if self.adapters is None:
                transcript = self.sensevoice.transcribe(audio, self.settings.language, True)
            else:
                transcript, states = self.sensevoice.hear(audio, self.settings.language, True)
                aligned = self._aligned_speech(states)
            self._hearing_s = now() - tick
        except MinMoError as err:
            self._out(EngineError(turn_id=turn_id, message=f"could not hear that: {err}"))
            self._state(EngineState.LISTENING, turn_id=turn_id)
            return
        except Exception as err:
            self._recover(turn_id, err)
            return
        self._out(
            FinalTranscript(
                turn_id=turn_id,
                text=transcript.text,
                language=transcript.language,
                emotion=transcript.emotion,
                event=transcript.event,
            )
        )
        self._out(UserAudio(turn_id=turn_id, audio=audio))
        if not transcript.text:
            self._state(
                EngineState.LISTENING, turn_id=turn_id
            )  # a noise, not words: nothing to answer
            return
        self._reply(turn_id, user_message(transcript), started, waited, spec, aligned, True)

    def _aligned_speech(self, states: torch.Tensor) -> AlignedTurn:
        """The user's speech as the LLM hears it in aligned mode: encoder states (T, D_enc)
        through the input projector; their mean is the output projector's user embedding."""
        projector = self.adapters.input_projector
        with torch.inference_mode():
            speech, _ = projector(states[None].to(projector.conv.weight.dtype))
        return AlignedTurn(self.adapters, speech[0], speech[0].float().mean(0))

    def _aligned_text(self, text: str) -> AlignedTurn:
        """A typed turn in aligned mode: the LLM reads the words; the user embedding is the
        mean of their input embeddings."""
        ids = self.llm.tokenizer(text, add_special_tokens=False)["input_ids"] or [0]
        with torch.inference_mode():
            embedding = self.llm.embed(ids).float().mean(0)
        return AlignedTurn(self.adapters, None, embedding)

    def _reply(
        self,
        turn_id: int,
        text: str,
        started: float,
        waited: float = 0.0,
        spec: _Speculation | None = None,
        aligned: AlignedTurn | None = None,
        spoken: bool = False,
    ) -> None:
        with self._hold_lock:
            self._in_reply = True
            self._interrupt.clear()
            if turn_id <= self._stop_upto or self._stopping:  # stopped while it waited
                self._interrupt.set()
        self._paused.clear()
        self._held_s = 0.0
        self._played = None
        self._replying = turn_id
        try:
            self._reply_now(turn_id, text, started, waited, spec, aligned, spoken)
        finally:
            self._in_reply = False

    def _reply_now(
        self,
        turn_id: int,
        text: str,
        started: float,
        waited: float,
        spec: _Speculation | None,
        aligned: AlignedTurn | None,
        spoken: bool,
    ) -> None:
        self._state(EngineState.THINKING, turn_id=turn_id)
        stop = self._interrupt if spec is None else _AnyOf(self._interrupt, spec)
        try:
            speech = aligned.speech if aligned is not None else None
            messages = self._within_budget(text, 0 if speech is None else len(speech))
            if speech is not None:  # the LLM hears the user instead of reading them
                messages[-1] = {"role": "user", "content": SPEECH_PLACEHOLDER}
            settings = self.settings
            voice = self.voice if settings.speak else None
            outcome = run_reply(
                self.llm,
                voice,
                messages,
                self._emit_reply(turn_id),
                turn_id,
                stop,
                settings.voice,
                settings.seed,
                aligned,
                self._hold,
            )
        except Exception as err:  # a turn's failure must not end the engine
            self._recover(turn_id, err)
            return
        idle = waited + self._held_s  # waiting for a decision or a barge-in, not computing
        if spec is not None:
            blocked = now()
            spec.decided.wait(SPECULATION_WAIT_S)
            idle = now() - blocked + self._held_s
            if not spec.committed:  # the user went on (or never finished): no trace
                with self._emit_lock:
                    spec.cancelled = True
                    if self._spec is spec:
                        self._spec = None
                return
            waited = spec.waited
        # the policy took the turn, unless it was a whole recording (send_audio)
        policy = self.policy.name if spoken and (waited > 0 or spec is not None) else ""
        self._finish(
            turn_id, text, outcome, started, waited, spec is not None, idle, policy, spoken
        )

    def _emit_reply(self, turn_id: int) -> Callable[[EngineEvent], None]:
        speaking = False

        def emit(event: EngineEvent) -> None:
            nonlocal speaking
            if isinstance(event, AssistantAudio):
                if not speaking:
                    speaking = True
                    self._state(EngineState.SPEAKING, event.t, turn_id)  # the moment it was ready
                start = max(self._audio_until, event.t)
                self._audio_until = start + event.audio.size / OUTPUT_RATE
            self._out(event)

        return emit

    def _cut_last_turn(self, turn_id: int, played: int) -> None:
        """An interrupt that came after the reply was made: the history keeps what was heard."""
        last = self.turns[-1] if self.turns else None
        spans_turn, spans, samples = self._last_spans
        if last is None or last.turn_id != turn_id or spans_turn != turn_id:
            return  # that turn failed, was reset, or is not the last one
        if last.interrupted or played >= samples:
            return  # already cut while generating, or everything was heard
        heard = heard_text(last.reply, spans, played)
        self.turns[-1] = Turn(turn_id, last.user, last.reply, heard, True)
        self._state(EngineState.INTERRUPTED, turn_id=turn_id)
        self._out(
            TurnEnded(turn_id=turn_id, reply_text=last.reply, heard_text=heard, interrupted=True)
        )
        self._state(EngineState.IDLE, turn_id=turn_id)

    def _within_budget(self, user: str, extra: int = 0) -> list[dict[str, str]]:
        """The prompt, after dropping the oldest turns until it fits ``context_tokens`` and
        leaves the model room for a whole reply (``extra``: speech positions beside it)."""
        limit = self.llm.context_limit - self.llm.config.max_new_tokens
        budget = min(self.settings.context_tokens, limit)
        messages = self.messages(user)
        while self.llm.prompt_tokens(messages) + extra > budget:
            if not self.turns:
                raise ConfigError(
                    f"the message is too long: the prompt needs more than {budget} tokens "
                    "even without history"
                )
            self.turns = self.turns[1:]
            messages = self.messages(user)
        return messages

    def _finish(
        self,
        turn_id: int,
        user: str,
        outcome: ReplyOutcome,
        started: float,
        waited: float = 0.0,
        speculative: bool = False,
        idle: float = 0.0,
        policy: str = "",
        spoken: bool = False,
    ) -> None:
        interrupted = outcome.stopped
        if interrupted:
            played = outcome.samples if self._played is None else self._played
            heard = heard_text(outcome.text, outcome.spans, played) if outcome.spans else ""
            if self.voice is None or not self.settings.speak:
                heard = outcome.text  # a text-only reply was read as it came
            self._state(EngineState.INTERRUPTED, turn_id=turn_id)
        else:
            heard = outcome.text
        self.turns.append(Turn(turn_id, user, outcome.text, heard, interrupted))
        self._last_spans = (turn_id, outcome.spans, outcome.samples)
        total = now() - started
        hearing, self._hearing_s = self._hearing_s, 0.0  # a typed turn has none
        compute = hearing + outcome.llm_s + outcome.lm_s + outcome.syn_s
        self._out(
            TurnTimings(
                turn_id=turn_id,
                first_text_s=outcome.first_text_s,
                first_speech_token_s=outcome.first_speech_token_s,
                first_audio_s=outcome.first_audio_s,
                total_s=total,
                llm_tokens=outcome.llm_tokens,
                speech_tokens=outcome.speech_tokens,
                d_llm_s=outcome.llm_s / outcome.llm_tokens if outcome.llm_tokens else None,
                d_lm_s=outcome.lm_s / outcome.speech_tokens if outcome.speech_tokens else None,
                d_syn_s=outcome.syn_s / outcome.speech_tokens if outcome.speech_tokens else None,
                engine_overhead_s=max(0.0, total - compute - idle),
                policy_wait_s=waited,
                speculative=speculative,
                speculation_misses=self._misses.pop(turn_id, 0),
                policy=policy,
                mode=self.mode,
                transcribe_s=hearing if spoken else None,
            )
        )
        self._out(
            TurnEnded(
                turn_id=turn_id, reply_text=outcome.text, heard_text=heard, interrupted=interrupted
            )
        )
        self._state(EngineState.IDLE, turn_id=turn_id)

    def _recover(self, turn_id: int, err: Exception) -> None:
        if is_out_of_memory(err):
            message = f"the GPU ran out of memory during the reply ({first_line(err)})"
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        elif isinstance(err, MinMoError):
            message = str(err)
        else:
            message = f"the reply failed: {type(err).__name__}: {first_line(err)}"
        self.llm.reset_cache()  # a half-written cache must not leak into the next turn
        self._out(EngineError(turn_id=turn_id, message=message))
        self._state(EngineState.IDLE, turn_id=turn_id)


__all__ = ["ConversationEngine", "EngineSettings", "Turn"]
