"""Real-time audio for the assistant, without Qt: duplex stream, echo cancellation, VAD,
barge-in detection. See docs/ARCHITECTURE.md for the threads and what each may do."""
