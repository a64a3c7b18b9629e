"""Speech understanding: 16 kHz audio -> fbank/LFR/CMVN features -> SenseVoice encoder ->
CTC transcript with language, emotion and event tags (and encoder states for MinMo's input
projector)."""
