"""What the window talks to: the engine alone (typed turns), or the engine with the audio
path (hands-free or push-to-talk), behind a few commands. Built by ``default_factory`` in
the loader's worker thread from the installed models and the settings.

Commands are cheap and return at once: the engine queues them, and what needs the disk or
torch (loading a cloned voice) runs on a short-lived thread, never on the GUI thread. What
fails is reported as an ``EngineError`` through the bridge, the conversation untouched.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

from app.gui.settings import Settings


@dataclass(frozen=True)
class LoadProgress:
    """The loader's progress, for the window's bar: ``step`` of ``steps`` done; ``what`` is
    loading now ("ready" at the end)."""

    step: int
    steps: int
    what: str


class Session:
    def __init__(self, engine, live=None, studio=None, notify: Callable | None = None) -> None:
        self.engine, self.live, self.studio = engine, live, studio
        self.notify = notify or (lambda event: None)
        voice = getattr(engine, "voice", None)  # which CosyVoice speaks (None: text only)
        self.cosyvoice: int | None = getattr(voice, "cosyvoice", None)
        self._style_lock = threading.Lock()
        self._style_job = 0

    @property
    def hands_free(self) -> bool:
        """A microphone and speakers are open (else: typed messages only)."""
        return self.live is not None

    def send_text(self, text: str) -> int:
        return self.engine.send_text(text)

    def interrupt(self) -> None:
        if self.live is not None:  # the audio side knows what was heard
            self.live._stop_turn()
        else:
            self.engine.interrupt()

    # -- push-to-talk -----------------------------------------------------------------------
    def set_push_to_talk(self, on: bool) -> None:
        if self.live is not None:
            self.live.set_push_to_talk(on)

    def talk_pressed(self) -> None:
        if self.live is not None:
            self.live.talk_pressed()

    def talk_released(self) -> None:
        if self.live is not None:
            self.live.talk_released()

    # -- how it speaks ----------------------------------------------------------------------
    def set_style(self, values: dict, library=None) -> threading.Thread:
        """Emotion, dialect, rate, persona and volume names and a library voice's name (None: the
        default voice), from the next reply. The voice is read on a thread of its own; of
        quick successive changes the last one wins."""
        with self._style_lock:
            self._style_job += 1
            job = self._style_job
        thread = threading.Thread(
            target=self._apply_style, args=(job, dict(values), library), daemon=True
        )
        thread.start()
        return thread

    def _apply_style(self, job: int, values: dict, library) -> None:
        from minmo_core.engine.events import EngineError
        from minmo_core.errors import MinMoError, first_line
        from minmo_core.voice.styles import VoiceStyle

        try:
            style = VoiceStyle.parse(
                values.get("emotion"), values.get("dialect"), values.get("rate"),
                values.get("persona"), values.get("volume"),
            )  # fmt: skip
            profile = None
            if values.get("voice"):  # the profile for the release speaking now: cloned from
                # the voice's recording the first time that release speaks with it
                from minmo_core.voice.library import VoiceLibrary

                if self.studio is not None and library is None:
                    profile = self.studio.profile(values["voice"])
                else:
                    profile = (library or VoiceLibrary()).load(values["voice"], self.cosyvoice or 2)
        except (MinMoError, OSError) as err:
            self.notify(EngineError(turn_id=0, message=f"style not applied: {first_line(err)}"))
            return
        wording = "zh" if style.dialect is not None else "en"  # dialects are worded in Chinese
        with self._style_lock:
            if job != self._style_job:
                return  # a newer change came meanwhile
            self.engine.update_settings(
                lambda s: replace(
                    s, voice=replace(s.voice, style=style, voice=profile, wording=wording)
                )
            )

    def set_chunk_schedule(self, schedule: str) -> None:
        """Speech chunks from the next reply on: "fixed" or "growing"."""
        self.engine.update_settings(
            lambda s: replace(s, voice=replace(s.voice, chunk_schedule=schedule))
        )

    def set_system_prompt(self, prompt: str) -> None:
        from minmo_core.engine.engine import DEFAULT_SYSTEM_PROMPT

        prompt = prompt or DEFAULT_SYSTEM_PROMPT
        self.engine.update_settings(lambda s: replace(s, system_prompt=prompt))

    def shutdown(self) -> None:
        if self.live is not None:
            self.live.stop()
        else:
            self.engine.shutdown()


def needs_setup(settings: Settings) -> bool:
    """No local LLM to run and no remote one named: the window opens on its setup screen."""
    from minmo_core.manager.store import installed_llm

    if settings.llm_backend == "remote" and settings.llm_url:
        return False
    if settings.llm_dir:
        return False
    import os

    return not os.environ.get("MINMO_LLM_DIR") and installed_llm() is None


def apply_models_dir(settings: Settings) -> None:
    """The settings' models folder, for everything that looks for models in this process
    (the store, the loaders, the setup screen); None leaves the default (or the
    environment's MINMO_MODELS_DIR)."""
    import os

    if settings.models_dir:
        os.environ["MINMO_MODELS_DIR"] = settings.models_dir


def pack_llm_dir(settings: Settings) -> str | None:
    """The LLM folder of the pack the settings name, when it is installed; None: the
    loader's default (the largest installed LLM)."""
    from minmo_core.common.releases import all_releases
    from minmo_core.errors import MinMoError
    from minmo_core.manager.packs import pack
    from minmo_core.manager.store import ModelStore, release_status

    if not settings.pack or settings.llm_dir:
        return None
    try:
        chosen = pack(settings.pack)
    except MinMoError:
        return None  # a pack this version no longer has: the default
    if chosen.llm is None:
        return None
    release, store = all_releases()[chosen.llm], ModelStore()
    if release_status(release, store) not in ("installed", "unverified"):
        return None
    return str(store.folder(release))


def make_policy(name: str, ears, notify: Callable):
    """The turn-taking policy the settings name; Smart Turn falls back to silence, with a
    notice, when its model is missing."""
    from minmo_core.engine.events import EngineError
    from minmo_core.engine.turns import SilencePolicy, SmartTurnPolicy
    from minmo_core.errors import MinMoError, first_line

    if ears is None or name == "silence":
        return SilencePolicy()
    if name == "smart-turn":
        try:
            return SmartTurnPolicy()
        except (MinMoError, OSError) as err:
            message = f"Smart Turn is unavailable ({first_line(err)}); turns end after a pause"
            notify(EngineError(turn_id=0, message=message))
            return SilencePolicy()
    return None  # duplex: the engine's own choice (MinMo's predictor with the adapters)


def default_factory(settings: Settings, backend=None, allow_unpinned: bool = False):
    """Loads the models (in the caller's thread, reporting ``LoadProgress`` through the
    bridge) and starts a session: hands-free when a microphone and speakers open, typed
    turns otherwise (the bridge says why). ``backend``: the sound device module (tests give
    the fake); ``allow_unpinned``: folders other than the pinned releases (tests)."""

    def build(bridge):
        import os

        from minmo_core.config import LLMConfig
        from minmo_core.engine.engine import ConversationEngine, EngineSettings
        from minmo_core.engine.events import EngineError
        from minmo_core.engine.reply import VoiceSettings
        from minmo_core.engine.stack import StackSpec, load_stack, voice_folder
        from minmo_core.errors import MinMoError
        from minmo_core.voice.library import VoiceLibrary, VoiceStudio

        remote = settings.llm_backend == "remote" and bool(settings.llm_url)
        llm_dir = settings.llm_dir or pack_llm_dir(settings)
        spec = StackSpec(
            device=settings.device, llm_dir=None if remote else llm_dir,
            llm_url=settings.llm_url if remote else None,
            llm_model=(settings.llm_model or None) if remote else None,
            llm_api_key=os.environ.get("MINMO_LLM_API_KEY"), allow_unpinned=allow_unpinned,
            cosyvoice=voice_folder(settings.voice_release), voice_lm=settings.voice_lm,
        )  # fmt: skip
        config = LLMConfig()
        if settings.precision in ("int8", "int4"):
            config = LLMConfig(weight_bits=8 if settings.precision == "int8" else 4)
        elif settings.precision != "auto":
            config = LLMConfig(dtype=settings.precision)

        def progress(step: int, steps: int, what: str) -> None:
            bridge(LoadProgress(step, steps, what))

        stack = load_stack(spec, config, voice=True, ears=True, on_progress=progress)
        engine_settings = EngineSettings(
            voice=VoiceSettings(chunk_schedule=settings.chunk_schedule)
        )
        if settings.system_prompt:
            engine_settings = replace(engine_settings, system_prompt=settings.system_prompt)
        policy = make_policy(settings.turn_policy, stack.ears, bridge)
        studio = None
        if stack.cosyvoice_dir is not None:  # without ears the user types the transcript
            from minmo_core.voice.voice_clone import VoiceCloner

            folder, ears = stack.cosyvoice_dir, stack.ears
            transcriber = (lambda a: ears.transcribe(a).text) if ears is not None else None
            studio = VoiceStudio(
                lambda: VoiceCloner.from_folder(folder), transcriber, VoiceLibrary(),
                stack.voice.cosyvoice if stack.voice is not None else 2,
            )  # fmt: skip

        def engine(on_event):
            return ConversationEngine(stack.llm, stack.voice, on_event, engine_settings,
                                      stack.ears, policy)  # fmt: skip

        try:
            from app.conversation import LiveConversation
            from app.gui.settings import audio_settings

            audio = audio_settings(settings)
            live = LiveConversation(engine, bridge, audio, backend=backend).start()
            session = Session(live.engine, live, studio, bridge)
        except MinMoError as err:
            typed = engine(bridge).start()
            bridge(EngineError(turn_id=0, message=f"no sound: {err}; typed messages only"))
            session = Session(typed, None, studio, bridge)
        if settings.talk_mode == "push-to-talk":
            session.set_push_to_talk(True)
        return session

    return build
