"""Measurement code, outside the runtime path: the ``minmo bench`` jobs, their tables and
docs/BENCHMARKS.md rows, and the simulated rooms the audio bench (and the tests) use.
The simulation needs the dev extra (pyroomacoustics)."""
