"""The audio thread's work on each 10 ms microphone frame.

    mic frame (16 kHz) + far end played at the same moment (FarEndBuffer, timestamps; a
    delay check every 3 s of playback corrects a misreported latency, and its lags fitted
    against time give the drift between the two devices' clocks, which the far end's
    reading then follows between samples)
      ─► echo canceller ─► clean frame ─► level meter
                                     ├─► VAD (webrtcvad, start / hang-over / padding)
                                     │     ─► SpeechStarted / SpeechEnded
                                     └─► double-talk gate ─► BargeInDetector
                                           ─► BargeIn / FalseBargeIn

The double-talk gate keeps the assistant's residual echo from interrupting it. While echo
may be present, a frame counts as the user's speech only if all of these hold:
- the VAD says speech, and the frame is loud (above MIN_SPEECH_DBFS and ABOVE_NOISE_DB over
  the tracked noise floor, which never sits below the quietest 5 % of the last 3 s);
- in a 32 ms spectrum (fine enough to separate two voices' harmonics), most of its power is
  more than noise and residual echo can explain: the per-bin noise floor, and the echo
  estimate (the mic as the canceller passes it, minus the clean frame) held in a room-like
  decaying envelope, lowered by the ERLE learned per bin on every playing frame that is not
  the user's, plus a 3 dB margin. Until the canceller's worst moments (the whole band's
  ERLE, tracked fast down and slowly up) reach CONVERGED_DB, the power test takes the whole
  microphone as the echo estimate;
- its log spectrum does not correlate with the canceller's echo envelope
  (SHAPE_CORRELATION_MAX): residue keeps the echo's spectral shape even when the canceller
  briefly does worse than it learned, while another voice does not.
A barge-in then needs ``bargein_min_speech_ms`` of such frames filling SPEECH_DENSITY of the window.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import numpy as np
import webrtcvad

from app.audio.aec import EchoCanceller, FarEndBuffer, estimate_delay_fine, make_canceller
from app.audio.events import (
    MIC_RATE,
    AudioEvent,
    AudioSettings,
    BargeIn,
    BargeInConfirmed,
    FalseBargeIn,
    Level,
    SpeechEnded,
    SpeechStarted,
)

SILENT_DB = -100.0
FAR_ACTIVE_DB = -60.0  # far-end frames above this level are playing something
MIN_SPEECH_DBFS = -55.0  # quieter than this is no one talking to the assistant
ABOVE_NOISE_DB = 6.0  # speech stands this far above the tracked noise floor
NOISE_RISE_DB_PER_FRAME = 0.02  # the floor follows rising noise at 2 dB per second
# ... and never sits below the quietest 5 % of the last 3 s: a single deep dip (a device's
# first frames, a lull in the chatter of a meeting room) would otherwise hold it down for as
# long as it takes to rise back at 2 dB per second, and background talkers would count as loud
NOISE_WINDOW_FRAMES = 300
NOISE_PERCENTILE = 5.0
BRIDGE_FRAMES = 4  # gaps in the user's speech up to this many frames do not break it
SPEECH_DENSITY = 0.7  # share of user-speech frames in the last min_speech needed to interrupt
ERLE_RISE_RATE, ERLE_FALL_RATE = 0.1, 0.02  # per single-talk frame, in the dB domain
# the worst moments' ERLE (the whole band's, per frame) is tracked the other way round: it
# decides when the canceller's echo estimate is trusted at all
WORST_FALL_RATE, WORST_RISE_RATE = 0.1, 0.02
SPECTRUM_WINDOW = 512  # samples (32 ms) analysed by the double-talk gate
SHAPE_BAND = (4, 128)  # bins 125 Hz .. 4 kHz of the 512-point spectrum
# log-spectral correlation of the clean frame with the echo envelope above which it is
# residue: measured on the simulations, residue 0.61-0.81 (10th-90th percentile), the
# user's voice during double talk 0.04-0.60 (median 0.36)
SHAPE_CORRELATION_MAX = 0.62
NO_ECHO_FRAMES = 50  # loud playing frames with a quiet microphone that show no echo returns
FAR_LOUD_DB = -40.0  # far-end frames this loud would make an audible echo through a speaker
NO_ECHO_COUPLING_DB = -45.0  # mic level under the far end's by more than this: no echo heard
ECHO_DECAY_DB_PER_FRAME = 0.3  # residual echo's assumed decay: 30 dB per second (slow room)


def _power(x: np.ndarray) -> float:
    return float(np.dot(x, x)) / max(x.size, 1)


def level_db(x: np.ndarray) -> float:
    power = _power(x)
    return 10 * np.log10(power) if power > 1e-10 else SILENT_DB


class VoiceActivity:
    """webrtcvad frame decisions turned into utterances with start and end times.

    An utterance starts after ``vad_start_ms`` of speech, back-dated by ``vad_padding_ms``
    (so a consumer keeps the soft start of the first word), and ends after
    ``vad_hangover_ms`` of silence.
    """

    def __init__(self, settings: AudioSettings, frame_s: float) -> None:
        self.vad = webrtcvad.Vad(settings.vad_aggressiveness)
        self.frame_s = frame_s
        self.padding = settings.vad_padding_ms / 1000  # an utterance starts this much earlier
        self.start_frames = max(1, round(settings.vad_start_ms / 1000 / frame_s))
        self.hang_frames = max(1, round(settings.vad_hangover_ms / 1000 / frame_s))
        self.recent: collections.deque[tuple[float, bool]] = collections.deque(
            maxlen=self.start_frames
        )
        self.in_speech = False
        self.started = 0.0
        self.silent_run = 0
        self.last_speech = 0.0
        self.last_end = 0.0  # end of the previous utterance

    def is_speech(self, frame: np.ndarray) -> bool:
        pcm = (np.clip(frame, -1.0, 32767 / 32768) * 32768).astype("<i2").tobytes()
        return self.vad.is_speech(pcm, MIC_RATE)

    def update(self, speech: bool, time: float) -> list[AudioEvent]:
        """One frame's (gated) decision -> utterance events."""
        self.recent.append((time, speech))
        if speech:
            self.last_speech = time
        if not self.in_speech:
            if len(self.recent) == self.start_frames and all(s for _, s in self.recent):
                # the padding keeps the soft start of a word, never the previous utterance
                start = max(self.recent[0][0] - self.padding, self.last_end)
                self.in_speech, self.started, self.silent_run = True, start, 0
                return [SpeechStarted(self.started)]
            return []
        self.silent_run = 0 if speech else self.silent_run + 1
        if self.silent_run >= self.hang_frames:
            self.in_speech = False
            end = self.last_end = self.last_speech + self.frame_s
            return [SpeechEnded(end, end - self.started)]
        return []


class BargeInDetector:
    """While the assistant plays, sustained user speech interrupts it.

    Nothing counts during the warm-up after playback starts. User speech must last
    ``min_speech`` (gaps of up to BRIDGE_FRAMES frames bridged) and fill at least
    SPEECH_DENSITY of its last ``min_speech``: short dropouts in real speech pass, scattered
    blips of residual echo do not. After a barge-in, if the user says nothing more within
    ``false_after``, a FalseBargeIn tells the app it may resume playback; if they did, a
    BargeInConfirmed tells it the reply is over.
    """

    def __init__(self, settings: AudioSettings, frame_s: float) -> None:
        self.frame_s = frame_s
        self.warmup = settings.bargein_warmup_ms / 1000
        self.min_speech = settings.bargein_min_speech_ms / 1000
        self.false_after = settings.bargein_false_ms / 1000
        self.speaking = False
        self.armed_at = 0.0
        self.onset: float | None = None
        self.gap = 0
        self.fired_at: float | None = None
        self.speech_after = 0.0  # user speech seen after the last barge-in
        self.heard = False  # this stretch of user speech already interrupted
        self.recent: collections.deque[bool] = collections.deque(
            maxlen=max(1, round(self.min_speech / frame_s))
        )

    def playback_started(self, time: float) -> None:
        if not self.speaking:
            self.speaking, self.armed_at = True, time + self.warmup
            self.onset, self.gap = None, 0

    def playback_stopped(self, time: float) -> None:
        self.speaking = False
        self.onset = None

    def update(self, user_speech: bool, time: float) -> list[AudioEvent]:
        events: list[AudioEvent] = []
        if self.fired_at is not None:
            if time > self.fired_at and user_speech:
                self.speech_after += self.frame_s
            if time - self.fired_at >= self.false_after:
                if self.speech_after < 2 * self.frame_s:
                    events.append(FalseBargeIn(time))
                else:
                    events.append(BargeInConfirmed(time))
                self.fired_at = None
        if not self.speaking or time < self.armed_at:
            return events
        self.recent.append(user_speech)
        if user_speech:
            if self.onset is None and not self.heard:
                self.onset = time
            self.gap = 0
        else:
            self.gap += 1
            if self.gap > BRIDGE_FRAMES:  # the user's stretch of speech is over
                self.onset, self.heard = None, False
        sustained = (
            self.onset is not None
            and time + self.frame_s - self.onset >= self.min_speech - 1e-9
            and sum(self.recent) >= SPEECH_DENSITY * self.recent.maxlen
        )
        if sustained and self.fired_at is None:
            events.append(BargeIn(time + self.frame_s, self.onset))
            self.fired_at, self.speech_after, self.onset = time, 0.0, None
            self.heard = True  # one barge-in per stretch of user speech
        return events


class AudioProcessor:
    """Echo cancellation, VAD, level and barge-in for one microphone (the stream's sink)."""

    ERLE_MARGIN_DB = 3.0  # the clean frame must beat the possible residual echo by this much
    CONVERGED_DB = 10.0  # worst-moment ERLE from which the canceller's echo estimate is trusted
    NEAR_SHARE = 0.5  # share of the clean frame's power the residual echo must not explain
    DELAY_CHECK_S = 3.0  # cross-correlate this much audio to confirm the alignment
    # clock drift: the echo's lag measured by the delay checks, fitted against time
    SKEW_CHECKS = 8  # the latest strong checks fitted
    SKEW_MIN_CHECKS, SKEW_MIN_SPAN_S = 3, 6.0  # a fit needs this many, this far apart
    SKEW_MIN_PPM = 20.0  # smaller drifts are left to the canceller's own tracking
    SKEW_MAX_ERROR = 2.5  # samples: the lags' scatter around the fitted line, at most
    SKEW_RESET_PPM = 10.0  # a skew estimate this far from the last one restarts the canceller

    def __init__(
        self,
        settings: AudioSettings | None = None,
        on_event: Callable[[AudioEvent], None] | None = None,
        canceller: EchoCanceller | None = None,
    ) -> None:
        self.settings = settings = settings or AudioSettings()
        self.on_event = on_event or (lambda event: None)
        self.canceller = canceller if canceller is not None else make_canceller(settings)
        self.frame = self.canceller.frame
        frame_s = self.frame / MIC_RATE
        self.far_end = FarEndBuffer()
        self.vad = VoiceActivity(settings, frame_s)
        self.bargein = BargeInDetector(settings, frame_s)
        self.erle_db = 0.0  # measured echo return loss enhancement, smoothed
        # headphones (or a muted speaker): the microphone stays quiet while the assistant
        # plays, so there is no echo to learn from and none to guard against
        self.no_echo = False
        self._quiet_far = 0  # playing frames with a quiet microphone since echo was last heard
        self.extra_delay = 0.0  # seconds added to the timestamp alignment by the delay check
        # the microphone's clock against the loudspeaker's (1e-4: 100 ppm fast), estimated
        # from the delay checks; the far end is read this much later per sample, so the
        # canceller sees a still echo path
        self.skew = 0.0
        self.drift = 0.0  # samples the far end is read earlier by, accumulated from skew
        self._lags: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=self.SKEW_CHECKS
        )  # (time, echo lag in samples on the uncorrected timeline)
        self.measured_delay_ms: float | None = None
        self.user_speech = False
        self.echo_until = -1.0  # stream time until which echo of past playback may arrive
        self.noise_db = MIN_SPEECH_DBFS  # the clean signal's floor, tracked
        self._levels: collections.deque[float] = collections.deque(maxlen=NOISE_WINDOW_FRAMES)
        # 32 ms analysis windows over the latest frames: 31 Hz bins resolve the harmonics of
        # two voices with different pitch, which the gate needs to tell them apart
        self._window = np.hanning(SPECTRUM_WINDOW).astype(np.float32)
        self._clean_hist = np.zeros(SPECTRUM_WINDOW, np.float32)
        self._echo_hist = np.zeros(SPECTRUM_WINDOW, np.float32)
        self._mic_hist = np.zeros(SPECTRUM_WINDOW, np.float32)
        bins = SPECTRUM_WINDOW // 2 + 1
        self._echo_envelope = np.zeros(bins)
        self._decay = 10 ** (-ECHO_DECAY_DB_PER_FRAME / 10)
        self.erle_bins = np.zeros(bins)  # dB, learned in single talk
        self.erle_worst_db = 0.0  # the whole band's ERLE at the canceller's worst moments
        self.noise_bins = np.full(bins, 1e-3)  # power per bin of the clean signal's floor
        self._noise_rise = 10 ** (NOISE_RISE_DB_PER_FRAME / 10)
        self._check: list[tuple[np.ndarray, np.ndarray]] = []
        self._check_start = (0.0, 0.0)  # time and drift at the current check's first frame

    # the stream's FrameSink interface
    def push_far_end(self, samples16k: np.ndarray, dac_time: float) -> None:
        self.far_end.push(samples16k.astype(np.float32, copy=False), dac_time)

    def playback_started(self, time: float) -> None:
        self.bargein.playback_started(time)

    def playback_stopped(self, time: float) -> None:
        self.bargein.playback_stopped(time)

    def process(self, mic16k: np.ndarray, adc_time: float) -> np.ndarray:
        """mic16k : (frame,) float32 captured from ``adc_time`` -> clean (frame,) float32."""
        far = self.far_end.read(adc_time - self.extra_delay, self.frame, self.drift)
        self.drift += self.skew * self.frame
        clean = self.canceller.process(mic16k, far)
        passed = self.canceller.passed  # the mic as the canceller passes it, echo left in
        far_db, clean_db = level_db(far), level_db(clean)
        # webrtcvad judges the spectrum's shape, not loudness: a -70 dBFS echo residue reads
        # as speech. Speech must also be loud, absolutely and above the noise floor.
        self._track_noise(clean_db)
        loud = clean_db > max(MIN_SPEECH_DBFS, self.noise_db + ABOVE_NOISE_DB)
        raw_speech = loud and self.vad.is_speech(clean)
        far_active = far_db > FAR_ACTIVE_DB
        if far_active:
            self.echo_until = adc_time + self.settings.aec_tail_ms / 1000  # echo may still come
        clean_spec, echo_spec = self._spectra(passed, clean)
        canceller_echo = echo_spec
        if self.erle_worst_db < self.CONVERGED_DB:  # not converged: the whole mic may be echo
            self._mic_hist[: -self.frame] = self._mic_hist[self.frame :]
            self._mic_hist[-self.frame :] = passed
            echo_spec = np.abs(np.fft.rfft(self._mic_hist * self._window)) ** 2
        if far_active:
            self._learn_no_echo(level_db(mic16k), far_db, raw_speech)
        echo_possible = adc_time < self.echo_until and not self.no_echo
        user_speech = raw_speech and (
            not echo_possible or self._beyond_residue(clean_spec, echo_spec)
        )
        if far_active and not user_speech:
            # every playing frame that is not the user's teaches the canceller's ERLE; while
            # it converges the residue is loud and speech-like, and learning only where the
            # VAD hears no speech kept the gate closed to the user for the first seconds
            self._learn_erle(clean_spec, canceller_echo)
        self.user_speech = user_speech  # the last frame's decision, for meters and tests
        events: list[AudioEvent] = [Level(adc_time, clean_db)]
        events += self.vad.update(user_speech, adc_time)
        barge = self.bargein.update(user_speech, adc_time)
        if self.no_echo and any(isinstance(e, FalseBargeIn) for e in barge):
            # the "speech" went when playback stopped: it was echo after all (speakers
            # came on); guard against it again
            self.no_echo, self._quiet_far = False, 0
        events += barge
        if far_active:
            self._confirm_delay(mic16k, far, adc_time)
        for event in events:
            self.on_event(event)
        return clean

    def _track_noise(self, clean_db: float) -> None:
        """The clean signal's floor: follows it down at once and up at 2 dB per second, but
        never below the quietest NOISE_PERCENTILE of the last NOISE_WINDOW_FRAMES."""
        self._levels.append(clean_db)
        tracked = clean_db if clean_db < self.noise_db else self.noise_db + NOISE_RISE_DB_PER_FRAME
        self.noise_db = max(tracked, float(np.percentile(self._levels, NOISE_PERCENTILE)))

    def _restart_canceller(self) -> None:
        """A fresh canceller, and the gate forgets the ERLE it learned from the old one
        (until the new one converges, the whole microphone may be echo)."""
        self.canceller.reset()
        self.erle_bins[:] = 0.0
        self.erle_db = self.erle_worst_db = 0.0

    def _learn_skew(self, time: float, lag: float) -> None:
        """Fit the latest checks' echo lags (uncorrected samples) against time: a steady
        slope is the clocks' skew, which the far end's reading then follows."""
        self._lags.append((time, lag))
        if len(self._lags) < self.SKEW_MIN_CHECKS:
            return
        times, lags = (np.array(v, np.float64) for v in zip(*self._lags, strict=True))
        if times[-1] - times[0] < self.SKEW_MIN_SPAN_S:
            return
        slope, offset = np.polyfit(times, lags, 1)  # samples per second
        error = float(np.std(lags - (slope * times + offset)))
        skew = slope / MIC_RATE
        moved = abs(slope) * (times[-1] - times[0])  # samples over the fitted span
        if error <= self.SKEW_MAX_ERROR and moved >= 2.0 and abs(skew) * 1e6 >= self.SKEW_MIN_PPM:
            if abs(skew - self.skew) * 1e6 > self.SKEW_RESET_PPM:
                # the filter learned a smeared, sliding echo path: it converges faster on
                # the now still one from scratch than by unlearning
                self._restart_canceller()
            self.skew = float(skew)

    def _spectra(self, mic: np.ndarray, clean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Power spectra of the clean frame and of the echo estimate; the estimate's
        envelope is updated too (see ``_beyond_residue``)."""
        n = self.frame
        for history, latest in ((self._clean_hist, clean), (self._echo_hist, mic - clean)):
            history[:-n] = history[n:]
            history[-n:] = latest
        clean_spec = np.abs(np.fft.rfft(self._clean_hist * self._window)) ** 2
        echo_spec = np.abs(np.fft.rfft(self._echo_hist * self._window)) ** 2
        self._echo_envelope = np.maximum(echo_spec, self._echo_envelope * self._decay)
        # each bin's noise floor: follows the clean power down at once, up at 2 dB per second
        self.noise_bins = np.minimum(clean_spec, self.noise_bins * self._noise_rise)
        return clean_spec, echo_spec

    def _learn_no_echo(self, mic_db: float, far_db: float, raw_speech: bool) -> None:
        """While the far end plays loud: a microphone that stays at the noise floor, far
        under it, for NO_ECHO_FRAMES says no echo comes back (headphones), and the user's
        speech needs no double-talk proof. A loud frame that is not speech, before then,
        starts the count again. Once learned, it is unlearned by evidence of echo: a
        barge-in that proves false (the sound went when playback stopped), or the far end
        found in the microphone by the delay check."""
        if far_db <= FAR_LOUD_DB or self.no_echo:
            return
        quiet = mic_db <= max(MIN_SPEECH_DBFS, self.noise_db + ABOVE_NOISE_DB)
        if not quiet:
            if not raw_speech:
                self._quiet_far = 0  # a loud sound that is not the user: maybe echo
        elif mic_db - far_db < NO_ECHO_COUPLING_DB:  # (a far end just loud says little)
            self._quiet_far += 1
            self.no_echo = self._quiet_far >= NO_ECHO_FRAMES

    def _learn_erle(self, clean_spec: np.ndarray, echo_spec: np.ndarray) -> None:
        """A playing frame that is not the user's: how far the canceller brings the echo
        down, per frequency bin (the clean frame is residual echo plus noise; the noise
        floor is not echo)."""
        if echo_spec.sum() < 1e-7 * echo_spec.size:
            return
        # where the residue shows above the noise it is measured. Where it hides under the
        # noise, all we know is a lower bound: the gate scales the echo *envelope* by the
        # ERLE, and the residue is under the noise, so envelope over noise bounds the ratio
        # the gate needs (the instantaneous estimate over the noise, learned before, bounded
        # it far lower in noisy rooms and left the gate closed to the user there)
        measurable = clean_spec > 2.0 * self.noise_bins
        envelope = self._echo_envelope  # (already holds this frame's estimate: _spectra)
        ratio = np.where(
            measurable,
            np.maximum(echo_spec, 1e-20) / np.maximum(clean_spec - self.noise_bins, 1e-20),
            np.maximum(envelope, 1e-20) / np.maximum(self.noise_bins, 1e-20),
        )
        erle = np.clip(10 * np.log10(ratio), 0.0, 40.0)
        # gains are learned fast (the canceller converges quickly), losses slowly (a dip in
        # the residual's level is not a better canceller); tracking the worst moments
        # instead leaves the gate closed to real speech
        rate = np.where(erle > self.erle_bins, ERLE_RISE_RATE, ERLE_FALL_RATE)
        self.erle_bins += rate * (erle - self.erle_bins)
        self.erle_db = float(np.median(self.erle_bins))
        # the canceller is trusted once even its bad moments bring the echo down by
        # CONVERGED_DB: a loudspeaker driven into distortion leaves bursts of residue that
        # no linear filter removes, and the per-bin figures (which learn the good moments)
        # would open the gate to them
        residue = np.maximum(clean_spec - self.noise_bins, 0.0).sum()
        frame_erle = 10 * np.log10(max(float(echo_spec.sum()), 1e-20) / max(residue, 1e-20))
        frame_erle = min(max(frame_erle, 0.0), 40.0)
        rate = WORST_FALL_RATE if frame_erle < self.erle_worst_db else WORST_RISE_RATE
        self.erle_worst_db += rate * (frame_erle - self.erle_worst_db)

    def _beyond_residue(self, clean_spec: np.ndarray, echo_spec: np.ndarray) -> bool:
        """Whether residual echo cannot explain the clean frame: the clean power above the
        noise floor and the echo envelope lowered by each bin's ERLE (plus a margin) is most
        of the frame's, and the frame does not have the echo's spectral shape.

        ``echo_spec`` is the echo estimate the power test scales (until converged, the
        whole microphone). The shape is compared with the envelope of the canceller's own
        estimate (mic minus clean), which never holds the user's voice: it holds each bin's
        peak of that estimate and lets it decay as a room does (residual echo rings on
        after the echo estimate has dropped; ``_spectra`` keeps it).
        """
        envelope = self._echo_envelope
        echo_spec = np.maximum(echo_spec, envelope)
        scale = 10 ** ((self.ERLE_MARGIN_DB - self.erle_bins) / 10)
        unexplained = np.maximum(clean_spec - self.noise_bins - scale * echo_spec, 0.0).sum()
        if unexplained <= self.NEAR_SHARE * clean_spec.sum():
            return False
        # when the canceller briefly does worse than learned (or, with a loudspeaker driven
        # into distortion, never does well), the residue is louder than expected but keeps
        # the echo's spectral shape; another voice does not
        speech_band = slice(SHAPE_BAND[0], SHAPE_BAND[1])
        shape = np.corrcoef(
            np.log(clean_spec[speech_band] + 1e-12), np.log(envelope[speech_band] + 1e-12)
        )[0, 1]
        return bool(shape < SHAPE_CORRELATION_MAX)

    def _confirm_delay(self, mic: np.ndarray, far: np.ndarray, time: float) -> None:
        """Every few seconds of playback, cross-correlate mic and far end: a lag beyond
        what the canceller's filter covers means the device misreports its latency, and a
        lag that grows or shrinks steadily means the two devices' clocks drift apart."""
        if not self._check:
            self._check_start = (time, self.drift)
        self._check.append((mic.copy(), far.copy()))
        if len(self._check) * self.frame < self.DELAY_CHECK_S * MIC_RATE:
            return
        mics = np.concatenate([m for m, _ in self._check])
        fars = np.concatenate([f for _, f in self._check])
        self._check.clear()
        tail = self.settings.aec_tail_ms * MIC_RATE // 1000
        fine, strength = estimate_delay_fine(fars, mics, max_lag=2 * tail)
        lag = round(fine)
        if strength < 0.1:
            return  # the echo is too weak or too unlike the far end to say
        if strength >= 0.3:
            self.no_echo, self._quiet_far = False, 0  # the far end is in the microphone
        # the lag is the window's average: it belongs to the window's middle, and so does
        # the drift that was taken out of it (at 100 ppm the end's is 2.4 samples more)
        start_time, start_drift = self._check_start
        middle = (start_time + time) / 2
        self._learn_skew(
            middle, fine + (start_drift + self.drift) / 2 + self.extra_delay * MIC_RATE
        )
        self.measured_delay_ms = 1000 * (lag / MIC_RATE + self.extra_delay)
        if lag > tail // 2:  # the echo arrives too late for the filter: shift the far end
            self.extra_delay += (lag - tail // 8) / MIC_RATE
            self._restart_canceller()
