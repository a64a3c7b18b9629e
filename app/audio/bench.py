"""``minmo bench audio``: the audio path measured on simulated rooms (app.audio.simulation).

Per condition and in total:
- ERLE after convergence in single talk: echo energy over the residual echo left in the
  clean signal (clean minus the noise, which the canceller cannot and should not remove),
  on frames where the far end plays, after the first 3 s;
- near-end preservation in double talk: SI-SDR of the clean signal against the near-end
  speech at the microphone, minus that of the raw microphone signal;
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

from app.audio.events import MIC_FRAME, MIC_RATE, PLAYBACK_RATE, AudioSettings, BargeIn
from app.audio.processor import AudioProcessor

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


def erle_db(scene, run: Run) -> float:
    start = int(CONVERGED_S * MIC_RATE)
    frames = np.repeat(scene.far_active, MIC_FRAME)[start : run.clean.size]
    echo = scene.echo_16k[start : run.clean.size][frames]
    residual = (run.clean[start:] - scene.noise_16k[start : run.clean.size])[frames]
    return float(10 * np.log10(np.dot(echo, echo) / max(np.dot(residual, residual), 1e-12)))


def si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    alpha = np.dot(estimate, reference) / max(np.dot(reference, reference), 1e-12)
    target = alpha * reference
    noise = estimate - target
    return float(10 * np.log10(np.dot(target, target) / max(np.dot(noise, noise), 1e-12)))


def si_sdr_gain(scene, run: Run) -> float:
    start = int(CONVERGED_S * MIC_RATE)
    active = np.repeat(scene.near_active, MIC_FRAME)[start : run.clean.size]
    near = scene.near_16k[start : run.clean.size][active]
    mic = scene.mic_16k[start : run.clean.size][active]
    return si_sdr(run.clean[start:][active], near) - si_sdr(mic, near)


def latencies(scene, run: Run) -> tuple[list[float], int]:
    """Latency of the first barge-in after each onset (within 2 s), and the misses."""
    found, missed = [], 0
    for onset in scene.near_onsets:
        hits = [b.time - onset for b in run.bargeins if 0 <= b.time - onset <= 2.0]
        if hits:
            found.append(min(hits))
        else:
            missed += 1
    return found, missed


def vad_accuracy(scene, run: Run) -> float:
    n = min(run.user_speech.size, scene.near_active.size)
    return float(np.mean(run.user_speech[:n] == scene.near_active[:n]))


def bench_audio(
    single_s: float = 75.0, double_s: float = 30.0, near_s: float = 20.0, seed: int = 0
):
    """Every condition of app.audio.simulation: 8 x 75 s = 10 simulated minutes of echo only,
    8 x 30 s of double talk and 8 x 20 s of near end only. Returns a benchmarks.Table."""
    import datetime as dt

    from app.audio.simulation import CONDITIONS, make_scenario
    from minmo_core.benchmarks import Table, machine_name

    rows, all_erle, all_sdr, all_lat, all_cpu = [], [], [], [], []
    misses = false_total = 0
    echo_minutes = 0.0
    vad_frames = vad_right = 0
    for cond in CONDITIONS:
        single = echo_alone(make_scenario(cond, "single_talk", single_s, seed))
        double = make_scenario(cond, "double_talk", double_s, seed)
        near = make_scenario(cond, "near_only", near_s, seed)
        runs = {"single": run_scene(single), "double": run_scene(double)}
        runs["near"] = run_scene(near, playing=False)
        erle = erle_db(single, runs["single"])
        sdr = si_sdr_gain(double, runs["double"])
        lat, missed = latencies(double, runs["double"])
        false = len(runs["single"].bargeins)
        acc = vad_accuracy(near, runs["near"])
        cpu = [c for r in runs.values() for c in r.cpu_s]
        all_erle.append(erle)
        all_sdr.append(sdr)
        all_lat += lat
        all_cpu += cpu
        misses += missed
        false_total += false
        echo_minutes += single_s / 60
        n = min(runs["near"].user_speech.size, near.near_active.size)
        vad_frames += n
        vad_right += round(acc * n)
        rows.append(_row(cond.name, [erle], [sdr], lat, missed, false, single_s / 60, acc, cpu))
    total_acc = vad_right / max(vad_frames, 1)
    rows.append(
        _row(
            "ALL", all_erle, all_sdr, all_lat, misses, false_total, echo_minutes, total_acc, all_cpu
        )
    )
    stamp = (dt.date.today().isoformat(), machine_name(__import__("torch").device("cpu")))
    columns = (
        "date",
        "machine",
        "condition",
        "ERLE dB (median)",
        "near SI-SDRi dB",
        "barge-in p50/p90 ms",
        "missed",
        "false barge-ins",
        "VAD acc",
        "CPU ms/frame",
    )
    return Table(
        "## Audio path (AEC, VAD, barge-in), simulated rooms", columns, [(*stamp, *r) for r in rows]
    )


def _row(name, erle, sdr, lat, missed, false, minutes, acc, cpu) -> tuple[str, ...]:
    # a missed onset counts as an infinite latency: percentiles are over every onset
    lat_ms = np.array(lat + [np.inf] * missed) * 1000 if lat or missed else np.array([np.nan])
    return (
        name,
        f"{np.median(erle):.1f}",
        f"{np.median(sdr):+.1f}",
        # "higher": an observed latency, never an interpolation (which inf would poison)
        f"{np.percentile(lat_ms, 50, method='higher'):.0f}/"
        f"{np.percentile(lat_ms, 90, method='higher'):.0f}",
        str(missed),
        f"{false} in {minutes:.1f} min",
        f"{acc:.1%}",
        f"{1000 * np.mean(cpu):.3f}",
    )
