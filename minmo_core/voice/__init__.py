"""The voice decoder: text or semantic vectors -> CosyVoice 2's voice-token LM (5:15
interleave, styles, cloned voices) -> flow matching to mel -> HiFT vocoder -> 24 kHz audio,
streamed in 15-token chunks; and the cloning front end that turns a clip into a voice."""
