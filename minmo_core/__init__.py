"""MinMo's model stack as a library, in the boxes of the paper's figure.

- ``understanding``: speech in (SenseVoice front end, encoder, CTC transcripts);
- ``llm``: the LLM (Qwen2.5-Instruct, LoRA) and MinMo's input and output projectors;
- ``voice``: speech out (CosyVoice 2's voice-token LM, flow matching, HiFT, voice cloning);
- ``common``: plumbing they share (audio files, checkpoints and release pins, the hub,
  the release's yaml, model folders, devices);
- ``config`` (every component's sizes) and ``errors`` (one-line user-facing errors).

Nothing here imports the application (``app``) or Qt; a test enforces it.
"""

__version__ = "0.1.0"
