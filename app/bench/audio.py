"""``minmo bench audio``: the audio path measured on simulated rooms (app.bench.simulation),
for each echo-canceller backend in one run.

Per backend and condition, and per backend in total:
- ERLE after convergence in single talk: echo energy over the residual echo left in the
  clean signal, on frames where the far end plays, after the first 3 s. The residual is the
  clean signal minus the noise as the backend passes it (the same backend fed the noise
  alone, no far end): the canceller cannot and should not remove noise, and WebRTC's
  filters and noise suppressor change it;
- near-end preservation in double talk: SI-SDR of the clean signal against the near-end
  speech as the backend passes it (fed alone; WebRTC's high-pass filter turns the voice's
  phase and AEC3 delays it by 8 ms, which is no loss to a listener or a recogniser), minus
  the SI-SDR of the raw microphone signal against the near-end speech;
- barge-in latency from each near-end speech onset while the assistant plays;
- false barge-ins caused by echo alone, per simulated minute;
- VAD frame accuracy against the ground truth, in near-end-only scenes;
- CPU time per 10 ms frame for the whole path: far-end resampling 24 -> 16 kHz, alignment,
  echo cancellation, VAD, gate and barge-in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import soxr

from app.audio.events import (
    AEC_BACKENDS,
    MIC_FRAME,
    MIC_RATE,
    PLAYBACK_RATE,
    AudioSettings,
    BargeIn,
)
from app.audio.processor import AudioProcessor
from app.bench.simulation import CONDITIONS, UNSEEN_CONDITIONS, make_scenario

CONVERGED_S = 3.0
FAR_FRAME = PLAYBACK_RATE * MIC_FRAME // MIC_RATE  # 240 samples of 24 kHz per 10 ms
# playback is handed to the device this far ahead of capture (its output latency), so the
# far end of a captured frame is always known by the time the frame is processed
OUTPUT_LEAD_FRAMES = 4


@dataclass
class Run:
    clean: np.ndarray
    user_speech: np.ndarray  # (frames,) bool
    bargeins: list[BargeIn]
    processor: AudioProcessor
    cpu_s: list[float] = field(default_factory=list)


def passed_alone(signal: np.ndarray, settings: AudioSettings | None = None) -> np.ndarray:
    """``signal`` (n,) through a fresh canceller of the settings' backend with a silent far
    end: how the backend passes it when there is no echo to remove."""
    from app.audio.aec import make_canceller

    canceller = make_canceller(settings or AudioSettings())
    silence = np.zeros(MIC_FRAME, np.float32)
    n = signal.size // MIC_FRAME * MIC_FRAME
    return np.concatenate(
        [canceller.process(signal[i : i + MIC_FRAME], silence) for i in range(0, n, MIC_FRAME)]
    )


def run_scene(scene, settings: AudioSettings | None = None, playing: bool = True) -> Run:
    """Feed a scenario through the processor frame by frame, as the stream's thread does."""
    events: list = []
    processor = AudioProcessor(settings, events.append)
    resampler = soxr.ResampleStream(PLAYBACK_RATE, MIC_RATE, 1, dtype="float32")
    n = scene.mic_16k.size // MIC_FRAME
    clean = np.zeros(n * MIC_FRAME, np.float32)
    speech = np.zeros(n, bool)
    cpu = []
    emitted = 0  # far-end samples out of the resampler: their count times them

    def feed_far_end(frame: int) -> None:
        nonlocal emitted
        far24 = scene.far_end_24k[frame * FAR_FRAME : (frame + 1) * FAR_FRAME]
        chunk = resampler.resample_chunk(far24)
        processor.push_far_end(chunk, emitted / MIC_RATE)
        emitted += chunk.size

    if playing:
        processor.playback_started(0.0)
        for ahead in range(OUTPUT_LEAD_FRAMES):
            feed_far_end(ahead)
    for i in range(n):
        t = i * MIC_FRAME / MIC_RATE
        mic = scene.mic_16k[i * MIC_FRAME : (i + 1) * MIC_FRAME]
        start = time.perf_counter()
        if playing:
            feed_far_end(i + OUTPUT_LEAD_FRAMES)
        clean[i * MIC_FRAME : (i + 1) * MIC_FRAME] = processor.process(mic, t)
        cpu.append(time.perf_counter() - start)
        speech[i] = processor.user_speech
    bargeins = [e for e in events if isinstance(e, BargeIn)]
    return Run(clean, speech, bargeins, processor, cpu)


def echo_alone(scene):
    """The single-talk scene without voices in its noise: a babble condition's background
    talkers are people speaking, which a barge-in detector rightly hears; the floor on false
    barge-ins is about the assistant's own echo (stationary noise stays in)."""
    import dataclasses

    if scene.condition.noise_kind != "babble":
        return scene
    noise = np.zeros_like(scene.noise_16k)
    return dataclasses.replace(scene, mic_16k=scene.mic_16k - scene.noise_16k, noise_16k=noise)


def erle_db(scene, run: Run, noise: np.ndarray | None = None) -> float:
    """``noise``: the scene's noise as the backend passes it (``passed_alone``); by default
    the noise as it is."""
    start = int(CONVERGED_S * MIC_RATE)
    noise = scene.noise_16k if noise is None else noise
    end = min(run.clean.size, noise.size)
    frames = np.repeat(scene.far_active, MIC_FRAME)[start:end]
    echo = scene.echo_16k[start:end][frames]
    residual = (run.clean[start:end] - noise[start:end])[frames]
    return float(10 * np.log10(np.dot(echo, echo) / max(np.dot(residual, residual), 1e-12)))


def si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    alpha = np.dot(estimate, reference) / max(np.dot(reference, reference), 1e-12)
    target = alpha * reference
    noise = estimate - target
    return float(10 * np.log10(np.dot(target, target) / max(np.dot(noise, noise), 1e-12)))


def si_sdr_gain(scene, run: Run, near: np.ndarray | None = None) -> float:
    """``near``: the near end as the backend passes it (``passed_alone``); by default the
    near end as it is."""
    start = int(CONVERGED_S * MIC_RATE)
    passed = scene.near_16k if near is None else near
    end = min(run.clean.size, passed.size)
    active = np.repeat(scene.near_active, MIC_FRAME)[start:end]
    reference = scene.near_16k[start:end][active]
    mic = scene.mic_16k[start:end][active]
    return si_sdr(run.clean[start:end][active], passed[start:end][active]) - si_sdr(mic, reference)


def onset_latencies(scene, run: Run) -> list[float]:
    """Per near-end onset, the latency of the first barge-in within 2 s (inf: missed)."""
    out = []
    for onset in scene.near_onsets:
        hits = [b.time - onset for b in run.bargeins if 0 <= b.time - onset <= 2.0]
        out.append(min(hits) if hits else np.inf)
    return out


def latencies(scene, run: Run) -> tuple[list[float], int]:
    """The latencies of the onsets that were caught, and how many were missed."""
    all_onsets = onset_latencies(scene, run)
    return [x for x in all_onsets if np.isfinite(x)], sum(np.isinf(all_onsets))


def installed_backends() -> tuple[str, ...]:
    from app.audio.aec import backend_installed

    return tuple(b for b in AEC_BACKENDS if b != "auto" and backend_installed(b))


def bench_audio(
    single_s: float = 75.0,
    double_s: float = 30.0,
    near_s: float = 20.0,
    seeds: int = 3,
    backends: tuple[str, ...] | None = None,
    say=print,
):
    """Every condition of app.bench.simulation, for ``seeds`` different scripts, with each of
    ``backends`` (default: every installed one): per seed 8 x 75 s = 10 simulated minutes
    of echo alone, 8 x 30 s of double talk and 8 x 20 s of the user alone. Barge-in latency
    percentiles are over the onsets after the canceller's first 3 s (as ERLE and SI-SDR
    are); the earlier ones are counted on their own. After each backend's ALL row come the
    UNSEEN_CONDITIONS (a clipping loudspeaker, clock drift), marked "(unseen)" and kept out
    of ALL: the tuning never saw them. Returns a benchmarks.Table."""
    import datetime as dt

    from app.audio.aec import resolve_backend
    from app.bench.record import Table, machine_name

    backends = backends or installed_backends()
    seconds = (single_s, double_s, near_s)
    rows = []
    for backend in backends:
        resolve_backend(backend)  # a clear error if it is not installed
        settings = AudioSettings(aec_backend=backend)
        totals = _Tally()
        for cond in CONDITIONS:
            tally = _Tally()
            _measure(cond, settings, seeds, seconds, (tally, totals))
            rows.append((backend, *tally.row(cond.name)))
            say(" | ".join(rows[-1]))
        rows.append((backend, *totals.row("ALL")))
        for cond in UNSEEN_CONDITIONS:
            tally = _Tally()
            _measure(cond, settings, seeds, seconds, (tally,))
            rows.append((backend, *tally.row(f"{cond.name} (unseen)")))
            say(" | ".join(rows[-1]))
    stamp = (dt.date.today().isoformat(), machine_name("cpu"), f"{seeds}")
    columns = (
        "date",
        "machine",
        "seeds",
        "echo canceller",
        "condition",
        "ERLE dB (median)",
        "near SI-SDRi dB",
        "barge-in p50/p90 ms",
        "missed",
        "first 3 s caught",
        "false barge-ins",
        "VAD acc",
        "CPU ms/frame",
    )
    title = "## Audio path (AEC, VAD, barge-in), simulated rooms"
    key = ("date", "machine", "seeds", "echo canceller", "condition")
    return Table(title, columns, [(*stamp, *r) for r in rows], key)


def _measure(cond, settings: AudioSettings, seeds: int, seconds, tallies) -> None:
    """One condition's scenes for every seed, through the settings' backend, into tallies."""
    single_s, double_s, near_s = seconds
    for seed in range(seeds):
        single = echo_alone(make_scenario(cond, "single_talk", single_s, seed))
        double = make_scenario(cond, "double_talk", double_s, seed)
        near = make_scenario(cond, "near_only", near_s, seed)
        runs = (run_scene(single, settings), run_scene(double, settings),
                run_scene(near, settings, playing=False))  # fmt: skip
        passed = (passed_alone(single.noise_16k, settings),
                  passed_alone(double.near_16k, settings))  # fmt: skip
        for tally in tallies:
            tally.add(single, double, near, runs, passed)


@dataclass
class _Tally:
    erle: list[float] = field(default_factory=list)
    sdr: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)  # after convergence; misses are inf
    early: list[float] = field(default_factory=list)
    false: int = 0
    minutes: float = 0.0
    vad_right: int = 0
    vad_frames: int = 0
    cpu: list[float] = field(default_factory=list)

    def add(self, single, double, near, runs: tuple[Run, Run, Run], passed) -> None:
        s, d, n = runs
        noise, near_end = passed
        self.erle.append(erle_db(single, s, noise))
        self.sdr.append(si_sdr_gain(double, d, near_end))
        for onset, first in zip(double.near_onsets, onset_latencies(double, d), strict=True):
            (self.latency if onset >= CONVERGED_S else self.early).append(first)
        self.false += len(s.bargeins)
        self.minutes += single.mic_16k.size / MIC_RATE / 60
        frames = min(n.user_speech.size, near.near_active.size)
        self.vad_frames += frames
        self.vad_right += int(np.sum(n.user_speech[:frames] == near.near_active[:frames]))
        self.cpu += s.cpu_s + d.cpu_s + n.cpu_s

    def row(self, name: str) -> tuple[str, ...]:
        ms = np.array(self.latency) * 1000
        if ms.size:
            # "higher": an observed latency, never an interpolation (which inf would poison)
            p50, p90 = (np.percentile(ms, q, method="higher") for q in (50, 90))
            latency = f"{p50:.0f}/{p90:.0f}"
        else:
            latency = "n/a (no onset after 3 s)"
        caught = sum(np.isfinite(self.early))
        return (
            name,
            f"{np.median(self.erle):.1f}" if self.erle else "n/a",
            f"{np.median(self.sdr):+.1f}" if self.sdr else "n/a",
            latency,
            f"{int(np.isinf(ms).sum())} of {ms.size}",
            f"{caught} of {len(self.early)}",
            f"{self.false} in {self.minutes:.1f} min",
            f"{self.vad_right / max(self.vad_frames, 1):.1%}",
            f"{1000 * np.mean(self.cpu):.3f}",
        )
