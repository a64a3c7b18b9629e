"""The echo-canceller backends: WebRTC's AEC3 (LiveKit's APM) beside SpeexDSP, how one is
chosen, and the benchmark that compares them in one run."""

from __future__ import annotations

import numpy as np
import pytest

from app.audio import aec
from app.audio.aec import (
    NoEchoCanceller,
    SpeexEchoCanceller,
    WebRtcEchoCanceller,
    make_canceller,
    resolve_backend,
)
from app.audio.events import AudioSettings
from app.bench.audio import erle_db, latencies, passed_alone, run_scene, si_sdr_gain
from app.bench.simulation import condition, make_scenario
from minmo_core.errors import AudioError


def frames(canceller, near: np.ndarray, far: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The canceller over whole 10 ms frames: (clean, passed)."""
    clean, passed = [], []
    for i in range(0, near.size - 159, 160):
        clean.append(canceller.process(near[i : i + 160], far[i : i + 160]))
        passed.append(canceller.passed)
    return np.concatenate(clean), np.concatenate(passed)


def echo_path(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    far = (0.1 * rng.standard_normal(16000 * 6)).astype(np.float32)
    path = np.zeros(800)
    path[40], path[300] = 0.6, -0.2
    return far, np.convolve(far, path)[: far.size].astype(np.float32)


def test_webrtc_canceller_removes_an_echo_and_keeps_float32_frames() -> None:
    far, echo = echo_path(1)
    canceller = WebRtcEchoCanceller()
    clean, _ = frames(canceller, echo, far)
    assert clean.dtype == np.float32 and clean.size == echo.size
    late = slice(16000 * 2, None)
    erle = 10 * np.log10(np.dot(echo[late], echo[late]) / np.dot(clean[late], clean[late]))
    assert erle > 30.0
    fresh, _ = frames(WebRtcEchoCanceller(), echo[:8000], far[:8000])
    converged, _ = frames(canceller, echo[:8000], far[:8000])
    assert not np.array_equal(converged, fresh)
    canceller.reset()  # forgets the echo path: as a fresh canceller from then on
    again, _ = frames(canceller, echo[:8000], far[:8000])
    np.testing.assert_array_equal(again, fresh)


def test_webrtc_passed_is_the_microphone_as_the_module_treats_it_without_echo_removal() -> None:
    """The module turns the voice's phase (high-pass filter) and delays it (AEC3), so the
    echo it removed is ``passed - clean``, not ``mic - clean``: with no echo the two are
    the same frame, and with an echo their difference is that echo."""
    scene = make_scenario(condition("laptop_small_office"), "near_only", 8.0, seed=0)
    canceller = WebRtcEchoCanceller()
    clean, passed = frames(canceller, scene.mic_16k, np.zeros_like(scene.mic_16k))
    np.testing.assert_array_equal(clean, passed)
    raw = scene.mic_16k[: clean.size]
    assert np.dot(raw - clean, raw - clean) > 0.1 * np.dot(raw, raw)  # the mic is not passed
    far, echo = echo_path(2)
    clean, passed = frames(WebRtcEchoCanceller(), echo, far)
    removed, late = passed - clean, slice(16000 * 2, None)
    assert np.dot(removed[late], passed[late]) > 0.99 * np.dot(passed[late], passed[late])


def test_speex_and_no_canceller_pass_the_microphone_as_it_is() -> None:
    far, echo = echo_path(3)
    for canceller in (SpeexEchoCanceller(160, 200), NoEchoCanceller(160)):
        _, passed = frames(canceller, echo, far)
        np.testing.assert_array_equal(passed, echo[: passed.size])


def test_webrtc_refuses_frames_that_are_not_10_ms() -> None:
    with pytest.raises(AudioError, match="10 ms frames: 320 samples at 16000 Hz is 20 ms"):
        WebRtcEchoCanceller(320)
    canceller = WebRtcEchoCanceller()
    with pytest.raises(AudioError, match="frames of 160 samples"):
        canceller.process(np.zeros(100, np.float32), np.zeros(100, np.float32))


def test_the_settings_choose_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(make_canceller(AudioSettings(aec_backend="webrtc")), WebRtcEchoCanceller)
    assert isinstance(make_canceller(AudioSettings(aec_backend="speex")), SpeexEchoCanceller)
    off = AudioSettings(echo_cancellation=False, aec_backend="webrtc")
    assert isinstance(make_canceller(off), NoEchoCanceller)
    monkeypatch.setattr(aec.sys, "platform", "linux")
    assert resolve_backend("auto") == "speex"
    monkeypatch.setattr(aec.sys, "platform", "win32")  # the Windows bundle carries SpeexDSP
    assert resolve_backend("auto") == "speex"
    with pytest.raises(AudioError, match="unknown echo canceller 'aec4'"):
        resolve_backend("aec4")


def test_auto_falls_back_to_the_installed_backend_and_names_a_missing_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without libspeexdsp, "auto" is WebRTC; asking for Speex by name says how to install
    it; with neither installed, the error says what to install or to switch off."""
    import sys

    monkeypatch.setattr(aec.sys, "platform", "linux")
    monkeypatch.setattr(aec.importlib.util, "find_spec", lambda name: None)  # no speexdsp
    monkeypatch.setattr(aec, "speex_library_candidates", lambda: [])  # and no libspeexdsp
    aec._speexdsp.cache_clear()
    try:
        assert resolve_backend("auto") == "webrtc"
        assert isinstance(make_canceller(AudioSettings()), WebRtcEchoCanceller)
        with pytest.raises(AudioError, match="SpeexDSP is not installed: `pip install speexdsp`"):
            make_canceller(AudioSettings(aec_backend="speex"))
        monkeypatch.setitem(sys.modules, "livekit", None)  # `from livekit import rtc` fails
        aec._livekit_rtc.cache_clear()
        with pytest.raises(AudioError, match="no echo canceller is installed: `pip install spe"):
            resolve_backend("auto")
        with pytest.raises(AudioError, match="comes with LiveKit's package: `pip install livek"):
            make_canceller(AudioSettings(aec_backend="webrtc"))
    finally:
        aec._speexdsp.cache_clear()
        aec._livekit_rtc.cache_clear()


def speex_output(speex, near: np.ndarray, far: np.ndarray) -> np.ndarray:
    """A SpeexDSP module's (or library's) echo canceller over whole 10 ms frames."""
    state = speex.EchoCanceller_create(160, 3200, 16000)
    out = [
        speex.EchoCanceller_process(
            state, aec._pcm16(near[i : i + 160]), aec._pcm16(far[i : i + 160])
        )
        for i in range(0, near.size - 159, 160)
    ]
    speex.delete_EchoCanceller(state)
    return np.frombuffer(b"".join(out), "<i2")


def test_the_library_through_ctypes_cancels_exactly_as_the_speexdsp_package_does() -> None:
    """Where the speexdsp package is missing (Windows), the canceller calls libspeexdsp
    through ctypes: on the same library, every output sample equals the package's."""
    far, echo = echo_path(3)
    near = echo.copy()
    near[16000 * 4 : 16000 * 5] += 0.1 * np.sin(np.arange(16000) * 0.07).astype(np.float32)
    system = next(p for p in aec.speex_library_candidates() if "native" not in p)
    library = aec.SpeexLibrary(system)
    ours = speex_output(library, near, far)
    np.testing.assert_array_equal(ours, speex_output(aec._speexdsp_extension(), near, far))
    late = slice(16000 * 2, 16000 * 4)  # converged, before the voice
    assert 10 * np.log10(np.mean(near[late] ** 2) / np.mean((ours[late] / 32768) ** 2)) > 20
    state = library.EchoCanceller_create(160, 3200, 16000)
    with pytest.raises(AudioError, match="frames of 160 samples"):
        library.EchoCanceller_process(state, bytes(300), bytes(320))
    library.delete_EchoCanceller(state)


def test_without_the_package_the_canceller_loads_the_first_library_that_opens(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    broken = tmp_path / "libspeexdsp.so"
    broken.write_bytes(b"not a library")  # a truncated download, say: skipped
    system = next(p for p in aec.speex_library_candidates() if "native" not in p)
    monkeypatch.setattr(aec.importlib.util, "find_spec", lambda name: None)  # no speexdsp
    monkeypatch.setattr(aec, "speex_library_candidates", lambda: [str(broken), system])
    aec._speexdsp.cache_clear()
    try:
        canceller = make_canceller(AudioSettings(aec_backend="speex"))
        assert isinstance(canceller._speex, aec.SpeexLibrary)
        assert canceller._speex.path == system
        far, echo = echo_path(4)
        clean, passed = frames(canceller, echo, far)
        np.testing.assert_array_equal(passed, echo[: passed.size])
        late = slice(16000 * 3, clean.size)
        assert 10 * np.log10(np.mean(echo[late] ** 2) / np.mean(clean[late] ** 2)) > 20
        canceller.reset()  # a fresh state from the same library
        assert canceller.process(echo[:160], far[:160]).dtype == np.float32
        assert aec.describe(canceller) == f"SpeexDSP ({system})"
        monkeypatch.setenv("MINMO_SPEEXDSP_LIBRARY", str(broken))  # named by the user
        aec._speexdsp.cache_clear()
        with pytest.raises(AudioError, match=r"MINMO_SPEEXDSP_LIBRARY=.*libspeexdsp.so cannot"):
            make_canceller(AudioSettings(aec_backend="speex"))
    finally:
        aec._speexdsp.cache_clear()


def test_with_webrtc_echo_alone_never_interrupts_and_the_user_does() -> None:
    """The whole audio path on WebRTC's AEC3 in a simulated room: the assistant's echo alone
    never interrupts it, and every time the user talks over it, it is interrupted."""
    settings = AudioSettings(aec_backend="webrtc")
    room = condition("laptop_small_office")
    single = make_scenario(room, "single_talk", 20.0, seed=3)
    run = run_scene(single, settings)
    assert run.bargeins == []
    assert erle_db(single, run, passed_alone(single.noise_16k, settings)) > 30.0
    double = make_scenario(room, "double_talk", 20.0, seed=3)
    run = run_scene(double, settings)
    found, missed = latencies(double, run)
    assert missed == 0 and len(found) >= 4
    assert si_sdr_gain(double, run, passed_alone(double.near_16k, settings)) > 0.0


def test_the_benchmark_compares_both_backends_in_one_table(monkeypatch) -> None:
    from app.bench import audio

    monkeypatch.setattr(audio, "CONDITIONS", (condition("laptop_small_office"),))
    monkeypatch.setattr(audio, "UNSEEN_CONDITIONS", (condition("laptop_clipping_speakers"),))
    table = audio.bench_audio(10.0, 10.0, 5.0, seeds=1, say=lambda line: None)
    backends = [row[table.columns.index("echo canceller")] for row in table.rows]
    names = [row[table.columns.index("condition")] for row in table.rows]
    assert backends == ["speex"] * 3 + ["webrtc"] * 3
    assert names == ["laptop_small_office", "ALL", "laptop_clipping_speakers (unseen)"] * 2
    assert "echo canceller" in table.key
