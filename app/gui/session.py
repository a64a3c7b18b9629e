"""What the window talks to: the engine alone (typed turns), or the engine with the audio
path (hands-free), behind the same three commands. Built by ``default_factory`` in the
loader's worker thread from the installed models and the settings."""

from __future__ import annotations

from app.gui.settings import Settings


class Session:
    def __init__(self, engine, live=None) -> None:
        self.engine, self.live = engine, live

    def send_text(self, text: str) -> int:
        return self.engine.send_text(text)

    def interrupt(self) -> None:
        if self.live is not None:  # the audio side knows what was heard
            self.live._stop_turn()
        else:
            self.engine.interrupt()

    def shutdown(self) -> None:
        if self.live is not None:
            self.live.stop()
        else:
            self.engine.shutdown()


def setup_text() -> str | None:
    """With no LLM installed: what fits this machine and how to get it; else None."""
    from minmo_core.manager.planner import plan, this_machine
    from minmo_core.manager.store import installed_llm

    if installed_llm() is not None:
        return None
    memory, device = this_machine()
    result = plan(memory, device)
    if result.choice is None:
        return f"No model pack fits this machine: {result.reason()}"
    return (
        "No models are installed yet. For this machine the planner recommends "
        f"{result.reason()}.\nFetch them with:  minmo models download {result.choice.pack}\n"
        "or bring a folder you already have with:  minmo models import DIR"
    )


def default_factory(settings: Settings):
    """Loads the installed models (in the caller's thread) and starts a session: hands-free
    when a microphone and speakers open, typed turns otherwise (the bridge says why)."""

    def build(bridge):
        import argparse

        from app.cli.stack import load_stack
        from minmo_core.config import LLMConfig
        from minmo_core.engine.engine import ConversationEngine, EngineSettings
        from minmo_core.engine.events import EngineError
        from minmo_core.errors import MinMoError

        args = argparse.Namespace(
            device=settings.device, llm=settings.llm_dir, llm_url=settings.llm_url,
            llm_model=settings.llm_model, llm_api_key=None, cosyvoice=None, sensevoice=None,
            allow_unpinned=False, seed=None,
        )  # fmt: skip
        llm, voice, ears = load_stack(args, LLMConfig(), voice=True, ears=True)
        engine_settings = EngineSettings()
        if settings.system_prompt:
            engine_settings = EngineSettings(system_prompt=settings.system_prompt)

        def engine(on_event):
            return ConversationEngine(llm, voice, on_event, engine_settings, ears)

        try:
            from app.audio.events import AudioSettings
            from app.conversation import LiveConversation

            audio = AudioSettings(input_device=settings.input_device,
                                  output_device=settings.output_device)  # fmt: skip
            live = LiveConversation(engine, bridge, audio).start()
            return Session(live.engine, live)
        except MinMoError as err:
            typed = engine(bridge).start()
            bridge(EngineError(turn_id=0, message=f"no sound: {err}; typed messages only"))
            return Session(typed)

    return build
